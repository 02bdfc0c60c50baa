"""Shape of a conversation and fast statistics of its last user message."""

from __future__ import annotations

import re

import numpy as np

from router.catalog import estimate_tokens
from router.conversation import Conversation

__all__ = ["CONV_NAMES", "STAT_NAMES", "byte_classes", "conversation_shape",
           "last_message_stats"]

# Code-like substrings; counted with str.count, a regex alternation costs 10x more.
_CODE_MARKS = ("def ", "class ", "import ", "return ", "function ", "const ", "#include",
               "=>", "==", "!=", "++", "&&", "||", "()", "{\n", ";\n", "</", "self.", "this.")
_LATEX = re.compile(r"\\[a-zA-Z]+|\$[^$\n]+\$")
_MATH_UNICODE = re.compile(r"[∑∫√π≤≥≠±×÷∞∂∇∈∀∃≈→⇒]")
_URL = re.compile(r"https?://\S+|www\.\S+")
_LIST_ITEM = re.compile(r"(?m)^[ \t]*(?:[-*•]|\d{1,3}[.)])[ \t]+\S")
_MC_OPTION = re.compile(r"([A-H])[.):][ \t]+\S")

CONV_NAMES = ("conv_n_messages", "conv_n_turns", "conv_has_system", "conv_system_chars",
               "conv_user_chars", "conv_assistant_chars", "conv_input_tokens")
STAT_NAMES = ("last_chars", "last_words", "last_lines", "last_tokens", "last_digit_ratio",
               "last_upper_ratio", "last_punct_ratio", "last_nonascii_ratio",
               "last_space_ratio", "last_avg_word_len", "last_question_marks",
               "last_code_fences", "last_code_tokens", "last_math_symbols", "last_latex",
               "last_urls", "last_list_items", "last_mc_options", "last_has_mc",
               "last_numbers")

# Byte classes of the last user message, counted with one np.bincount.
_OTHER, _LOWER, _UPPER, _DIGIT, _SPACE, _NEWLINE, _PUNCT, _MATH, _NONASCII, _QMARK = range(10)
_N_CLASSES = 10


def byte_classes() -> np.ndarray:
    table = np.full(256, _OTHER, dtype=np.intp)
    table[ord("a"):ord("z") + 1] = _LOWER
    table[ord("A"):ord("Z") + 1] = _UPPER
    table[ord("0"):ord("9") + 1] = _DIGIT
    table[[ord(" "), ord("\t"), ord("\r")]] = _SPACE
    table[ord("\n")] = _NEWLINE
    for ch in "!\"#$&'(),.:;@[\\]_`{}":
        table[ord(ch)] = _PUNCT
    for ch in "+-*/=^<>%|~":
        table[ord(ch)] = _MATH
    table[ord("?")] = _QMARK
    table[128:] = _NONASCII
    return table


def conversation_shape(conv: Conversation) -> list[float]:
    """The `CONV_NAMES` features: messages, turns, system prompt, text lengths, tokens."""
    system = conv.system
    user_chars = sum(len(u) for u in conv.user_messages)
    assistant_chars = sum(len(m.content) for m in conv.messages if m.role == "assistant")
    return [len(conv.messages), conv.n_turns, 1.0 if system else 0.0, len(system),
            user_chars, assistant_chars, conv.input_tokens]


def last_message_stats(text: str, classes_of_bytes: np.ndarray) -> list[float]:
    """The `STAT_NAMES` statistics of the last user message; `classes_of_bytes` is
    `byte_classes()`."""
    raw = text.encode("utf-8", "replace")
    n_bytes = max(len(raw), 1)
    classes = classes_of_bytes[np.frombuffer(raw, dtype=np.uint8)]
    counts = np.bincount(classes, minlength=_N_CLASSES)
    n_words = len(text.split())
    non_space = len(raw) - counts[_SPACE] - counts[_NEWLINE]
    options = set()
    for match in _MC_OPTION.finditer(text):
        start = match.start()
        if start == 0 or text[start - 1] in " \t\n(":
            options.add(match.group(1))
    digits = classes == _DIGIT
    # Runs of digits: "3.14" is two, good enough to tell arithmetic from prose.
    numbers = (int(digits[0]) + int(np.count_nonzero(digits[1:] & ~digits[:-1]))
               if len(digits) else 0)
    return [
        float(len(text)),
        float(n_words),
        float(text.count("\n") + 1 if text else 0),
        float(estimate_tokens(text) if text else 0),
        counts[_DIGIT] / n_bytes,
        counts[_UPPER] / n_bytes,
        (counts[_PUNCT] + counts[_MATH] + counts[_QMARK]) / n_bytes,
        counts[_NONASCII] / n_bytes,
        (counts[_SPACE] + counts[_NEWLINE]) / n_bytes,
        non_space / n_words if n_words else 0.0,
        float(counts[_QMARK]),
        float(text.count("```")),
        float(sum(text.count(mark) for mark in _CODE_MARKS)),
        # The regex scans are skipped when a substring every match needs is
        # absent (a plain substring search is ~10x cheaper than the scan); the
        # counts are the same.
        float(counts[_MATH] + (0 if counts[_NONASCII] == 0
                               else len(_MATH_UNICODE.findall(text)))),
        float(len(_LATEX.findall(text)) if "\\" in text or "$" in text else 0),
        float(len(_URL.findall(text)) if "http" in text or "www." in text else 0),
        float(len(_LIST_ITEM.findall(text))),
        float(len(options)),
        1.0 if {"A", "B", "C"} <= options else 0.0,
        float(numbers),
    ]
