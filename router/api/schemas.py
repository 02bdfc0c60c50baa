"""Request bodies at the HTTP edge (pydantic); everything inside uses dataclasses.

Chat requests keep every field the caller sent (`extra="allow"`) because the
router forwards them to the provider unchanged, except the router's own
extensions (`ROUTER_FIELDS`), which are removed before forwarding.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["RouteRequest", "ChatRequest", "FeedbackRequest", "ROUTER_FIELDS"]

#: Body fields the router reads and never forwards upstream.
ROUTER_FIELDS = ("quality_bar", "min_quality", "utility_lambda", "max_cost_usd", "models")


class RouteRequest(BaseModel):
    """`POST /v1/route`: a conversation (messages list or a prompt string) and limits."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Any] | str
    quality_bar: float | None = None
    min_quality: float | None = None
    utility_lambda: float | None = None
    max_cost_usd: float | None = None
    models: list[str] | None = None


class ChatRequest(BaseModel):
    """`POST /v1/chat/completions`: OpenAI's body, plus the optional router fields."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Any]
    stream: bool = False
    quality_bar: float | None = None
    min_quality: float | None = None
    utility_lambda: float | None = None
    max_cost_usd: float | None = None
    models: list[str] | None = None


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: exactly one of `quality` (in [0, 1]) and `thumbs`."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    quality: float | None = None
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = None
