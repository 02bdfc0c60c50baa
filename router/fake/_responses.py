"""The fake provider's bytes: OpenAI-shaped errors, completions and SSE streams.

Nothing here decides *what* to answer (`router.fake._server` does); this module
only shapes it, so the wire format lives in one place.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi.responses import JSONResponse

from router.upstream import DONE, encode_data

__all__ = ["error", "failure", "completion", "stream_events", "chunk_count", "SimulatedCrash"]


def error(status: int, message: str, *, type: str, code: str | None = None,
          param: str | None = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def failure(status: int, model: str, retry_after_s: float | None) -> JSONResponse:
    """A provider failure as OpenAI sends it: 429, 5xx or another status."""
    headers = {}
    if status in (429, 503) and retry_after_s is not None:
        headers["Retry-After"] = f"{retry_after_s:g}"
    if status == 429:
        return error(429, f"Rate limit reached for {model} (simulated)",
                     type="requests", code="rate_limit_exceeded", headers=headers)
    if status >= 500:
        return error(status, f"The server had an error processing the request for {model} "
                     "(simulated)", type="server_error", code=None, headers=headers)
    return error(status, f"Simulated failure for {model}", type="invalid_request_error",
                 headers=headers)


def completion(completion_id: str, created: int, model: str, text: str,
               usage: dict[str, int], quality: float) -> dict[str, Any]:
    """A whole `chat.completion` body, with the recorded quality in `router_quality`."""
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": usage, "router_quality": quality,
    }


class SimulatedCrash(ConnectionError):
    """Raised inside a stream to drop the connection, like a provider dying mid-answer."""


async def stream_events(completion_id: str, created: int, model: str, text: str,
                        usage: dict[str, int] | None, quality: float, *,
                        chunk_delay_s: float, fail_after: int | None) -> AsyncIterator[bytes]:
    """The SSE body of a streamed answer: about 8 content chunks, `chunk_delay_s`
    apart; the usage chunk when asked for; a crash after `fail_after` chunks."""
    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        payload: dict[str, Any] = {
            "id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            payload["usage"] = None
        return encode_data(payload)

    pieces = _split(text, max(1, math.ceil(len(text) / 8)))
    yield chunk({"role": "assistant", "content": ""}, None)
    for sent, piece in enumerate(pieces):
        if fail_after is not None and sent >= fail_after:
            raise SimulatedCrash(f"fake upstream: simulated crash of {model} after "
                                 f"{sent} chunks")
        if chunk_delay_s:
            await asyncio.sleep(chunk_delay_s)
        yield chunk({"content": piece}, None)
    yield chunk({}, "stop")
    if usage is not None:
        yield encode_data({"id": completion_id, "object": "chat.completion.chunk",
                           "created": created, "model": model, "choices": [], "usage": usage,
                           "router_quality": quality})
    yield DONE


def chunk_count(text: str) -> int:
    """How many content chunks `stream_events` sends for `text`."""
    return len(_split(text, max(1, math.ceil(len(text) / 8))))


def _split(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]
