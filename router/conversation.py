"""A request's conversation, parsed once and shared by features, cache and log.

Accepts what callers send: a bare prompt string, or an OpenAI `messages` list
(content as a string or as a list of `{"type": "text", "text": ...}` parts).

Text must be valid Unicode. JSON can carry a lone UTF-16 surrogate
(`"x\\ud800y"`), which Python keeps in a `str` that no UTF-8 encoder accepts
(the digest, the outcome log, the request to the provider); such text is refused
here, naming the message, instead of failing later as a 500. `invalid_text`
finds it anywhere in a parsed JSON body, for fields a conversation does not read.

`conversation_problem` holds the stricter rules for what a caller sends (the HTTP
edge and `router route`): `parse_conversation` also reads logged and training
data, where an empty prompt or a tool call without text are facts to keep.
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

__all__ = ["Message", "Conversation", "parse_conversation", "invalid_text",
           "conversation_problem"]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Roles whose message is the caller's own text: blank content there is a mistake.
_TEXT_ROLES = frozenset({"system", "developer", "user"})


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


def conversation_problem(value: Any, *, prompt_ok: bool = False,
                         param: str = "messages") -> tuple[str, str] | None:
    """(param, message) of the first thing wrong with a conversation a caller sent,
    or None when it is usable.

    `value` is a messages list, or (with `prompt_ok`) a prompt string, which may be
    a JSON messages list as text (`parse_conversation` reads it so). The rules:
    at least one message; each an object with a known `role` and a `content` that
    is a string or a list of content parts (objects with a string `type`; a
    `"text"` part has a string `text`); `tool_calls`, when given, a list; content
    null or absent only for an assistant message with tool calls (or the older
    `function_call` object); the
    content of a system, developer or user message not blank. Messages name the
    field (`messages.0.content`), as `param` does.
    """
    if isinstance(value, str) and prompt_ok:
        stripped = value.strip()
        if not stripped:
            return param, f"{param} is blank: give a prompt with some text or a list of messages"
        if stripped.startswith("[") and stripped.endswith("]"):
            try:
                parsed = json.loads(stripped)
            except ValueError:
                return None  # a prompt that happens to look like a list
            return conversation_problem(parsed, param=param)
        return None
    if not isinstance(value, list):
        wanted = "a list of messages or a prompt string" if prompt_ok else "a list of messages"
        return param, f"{param} must be {wanted}, got {_json_type(value)}"
    if not value:
        return param, (f'{param} is empty: send at least one {{"role": "user", '
                       f'"content": ...}} message')
    for index, item in enumerate(value):
        problem = _message_problem(item, f"{param}.{index}")
        if problem is not None:
            return problem
    return None


def _message_problem(item: Any, where: str) -> tuple[str, str] | None:
    if not isinstance(item, Mapping):
        return where, f"{where} must be an object with role and content, got {_json_type(item)}"
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        got = "no role" if role is None else f"role {_short(role)}"
        return f"{where}.role", f"{where} has {got}: use one of {', '.join(sorted(ROLES))}"
    tool_calls = item.get("tool_calls")
    if tool_calls is not None and not isinstance(tool_calls, list):
        return f"{where}.tool_calls", (f"{where}.tool_calls must be a list of tool calls, "
                                       f"got {_json_type(tool_calls)}")
    content = item.get("content")
    if content is None:
        if role == "assistant" and (tool_calls or isinstance(item.get("function_call"),
                                                             Mapping)):
            return None
        return f"{where}.content", (f"{where}.content is missing or null: only an "
                                    "assistant message with tool_calls may have no content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for index, part in enumerate(content):
            at = f"{where}.content.{index}"
            if not isinstance(part, Mapping) or not isinstance(part.get("type"), str):
                return at, f"{at} must be a content part: an object with a string type"
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    return f"{at}.text", f"{at}.text must be a string in a text part"
                parts.append(part["text"])
            else:
                parts.append("(non-text part)")  # an image or audio is content too
        text = "".join(parts)
    else:
        return f"{where}.content", (f"{where}.content must be a string or a list of content "
                                    f"parts, got {_json_type(content)}")
    if role in _TEXT_ROLES and not text.strip():
        return f"{where}.content", f"{where}.content is blank: a {role} message needs text"
    return None


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (what the caller wrote)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, Mapping) else type(value).__name__


def _short(value: Any, limit: int = 40) -> str:
    """`repr(value)`, cut to `limit` characters: an error echoes input, never much of it."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
