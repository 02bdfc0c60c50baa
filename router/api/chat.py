"""`POST /v1/chat/completions`: OpenAI-compatible, routed or passed through.

`model` is `router` (default bar), `router:0.8` (bar in the name) or a catalog
model (pass-through, no prediction). The call goes to the upstream along the
fallback chain; the answer keeps the provider's body, with `x-router-model`
(the model that answered) and `x-request-id` headers. Streaming requests are
passed through event by event. Non-streaming temperature-0 requests use the
cache (`x-router-cache: exact` or `semantic` on a hit), except exploration: a
randomly explored model's answer is neither replayed nor stored as the router's.
Every request, answered or failed, leaves one outcome-log row; every answered one
(upstream, cache or stream) one server log line. A fallback is counted when the
upstream answer came from another model than the one chosen (it failed or its
breaker was open); a cache hit is never one.

The work is done by `plan_chat` (decide, build the chain; raises `ApiError`
before anything is logged or counted) and `answer_chat` (call the upstream, log,
count), shared by the FastAPI handler below and the lean ASGI path
(`router.api.fast_path`), which answers well-formed requests without FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from router.api.route import checked_conversation, checked_rule, route_record
from router.api.schemas import ERROR_RESPONSES, ROUTER_FIELDS, ChatRequest
from router.cache import CachedResponse, CacheHit, cache_key, should_use_cache
from router.conversation import Conversation, invalid_text
from router.deps import ApiError, AppContext, ClientKey, Ctx, new_request_id
from router.errors import PolicyError
from router.outcome_log import RequestRecord
from router.service import RouteResult, RoutingService, parse_router_model
from router.upstream import DONE, UpstreamError, error_event

__all__ = ["router", "plan_chat", "answer_chat", "ChatAnswer", "forwarded_body",
           "chat_inputs"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["chat"], responses=ERROR_RESPONSES)


class _Plan:
    """What one request will do: the chain, the routing decision if any, the log row."""

    __slots__ = ("request_id", "client", "conversation", "service", "result", "chosen",
                 "chain", "started", "stream")

    def __init__(self, request_id: str, client: str | None, conversation: Conversation,
                 service: RoutingService | None, result: RouteResult | None, chosen: str,
                 chain: list[str], started: float, stream: bool) -> None:
        self.request_id = request_id
        self.client = client
        self.conversation = conversation
        self.service = service
        self.result = result
        # The model picked (routed, or named by the caller); the chain may start
        # elsewhere when its breaker is open.
        self.chosen = chosen
        self.chain = chain
        self.started = started
        self.stream = stream

    @property
    def first_model(self) -> str | None:
        return self.chain[0] if self.chain else None

    def record(self, ctx: AppContext, **fields: Any) -> RequestRecord:
        fields.setdefault("latency_ms", (time.perf_counter() - self.started) * 1000.0)
        if self.service is not None and self.result is not None:
            return route_record(ctx, self.service, self.request_id, self.client,
                                self.conversation, self.result, endpoint="chat",
                                stream=self.stream, **fields)
        return RequestRecord(
            request_id=self.request_id, client_key_id=self.client,
            conversation_hash=self.conversation.digest,
            conversation=None if ctx.settings.privacy_mode else json.dumps(
                self.conversation.to_messages(), ensure_ascii=False),
            chosen_model=self.chosen, endpoint="chat", stream=self.stream, **fields)


def plan_chat(ctx: AppContext, request_id: str, client: str | None, started: float, *,
              model: str, messages: Any, stream: bool, quality_bar: float | None,
              min_quality: float | None, utility_lambda: float | None,
              max_cost_usd: float | None,
              models: list[str] | None) -> _Plan:
    """Decide what one chat request will do, or raise `ApiError` (before anything
    is logged or counted, so a caller may hand the request to another path)."""
    conversation = checked_conversation(ctx, messages)
    try:
        bar = parse_router_model(model)
    except PolicyError as exc:
        raise ApiError(400, str(exc), param="model", code="invalid_quality_bar") from None
    if bar is False:
        if model not in ctx.catalog:
            raise ApiError(404, f"unknown model {model!r}: use `router`, `router:<bar>` "
                           f"or one of {', '.join(sorted(ctx.catalog.names))}",
                           param="model", code="model_not_found")
        chain = ctx.upstream.chain_for(model)
        return _Plan(request_id, client, conversation, None, None, model, chain, started,
                     stream)
    service = ctx.require_service()
    bar, floor, lam = checked_rule(quality_bar if bar is None else bar, min_quality,
                                   utility_lambda)
    try:
        result = service.route(conversation, bar=bar, min_quality=floor, utility_lambda=lam,
                               max_cost_usd=max_cost_usd, models=models,
                               rng=ctx.rng, proxy_only=True)
    except PolicyError as exc:
        raise ApiError(400, str(exc), param="models", code="invalid_models") from None
    ctx.metrics.route_decision.observe(result.decision_s)
    chain = ctx.upstream.chain_for(result.model, result.fallbacks)
    return _Plan(request_id, client, conversation, service, result, result.model, chain,
                 started, stream)


def forwarded_body(body: dict[str, Any]) -> dict[str, Any]:
    """What goes upstream: the caller's body without the router's own fields.

    Raises `ApiError` (400, naming the field) when a string in it is not valid
    Unicode (a lone surrogate from a JSON escape): it could not be sent, logged
    or hashed, so it is refused before anything is planned.
    """
    found = invalid_text(body)
    if found is not None:
        param, problem = found
        if len(param) > 64:  # the path is made of the caller's field names: keep it short
            param = param[:64] + "..."
        raise ApiError(400, f"{param} {problem}", param=param, code="invalid_text")
    return {k: v for k, v in body.items() if k not in ROUTER_FIELDS}


class ChatAnswer(NamedTuple):
    """A successful answer: whole (`body`, JSON) or streamed (`events`, SSE)."""

    headers: dict[str, str]
    body: bytes | None = None
    events: AsyncIterator[bytes] | None = None


def _cost(ctx: AppContext, model: str, prompt_tokens: int, completion_tokens: int) -> float:
    spec = ctx.catalog.models.get(model)
    return spec.cost_usd(prompt_tokens, completion_tokens) if spec is not None else 0.0


def _observe_served(ctx: AppContext, plan: _Plan, served: str, status: int,
                    cost: float, ttfb_s: float | None, *, from_cache: bool = False) -> None:
    m = ctx.metrics
    m.requests.labels("chat", served, str(status)).inc()
    if cost:
        m.cost_usd.labels(served).inc(cost)
    if ttfb_s is not None:
        m.upstream_ttfb.labels(served).observe(ttfb_s)
    if not from_cache and served != plan.chosen:
        m.fallbacks.labels(plan.chosen, served).inc()
    m.request_duration.labels("chat").observe(time.perf_counter() - plan.started)


def _log_answered(plan: _Plan, served: str, cost: float, *, how: str = "",
                  status: int = 200) -> None:
    """The one server log line of an answered request: id, model, latency, cost.

    Written once per answered request whatever path answered it (upstream, cache,
    stream), so counting lines counts requests; never the prompt. `how` says which
    ("cache hit", "stream"); a stream cut short also gets its status.
    """
    notes = [how] if how else []
    if status != 200:
        notes.append(f"status {status}")
    log.info("request %s -> %s in %.1f ms, $%.6f%s", plan.request_id, served,
             (time.perf_counter() - plan.started) * 1000.0, cost,
             f" ({', '.join(notes)})" if notes else "")


def _failed(ctx: AppContext, plan: _Plan, exc: UpstreamError) -> None:
    # The outcome log is the operator's: it gets the URL and detail the client did not.
    ctx.store.log(plan.record(ctx, status=exc.status_code, error=exc.log_text(),
                              fallback_path=[a.to_dict() for a in exc.attempts],
                              input_tokens=plan.conversation.input_tokens))
    ctx.metrics.request_duration.labels("chat").observe(time.perf_counter() - plan.started)


def chat_inputs(body: ChatRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`plan_chat` keyword arguments, the body to forward) of a validated request;
    the same for both front doors, so they forward the same bytes. Raises
    `ApiError` for text that is not valid Unicode (see `forwarded_body`)."""
    upstream_body = forwarded_body(body.model_dump(exclude_unset=True))
    return ({"model": body.model, "messages": upstream_body["messages"],
             "stream": bool(body.stream), "quality_bar": body.quality_bar,
             "min_quality": body.min_quality, "utility_lambda": body.utility_lambda,
             "max_cost_usd": body.max_cost_usd, "models": body.models}, upstream_body)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, ctx: Ctx,
                           client: ClientKey) -> Response:
    started = time.perf_counter()
    request.state.endpoint = "chat"
    request_id = new_request_id()
    request.state.request_id = request_id
    # Before planning, as on the fast path: a refused body leaves no trace.
    fields, upstream_body = chat_inputs(body)
    plan = plan_chat(ctx, request_id, client, started, **fields)
    request.state.model = plan.first_model
    answer = await answer_chat(ctx, plan, upstream_body, request.headers)
    if answer.events is not None:
        return StreamingResponse(answer.events, media_type="text/event-stream",
                                 headers=answer.headers)
    return Response(answer.body, media_type="application/json", headers=answer.headers)


