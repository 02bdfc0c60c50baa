"""A streamed chat completion: the upstream's SSE events passed through as they
come, the request logged once when the stream ends, however it ends.

Transport-neutral like `router.api._pipeline`, whose `answer_chat` opens the
stream here; the HTTP side (`router.api._lean.EventStreamResponse`) sends the
events and stops reading them when the client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from router.deps import AppContext
from router.upstream import DONE, UpstreamError, error_event

if TYPE_CHECKING:
    from router.api._pipeline import Plan

__all__ = ["open_stream", "SHUTTING_DOWN"]

SHUTTING_DOWN = "server shutting down: the stream was cut before its end; retry the request"


async def open_stream(ctx: AppContext, plan: Plan, forward: dict[str, Any]
                      ) -> tuple[dict[str, str], AsyncIterator[bytes]]:
    """(response headers, the events) of a started stream. Raises `UpstreamError`
    when no model of the chain started one (already logged and timed)."""
    try:
        stream = await ctx.upstream.stream(forward, plan.chain)
    except UpstreamError as exc:
        plan.failed(ctx, exc)
        raise
    headers = {"x-router-model": stream.model, "x-request-id": plan.request_id,
               "cache-control": "no-cache"}
    return headers, _events(ctx, plan, stream)


async def _events(ctx: AppContext, plan: Plan, stream: Any) -> AsyncIterator[bytes]:
    task = asyncio.current_task()  # whoever sends the stream: what a shutdown cuts
    if task is not None:
        ctx.streams.add(task)
    try:
        try:
            async for chunk in stream.batches():  # whole events, one send per read
                yield chunk
        except asyncio.CancelledError:
            if not ctx.shutting_down or task is None:
                raise  # the client went away
            # Cut by `AppContext.cut_streams` (the server is stopping): say so, end
            # cleanly, and let the request finish instead of being cancelled.
            task.uncancel()
            yield error_event(SHUTTING_DOWN, type="service_unavailable",
                              code="server_shutting_down", status=503) + DONE
    finally:
        # Runs on normal end, on upstream failure (already turned into an error
        # event), when the client goes away and when a shutdown cuts the stream;
        # logging first, it cannot block.
        if task is not None:
            ctx.streams.discard(task)
        _record(ctx, plan, stream)
        if not stream.finished:
            with contextlib.suppress(Exception):
                await stream.aclose()


def _record(ctx: AppContext, plan: Plan, stream: Any) -> None:
    """The stream's log row, metrics and server log line."""
    usage = stream.usage
    prompt = usage.prompt_tokens if usage else plan.conversation.input_tokens
    completion = usage.completion_tokens if usage else 0
    cost = ctx.cost_usd(stream.model, prompt, completion)
    error = stream.error
    # 499: the client gave up; 503: the server cut it while shutting down.
    status = error.status_code if error is not None else (
        200 if stream.finished else 503 if ctx.shutting_down else 499)
    ctx.store.log(plan.record(
        ctx, served_model=stream.model, fallback_path=[a.to_dict() for a in stream.attempts],
        input_tokens=prompt, output_tokens=completion, cost_usd=cost,
        ttfb_ms=stream.ttfb_s * 1000.0, status=status,
        error=error.log_text() if error is not None else
        SHUTTING_DOWN if status == 503 else None))
    plan.served(ctx, stream.model, status, cost, stream.ttfb_s, how="stream")
