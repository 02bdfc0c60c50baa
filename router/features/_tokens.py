"""Tokens of a prompt and their hash buckets: words, characters of no-space scripts.

See the `router.features` docstring for why words are hashed here (sklearn's
tokens, murmurhash3 through a memo) and why characters of the scripts written
without spaces are 1-2-grams.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["NO_SPACE_RANGES", "hash_counts", "mix", "no_space_table", "tokenize"]

# Same tokens as sklearn's default `\b\w\w+\b` (greedy \w+ makes the \b redundant,
# and dropping them halves the time).
_TOKEN = re.compile(r"\w\w+")
# Scripts written without spaces between words (code point ranges, inclusive).
NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF),    # Thai, Lao
    (0x1000, 0x109F),    # Myanmar
    (0x1100, 0x11FF),    # Hangul Jamo
    (0x1780, 0x17FF),    # Khmer
    (0x3005, 0x3007),    # 々 〆 〇
    (0x3040, 0x30FF),    # Hiragana, Katakana
    (0x3130, 0x318F),    # Hangul compatibility Jamo
    (0x31F0, 0x31FF),    # Katakana phonetic extensions
    (0x3400, 0x4DBF),    # CJK extension A
    (0x4E00, 0x9FFF),    # CJK unified ideographs
    (0xAC00, 0xD7AF),    # Hangul syllables
    (0xF900, 0xFAFF),    # CJK compatibility ideographs
    (0xFF66, 0xFF9F),    # half-width Katakana
    (0x20000, 0x323AF),  # CJK extensions B-H
)
_NO_SPACE_CLASS = "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in NO_SPACE_RANGES)
# Words of the other scripts: `\w\w+` minus the no-space characters.
_WORD = re.compile(rf"[^\W{_NO_SPACE_CLASS}]{{2,}}")


def no_space_table() -> np.ndarray:
    """Bool per code point: True for characters of the no-space scripts. The last
    entry is False and stands for every code point beyond the table."""
    table = np.zeros(NO_SPACE_RANGES[-1][1] + 2, dtype=bool)
    for lo, hi in NO_SPACE_RANGES:
        table[lo:hi + 1] = True
    return table


def tokenize(text: str, no_space: np.ndarray) -> tuple[list[str], np.ndarray | None]:
    """Words of `text` and, when it has any, its no-space-script characters.

    The characters come as an int32 code point array as long as `text`, 0
    where a character is not of a no-space script (a run boundary); words are
    then the `\\w\\w+` runs of the other characters. Text without such
    characters gives exactly the `\\w\\w+` words and None. `no_space` is
    `no_space_table()`.
    """
    if text.isascii():
        return _TOKEN.findall(text), None
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    inside = no_space[np.minimum(codes, len(no_space) - 1)]
    if not inside.any():
        return _TOKEN.findall(text), None
    chars = np.where(inside, codes, 0).astype(np.int32)
    return _WORD.findall(text), chars


def hash_counts(memo: dict[str, int], tokens: list[str], chars: np.ndarray | None,
                n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash buckets and counts of the word 1-2-grams of `tokens` and of the
    character 1-2-grams of `chars` (bigrams never cross a 0, a run boundary).

    `memo` maps words to their murmurhash3, kept by the caller across calls.
    """
    from sklearn.utils import murmurhash3_32

    if len(memo) > 500_000:
        memo.clear()  # bounded: a long-running server sees unbounded vocabularies
    hashes = list(map(memo.get, tokens))
    if None in hashes:
        for i, token in enumerate(tokens):
            if hashes[i] is None:
                h = memo.get(token)
                if h is None:
                    h = memo[token] = int(murmurhash3_32(token, positive=True))
                hashes[i] = h
    uni = np.array(hashes, dtype=np.int64)
    parts = [uni, mix(uni[:-1], uni[1:])]
    if chars is not None:
        inside = chars != 0
        h = np.zeros(len(chars), dtype=np.int64)
        h[inside] = murmurhash3_32(chars[inside], positive=True)
        both = inside[:-1] & inside[1:]
        parts += [h[inside], mix(h[:-1][both], h[1:][both])]
    allh = np.concatenate(parts)
    if not len(allh):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    idx, counts = np.unique(allh % n_buckets, return_counts=True)
    return idx, counts


def mix(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """One bigram hash from its two unigram hashes (int64, non-negative)."""
    pair = left * 1_000_003 + right
    pair ^= pair >> 29
    return pair