async def answer_chat(ctx: AppContext, plan: _Plan, upstream_body: dict[str, Any],
                      headers: Mapping[str, str]) -> ChatAnswer:
    """Call the upstream along `plan.chain`, log and count; `headers` are the
    request's (for `Cache-Control`). Raises `UpstreamError` when the chain failed
    (already logged and timed; the caller answers it with the error's status)."""
    if plan.stream:
        return await _stream(ctx, plan, upstream_body)

    request_id = plan.request_id
    key = None
    explored = plan.result is not None and plan.result.explored
    # An explored request exists to observe the drawn model: a cached answer would log
    # an outcome it never produced, and storing its answer would replay a random
    # model's answer as the router's.
    # A routed request's answer depends on the model its bar, floor, lambda, budget and
    # allowed models chose, not on "router": key it by that model, so a request with
    # a higher bar never gets the answer a cheaper model gave to a lower one.
    cache_body = (upstream_body if plan.result is None
                  else {**upstream_body, "model": plan.result.policy_model})
    if ctx.cache is not None and not explored and should_use_cache(upstream_body, headers):
        key = cache_key(cache_body, namespace=ctx.cache_namespace)
        hit = await _lookup(ctx, cache_body, key)
        if hit is not None:
            served = hit.response.served_model
            ctx.metrics.cache_hits.labels(hit.kind).inc()
            ctx.store.log(plan.record(ctx, served_model=served, cache_hit=True,
                                      input_tokens=plan.conversation.input_tokens,
                                      output_tokens=0, cost_usd=0.0, status=200))
            _observe_served(ctx, plan, served, 200, 0.0, None, from_cache=True)
            _log_answered(plan, served, 0.0, how=f"cache hit, {hit.kind}")
            return ChatAnswer({"x-router-model": served, "x-request-id": request_id,
                               "x-router-cache": hit.kind}, body=hit.response.body)
        ctx.metrics.cache_misses.inc()

    try:
        result = await ctx.upstream.complete(upstream_body, plan.chain)
    except UpstreamError as exc:
        _failed(ctx, plan, exc)
        raise
    usage = result.usage
    cost = _cost(ctx, result.model, usage.prompt_tokens, usage.completion_tokens)
    payload = result.response
    if usage.estimated and "usage" not in payload:
        payload = {**payload, "usage": {"prompt_tokens": usage.prompt_tokens,
                                        "completion_tokens": usage.completion_tokens,
                                        "total_tokens": usage.total_tokens}}
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if key is not None:
        stored = CachedResponse(data, result.model, time.time())
        try:
            await (ctx.semantic.store(cache_body, stored) if ctx.semantic is not None
                   else ctx.cache.set(key, stored))
        except Exception:  # the cache must never fail a request that was answered
            log.exception("cache store failed for request %s", request_id)
    ctx.store.log(plan.record(
        ctx, served_model=result.model, fallback_path=[a.to_dict() for a in result.attempts],
        input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
        cost_usd=cost, ttfb_ms=result.ttfb_s * 1000.0, status=200))
    _observe_served(ctx, plan, result.model, 200, cost, result.ttfb_s)
    _log_answered(plan, result.model, cost)
    return ChatAnswer({"x-router-model": result.model, "x-request-id": request_id}, body=data)


