"""What an upstream call returns (`Attempt`, `Usage`, `UpstreamResult`), and
how token usage is read from OpenAI-shaped payloads.

Usage comes from the provider when it sends one; otherwise it is estimated
(`Usage.estimated`) from the prompt and the text that came back, so cost
accounting never silently reads zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from router.catalog import estimate_tokens
from router.conversation import parse_conversation
from router.errors import DataError

__all__ = ["Attempt", "Usage", "UpstreamResult"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one model. `error` is the error kind ('timeout', 'rate_limited',
    'server_error', 'unavailable', 'context_length', 'auth', 'not_found',
    'client_error', 'cooldown'),
    None on success; `status` the upstream HTTP status, None when none came."""

    model: str
    status: int | None
    error: str | None
    latency_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts; `estimated` when the upstream sent none and we counted."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class UpstreamResult:
    """A successful non-streaming call."""

    response: dict[str, Any]
    model: str
    attempts: list[Attempt]
    usage: Usage
    ttfb_s: float
    latency_s: float
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def fallbacks(self) -> int:
        """How many models before the one that answered were given up on."""
        return len({a.model for a in self.attempts if a.model != self.model})


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    try:
        return parse_conversation(body.get("messages"), where="messages").input_tokens
    except DataError:
        return estimate_tokens(json.dumps(body.get("messages", ""), ensure_ascii=False))


def _usage_from(payload: Any) -> tuple[int, int] | None:
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if isinstance(usage, dict):
        try:
            return int(usage["prompt_tokens"]), int(usage["completion_tokens"])
        except (KeyError, TypeError, ValueError):
            return None
    return None


def _message_text(payload: dict[str, Any]) -> str:
    parts = []
    for choice in payload.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            parts.append(message["content"])
    return "".join(parts)


def _delta_text(payload: Any) -> str:
    parts = []
    for choice in (payload.get("choices") or []) if isinstance(payload, dict) else []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            parts.append(delta["content"])
    return "".join(parts)


def _needs_parse(data: str) -> bool:
    """Whether an event's JSON may hold an error or a (non-null) usage.

    Inside JSON strings quotes are escaped, so `"error"` and `"usage"` unescaped
    can only be keys (or whole string values, which merely cost a parse).
    """
    if '"error"' in data:
        return True
    usages = data.count('"usage"')
    return usages > 0 and usages != data.count('"usage":null') + data.count('"usage": null')


def _loads(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None
