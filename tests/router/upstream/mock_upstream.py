"""A scripted provider behind `httpx.MockTransport`, and what the client tests share.

`Upstream(model=[responses or exceptions])` answers each model's requests in
order (the last one repeating) and records them; `CATALOG` is a small catalog
whose models fall back and have different windows; `sse`, `delta`, `streaming`,
`Broken` and `Pieces` build stream bodies.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from router.catalog import Catalog, ModelSpec
from router.upstream import (
    Attempt,
)

__all__ = ["BODY", "CATALOG", "KEY_ENV", "SECRET", "USAGE_CHUNK", "Broken", "Clock", "Pieces",
           "Upstream", "delta", "err", "ok", "spec", "sse", "streaming", "summary"]

KEY_ENV = "TEST_UPSTREAM_KEY"
SECRET = "sk-test-0123456789abcdef"
BODY = {"messages": [{"role": "user", "content": "What is 2 + 2?"}]}


def spec(name: str, price: float, context: int, fallbacks: tuple[str, ...] = ()) -> ModelSpec:
    return ModelSpec(name=name, input_usd_per_mtok=price, output_usd_per_mtok=price * 4,
                     context_tokens=context, provider="test",
                     base_url=f"https://{name}.example/v1", api_key_env=KEY_ENV,
                     fallbacks=fallbacks)


CATALOG = Catalog({
    "small": spec("small", 0.1, 1_000, ("mid",)),
    "mid": spec("mid", 0.2, 1_000),
    "big": spec("big", 1.0, 100_000),
    "huge": spec("huge", 0.5, 200_000),
    "pricey": spec("pricey", 5.0, 8_000),
}, source="test-catalog")


def ok(model: str, text: str = "four", usage: dict[str, int] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"id": "x", "object": "chat.completion", "model": model,
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}]}
    if usage is not None:
        body["usage"] = usage
    return httpx.Response(200, json=body)


def err(status: int, message: str = "nope", code: str | None = None,
        headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers,
                          json={"error": {"message": message, "type": "x", "code": code}})


class Upstream:
    """A scripted provider: per model, a list of responses (or exceptions) used in
    order, the last one repeating; records every request."""

    def __init__(self, **script: Any) -> None:
        self.script = {m: list(v) if isinstance(v, list) else [v] for m, v in script.items()}
        self.calls: list[str] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        self.calls.append(model)
        self.requests.append(request)
        steps = self.script.get(model) or [ok(model)]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return step(request)
        return step


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def summary(attempts: list[Attempt]) -> list[tuple[str, int | None, str | None]]:
    return [(a.model, a.status, a.error) for a in attempts]



def sse(*payloads: Any, done: bool = True) -> bytes:
    out = b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads)
    return out + (b"data: [DONE]\n\n" if done else b"")


def delta(text: str) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta":
                                                              {"content": text}}]}


USAGE_CHUNK = {"object": "chat.completion.chunk", "choices": [],
               "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}


def streaming(body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


class Broken(httpx.AsyncByteStream):
    """Sends `head` then drops the connection."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self):
        yield self.head
        raise httpx.ReadError("connection reset by peer")




class Pieces(httpx.AsyncByteStream):
    """Sends each of `reads` as one network read."""

    def __init__(self, *reads: bytes) -> None:
        self.reads = reads

    async def __aiter__(self):
        for piece in self.reads:
            yield piece