async def _lookup(ctx: AppContext, body: dict[str, Any], key: str | None) -> CacheHit | None:
    if ctx.semantic is not None:
        return await ctx.semantic.lookup(body)
    found = await ctx.cache.get(key) if key is not None else None
    return CacheHit(found, "exact") if found is not None else None


_SHUTTING_DOWN = "server shutting down: the stream was cut before its end; retry the request"


async def _stream(ctx: AppContext, plan: _Plan, upstream_body: dict[str, Any]) -> ChatAnswer:
    try:
        stream = await ctx.upstream.stream(upstream_body, plan.chain)
    except UpstreamError as exc:
        _failed(ctx, plan, exc)
        raise

    async def events() -> AsyncIterator[bytes]:
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
                yield error_event(_SHUTTING_DOWN, type="service_unavailable",
                                  code="server_shutting_down", status=503) + DONE
        finally:
            # Runs on normal end, on upstream failure (already turned into an error
            # event), when the client goes away and when a shutdown cuts the stream;
            # logging first, it cannot block.
            if task is not None:
                ctx.streams.discard(task)
            usage = stream.usage
            prompt = usage.prompt_tokens if usage else plan.conversation.input_tokens
            completion = usage.completion_tokens if usage else 0
            cost = _cost(ctx, stream.model, prompt, completion)
            error = stream.error
            # 499: the client gave up; 503: the server cut it while shutting down.
            status = error.status_code if error is not None else (
                200 if stream.finished else 503 if ctx.shutting_down else 499)
            ctx.store.log(plan.record(
                ctx, served_model=stream.model,
                fallback_path=[a.to_dict() for a in stream.attempts],
                input_tokens=prompt, output_tokens=completion, cost_usd=cost,
                ttfb_ms=stream.ttfb_s * 1000.0, status=status,
                error=error.log_text() if error is not None else
                _SHUTTING_DOWN if status == 503 else None))
            _observe_served(ctx, plan, stream.model, status, cost, stream.ttfb_s)
            _log_answered(plan, stream.model, cost, how="stream", status=status)
            if not stream.finished:
                with contextlib.suppress(Exception):
                    await stream.aclose()

    return ChatAnswer({"x-router-model": stream.model, "x-request-id": plan.request_id,
                       "cache-control": "no-cache"}, events=events())
