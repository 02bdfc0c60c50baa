"""A request's conversation, parsed once and shared by features, cache and log.

Accepts what callers send: a bare prompt string, or an OpenAI `messages` list
(content as a string or as a list of `{"type": "text", "text": ...}` parts).

Text must be valid Unicode. JSON can carry a lone UTF-16 surrogate
(`"x\\ud800y"`), which Python keeps in a `str` that no UTF-8 encoder accepts
(the digest, the outcome log, the request to the provider); such text is refused
here, naming the message, instead of failing later as a 500. `invalid_text`
finds it anywhere in a parsed JSON body, for fields a conversation does not read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from router.catalog import estimate_tokens
from router.errors import DataError

__all__ = ["Message", "Conversation", "parse_conversation", "invalid_text"]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Conversation:
    """An ordered, validated list of messages with the views routing needs."""

    messages: tuple[Message, ...]

    @cached_property
    def system(self) -> str:
        return "\n".join(m.content for m in self.messages if m.role in ("system", "developer"))

    @cached_property
    def user_messages(self) -> tuple[str, ...]:
        return tuple(m.content for m in self.messages if m.role == "user")

    @property
    def last_user(self) -> str:
        return self.user_messages[-1] if self.user_messages else ""

    @property
    def n_turns(self) -> int:
        """Number of user turns (a single prompt is one turn)."""
        return len(self.user_messages)

    @cached_property
    def text(self) -> str:
        """All message text, in order; what the model actually reads."""
        return "\n".join(m.content for m in self.messages)

    @cached_property
    def input_tokens(self) -> int:
        # A few tokens of chat-template overhead per message, as providers bill.
        return estimate_tokens(self.text) + 4 * len(self.messages)

    @cached_property
    def digest(self) -> str:
        """Stable hash of roles and contents: cache key part and log identifier."""
        payload = json.dumps([[m.role, m.content] for m in self.messages],
                             ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def to_messages(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in self.messages]

    @classmethod
    def from_prompt(cls, prompt: str) -> Conversation:
        return cls((Message("user", prompt),))


def _lone_surrogate(text: str) -> str | None:
    """What is wrong with `text` as Unicode (a lone surrogate, and where), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"is not valid Unicode text: a lone surrogate "
                f"(U+{ord(text[exc.start]):04X}) at character {exc.start}")
    return None


def _checked(text: str, where: str) -> str:
    problem = _lone_surrogate(text)
    if problem is not None:
        raise DataError(f"{where} {problem}", hint="a \\ud800-\\udbff escape must be "
                        "followed by a \\udc00-\\udfff one; send the text as UTF-8")
    return text


def invalid_text(value: Any, path: str = "") -> tuple[str, str] | None:
    """(dotted path, problem) of the first string in `value` (a parsed JSON value;
    object keys included) that is not valid Unicode text, or None."""
    if isinstance(value, str):
        problem = _lone_surrogate(value)
        return (path, problem) if problem is not None else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            bad_key = _lone_surrogate(key) if isinstance(key, str) else None
            if bad_key is not None:
                return path or "body", f"has a field name that {bad_key}"
            found = invalid_text(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = invalid_text(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            # Images and audio carry no text the features can use; they are skipped.
        return "\n".join(parts)
    raise DataError(f"{where}: content must be a string or a list of parts, "
                    f"got {type(content).__name__}")


def parse_conversation(value: Any, *, where: str = "request") -> Conversation:
    """Build a `Conversation` from a prompt string, a messages list or its JSON text.

    Raises `DataError` naming `where` when the value is not a usable conversation.
    """
    if isinstance(value, Conversation):
        return value
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped.startswith("[") and stripped.rstrip().endswith("]"):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                return Conversation.from_prompt(_checked(value, f"{where}: the prompt"))
        else:
            return Conversation.from_prompt(_checked(value, f"{where}: the prompt"))
    if not isinstance(value, Sequence) or isinstance(value, bytes | bytearray):
        raise DataError(f"{where}: expected a prompt string or a list of messages, "
                        f"got {type(value).__name__}")
    if len(value) == 0:
        raise DataError(f"{where}: messages is empty",
                        hint="send at least one {\"role\": \"user\", \"content\": ...} message")
    messages = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise DataError(f"{where}: message {index} must be an object with role and content")
        role = item.get("role")
        if role not in ROLES:
            raise DataError(f"{where}: message {index} has role {role!r}",
                            hint=f"use one of {', '.join(sorted(ROLES))}")
        text = _content_text(item.get("content"), f"{where}: message {index}")
        messages.append(Message(role, _checked(text, f"{where}: message {index} content")))
    return Conversation(tuple(messages))
