"""One routed request's path, the same for `/v1/route` and chat completions:
parse -> plan -> answer -> record.

Transport-neutral: it takes the decoded JSON body and header values and gives
back bytes (a JSON body, or SSE events) with their headers. The HTTP side
(reading the body, the caller's key, sending, a client that leaves) is
`router.api._lean` and the two endpoints in `router.api._route` and
`router.api._chat`.

- **parse** (`parse_route`, `parse_chat`): the body checked by the shared models
  of `router.api._schemas`, text that is not valid Unicode refused, the
  conversation parsed.
- **plan** (`plan_route`, `plan_chat`): the request's rule (`router.api._rule.Rule`:
  a quality bar, a floor or a lambda, the cost and latency limits, the allowed
  models) validated once, then decided by `RoutingService.route` and given its
  upstream chain; a pass-through chat names its model.
- **answer** (`answer_route`, `answer_chat`): the decision JSON; or the cache,
  the upstream call along the chain, or the stream (`router.api._streams`).
- **record** (`Plan.record`, `Plan.served`): one outcome-log row per request,
  the metrics, and one server log line per answered request.

Every refusal is an `ApiError` raised during parse or plan, before anything is
logged or counted. A chat request's answer comes from the upstream along the
fallback chain; non-streaming temperature-0 requests use the cache
(`x-router-cache: exact` or `semantic` on a hit), except exploration: a randomly
explored model's answer is neither replayed nor stored as the router's. A
fallback is counted when the upstream answer came from another model than the
one chosen (it failed or its breaker was open); a cache hit is never one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from router.api._rule import Rule
from router.api._schemas import ROUTER_FIELDS, ChatRequest, RouteRequest
from router.api._streams import open_stream
from router.cache import CachedResponse, CacheHit, cache_key, should_use_cache
from router.conversation import Conversation, invalid_text, parse_conversation
from router.deps import ApiError, AppContext
from router.errors import PolicyError
from router.outcome_log import RequestRecord
from router.service import RouteResult, RoutingService, parse_router_model
from router.upstream import UpstreamError

__all__ = ["Ask", "Plan", "Answer", "BodyInvalid", "parse_route", "parse_chat",
           "plan_route", "plan_chat", "answer_route", "answer_chat"]

log = logging.getLogger(__name__)

# Built once: `json.dumps` with any non-default option builds a new encoder per call.
_encode_compact = json.JSONEncoder(separators=(",", ":")).encode
_encode_text = json.JSONEncoder(ensure_ascii=False).encode


# --------------------------------------------------------------------------- parse


class BodyInvalid(Exception):
    """The body does not fit its schema; `errors` are pydantic's, as the edge words
    every validation error (`router.api._errors.describe_validation_error`)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid request body")
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Ask:
    """A parsed request: the checked body, its conversation, and for a chat the body
    to forward upstream (the caller's, without the router's own fields)."""

    body: RouteRequest | ChatRequest
    conversation: Conversation
    forward: dict[str, Any] | None = None


def _validated(model: type[BaseModel], value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise BodyInvalid(list(exc.errors())) from None


def _conversation(ctx: AppContext, messages: object) -> Conversation:
    """The parsed conversation, or 400 naming the problem (empty, too many, bad role)."""
    if isinstance(messages, list) and len(messages) > ctx.settings.max_messages:
        raise ApiError(400, f"messages has {len(messages)} entries; the limit is "
                       f"{ctx.settings.max_messages}", param="messages",
                       code="too_many_messages")
    try:
        return parse_conversation(messages, where="request")
    except Exception as exc:
        message = getattr(exc, "message", str(exc))
        hint = getattr(exc, "hint", None)
        raise ApiError(400, f"{message} ({hint})" if hint else message,
                       param="messages", code="invalid_messages") from None


def _forwarded(body: dict[str, Any]) -> dict[str, Any]:
    """What goes upstream: the caller's body without the router's own fields.

    A string that is not valid Unicode (a lone surrogate from a JSON escape) could
    not be sent, logged or hashed: 400 naming the field, before anything is planned.
    """
    found = invalid_text(body)
    if found is not None:
        param, problem = found
        if len(param) > 64:  # the path is made of the caller's field names: keep it short
            param = param[:64] + "..."
        raise ApiError(400, f"{param} {problem}", param=param, code="invalid_text")
    return {k: v for k, v in body.items() if k not in ROUTER_FIELDS}


def parse_route(ctx: AppContext, value: Any) -> Ask:
    """A `/v1/route` body (decoded JSON). Raises `BodyInvalid` or `ApiError` (400)."""
    body: RouteRequest = _validated(RouteRequest, value)
    return Ask(body, _conversation(ctx, body.messages))


def parse_chat(ctx: AppContext, value: Any) -> Ask:
    """A chat completion body (decoded JSON). Raises `BodyInvalid` or `ApiError` (400)."""
    body: ChatRequest = _validated(ChatRequest, value)
    forward = _forwarded(body.model_dump(exclude_unset=True))
    return Ask(body, _conversation(ctx, forward["messages"]), forward)


# --------------------------------------------------------------------------- plan


class Plan:
    """What one request will do: the decision if routed, the chain, the log row."""

    __slots__ = ("endpoint", "request_id", "client", "conversation", "service", "result",
                 "chosen", "chain", "started", "stream")

    def __init__(self, endpoint: str, request_id: str, client: str | None,
                 conversation: Conversation, started: float, *,
                 service: RoutingService | None = None, result: RouteResult | None = None,
                 chosen: str = "", chain: list[str] | None = None,
                 stream: bool = False) -> None:
        self.endpoint = endpoint
        self.request_id = request_id
        self.client = client
        self.conversation = conversation
        self.service = service
        self.result = result
        # The model picked (routed, or named by the caller); the chain may start
        # elsewhere when its breaker is open.
        self.chosen = result.model if result is not None else chosen
        self.chain = chain or []
        self.started = started
        self.stream = stream

    @property
    def first_model(self) -> str | None:
        return self.chain[0] if self.chain else None

    def record(self, ctx: AppContext, **fields: Any) -> RequestRecord:
        """The request's outcome-log row; `fields` are what the answer added."""
        fields.setdefault("latency_ms", (time.perf_counter() - self.started) * 1000.0)
        conversation = None if ctx.settings.privacy_mode else _encode_text(
            self.conversation.to_messages())
        result, service = self.result, self.service
        if result is None or service is None:
            return RequestRecord(
                request_id=self.request_id, client_key_id=self.client,
                conversation_hash=self.conversation.digest, conversation=conversation,
                chosen_model=self.chosen, endpoint=self.endpoint, stream=self.stream,
                **fields)
        if "candidates" not in fields:  # /v1/route built them already, for its answer
            fields["candidates"] = result.candidates_json()
        return RequestRecord(
            request_id=self.request_id, client_key_id=self.client,
            conversation_hash=self.conversation.digest, conversation=conversation,
            feature_schema_version=_schema_version(service), model_version=service.version,
            quality_bar=result.quality_bar, utility_lambda=result.utility_lambda,
            chosen_model=result.model, propensity=result.propensity,
            explored=result.explored, endpoint=self.endpoint, stream=self.stream, **fields)

    def served(self, ctx: AppContext, served: str, status: int, cost: float,
               ttfb_s: float | None, *, from_cache: bool = False, how: str = "") -> None:
        """Count an answered chat request and write its one server log line."""
        m = ctx.metrics
        m.requests.labels("chat", served, str(status)).inc()
        if cost:
            m.cost_usd.labels(served).inc(cost)
        if ttfb_s is not None:
            m.upstream_ttfb.labels(served).observe(ttfb_s)
        if not from_cache and served != self.chosen:
            m.fallbacks.labels(self.chosen, served).inc()
        m.request_duration.labels("chat").observe(time.perf_counter() - self.started)
        self.log_line(served, cost, how=how, status=status)

    def log_line(self, served: str, cost: float, *, how: str = "", status: int = 200) -> None:
        """The one server log line of an answered request: id, model, latency, cost.

        Written once per answered request whatever answered it (upstream, cache,
        stream), so counting lines counts requests; never the prompt. `how` says
        which ("cache hit", "stream"); a stream cut short also gets its status.
        """
        notes = [how] if how else []
        if status != 200:
            notes.append(f"status {status}")
        log.info("request %s -> %s in %.1f ms, $%.6f%s", self.request_id, served,
                 (time.perf_counter() - self.started) * 1000.0, cost,
                 f" ({', '.join(notes)})" if notes else "")

    def failed(self, ctx: AppContext, exc: UpstreamError) -> None:
        """Log and time a chain that failed (the edge answers it with its status)."""
        # The outcome log is the operator's: it gets the URL and detail the client did not.
        ctx.store.log(self.record(ctx, status=exc.status_code, error=exc.log_text(),
                                  fallback_path=[a.to_dict() for a in exc.attempts],
                                  input_tokens=self.conversation.input_tokens))
        ctx.metrics.request_duration.labels("chat").observe(time.perf_counter() - self.started)


def _schema_version(service: RoutingService) -> int | None:
    meta = getattr(service.model, "metadata", None) or {}
    value = meta.get("feature_schema_version") if isinstance(meta, dict) else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def plan_route(ctx: AppContext, ask: Ask, request_id: str, client: str | None,
               started: float, *, latency_header: str | None = None) -> Plan:
    """Decide a `/v1/route` request (never explores). Raises `ApiError`."""
    service = ctx.require_service()
    rule = Rule.of(ask.body, latency_header=latency_header)
    result = rule.route(service, ask.conversation, proxy_only=False)
    ctx.metrics.route_decision.observe(result.decision_s)
    return Plan("route", request_id, client, ask.conversation, started, service=service,
                result=result)


def plan_chat(ctx: AppContext, ask: Ask, request_id: str, client: str | None,
              started: float, *, latency_header: str | None = None) -> Plan:
    """Decide what a chat request will do: its chain, routed or passed through.
    Raises `ApiError` (400, 404, 503)."""
    body = ask.body
    assert isinstance(body, ChatRequest)
    stream = bool(body.stream)
    try:
        bar = parse_router_model(body.model)
    except PolicyError as exc:
        raise ApiError(400, str(exc), param="model", code="invalid_quality_bar") from None
    if bar is False:
        if body.model not in ctx.catalog:
            raise ApiError(404, f"unknown model {body.model!r}: use `router`, `router:<bar>` "
                           f"or one of {', '.join(sorted(ctx.catalog.names))}",
                           param="model", code="model_not_found")
        return Plan("chat", request_id, client, ask.conversation, started, chosen=body.model,
                    chain=ctx.upstream.chain_for(body.model), stream=stream)
    service = ctx.require_service()
    rule = Rule.of(body, bar=bar, latency_header=latency_header)
    result = rule.route(service, ask.conversation, proxy_only=True, rng=ctx.rng)
    ctx.metrics.route_decision.observe(result.decision_s)
    return Plan("chat", request_id, client, ask.conversation, started, service=service,
                result=result,
                chain=ctx.upstream.chain_for(result.model, result.fallbacks), stream=stream)


# --------------------------------------------------------------------------- answer


class Answer(NamedTuple):
    """A successful answer: whole (`body`, JSON) or streamed (`events`, SSE)."""

    headers: dict[str, str]
    body: bytes | None = None
    events: AsyncIterator[bytes] | None = None


def answer_route(ctx: AppContext, plan: Plan) -> Answer:
    """The decision JSON, with every candidate; logged and counted."""
    result, service = plan.result, plan.service
    assert result is not None and service is not None
    candidates = result.candidates_json()
    payload: dict[str, Any] = {
        "request_id": plan.request_id,
        "model": result.model,
        "quality_bar": result.quality_bar,
        "expected_quality": result.expected_quality,
        "expected_cost_usd": result.expected_cost_usd,
    }
    if result.expected_latency_ms is not None:
        payload["expected_latency_ms"] = result.expected_latency_ms
    payload["candidates"] = candidates
    payload["model_version"] = service.version
    if result.min_quality is not None:
        payload["min_quality"] = result.min_quality
    if result.utility_lambda is not None:
        payload["utility_lambda"] = result.utility_lambda
    payload.update(result.latency_json())
    body = _encode_compact(payload).encode()
    elapsed = time.perf_counter() - plan.started
    ctx.store.log(plan.record(ctx, served_model=None, candidates=candidates,
                              input_tokens=plan.conversation.input_tokens,
                              latency_ms=elapsed * 1000.0))
    _count_route(ctx, result.model, elapsed)
    return Answer({"x-request-id": plan.request_id, "x-router-model": result.model}, body)


def _count_route(ctx: AppContext, model: str, elapsed: float) -> None:
    counters = ctx.route_counters
    counter = counters.get(model)
    if counter is None:  # one `labels()` per model, not per request (it locks and hashes)
        counter = counters[model] = ctx.metrics.requests.labels("route", model, "200")
    counter.inc()
    duration = counters.get("")
    if duration is None:
        duration = counters[""] = ctx.metrics.request_duration.labels("route")
    duration.observe(elapsed)


async def answer_chat(ctx: AppContext, plan: Plan, ask: Ask,
                      headers: Mapping[str, str]) -> Answer:
    """Call the upstream along `plan.chain`, log and count; `headers` are the
    request's (for `Cache-Control`). Raises `UpstreamError` when the chain failed
    (already logged and timed; the edge answers it with the error's status)."""
    forward = ask.forward
    assert forward is not None
    if plan.stream:
        headers, events = await open_stream(ctx, plan, forward)
        return Answer(headers, events=events)
    explored = plan.result is not None and plan.result.explored
    # An explored request exists to observe the drawn model: a cached answer would log
    # an outcome it never produced, and storing its answer would replay a random
    # model's answer as the router's.
    # A routed request's answer depends on the model its bar, floor, lambda, limits and
    # allowed models chose, not on "router": key it by that model, so a request with
    # a higher bar never gets the answer a cheaper model gave to a lower one.
    cache_body = (forward if plan.result is None
                  else {**forward, "model": plan.result.policy_model})
    key = None
    if ctx.cache is not None and not explored and should_use_cache(forward, headers):
        key = cache_key(cache_body, namespace=ctx.cache_namespace)
        hit = await _lookup(ctx, cache_body, key)
        if hit is not None:
            return _cached(ctx, plan, hit)
        ctx.metrics.cache_misses.inc()
    try:
        result = await ctx.upstream.complete(forward, plan.chain)
    except UpstreamError as exc:
        plan.failed(ctx, exc)
        raise
    usage = result.usage
    cost = ctx.cost_usd(result.model, usage.prompt_tokens, usage.completion_tokens)
    payload = result.response
    if usage.estimated and "usage" not in payload:
        payload = {**payload, "usage": {"prompt_tokens": usage.prompt_tokens,
                                        "completion_tokens": usage.completion_tokens,
                                        "total_tokens": usage.total_tokens}}
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if key is not None:
        await _store(ctx, plan, cache_body, key, CachedResponse(data, result.model, time.time()))
    ctx.store.log(plan.record(
        ctx, served_model=result.model, fallback_path=[a.to_dict() for a in result.attempts],
        input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
        cost_usd=cost, ttfb_ms=result.ttfb_s * 1000.0, status=200))
    plan.served(ctx, result.model, 200, cost, result.ttfb_s)
    return Answer({"x-router-model": result.model, "x-request-id": plan.request_id}, data)


def _cached(ctx: AppContext, plan: Plan, hit: CacheHit) -> Answer:
    served = hit.response.served_model
    ctx.metrics.cache_hits.labels(hit.kind).inc()
    ctx.store.log(plan.record(ctx, served_model=served, cache_hit=True,
                              input_tokens=plan.conversation.input_tokens,
                              output_tokens=0, cost_usd=0.0, status=200))
    plan.served(ctx, served, 200, 0.0, None, from_cache=True, how=f"cache hit, {hit.kind}")
    return Answer({"x-router-model": served, "x-request-id": plan.request_id,
                   "x-router-cache": hit.kind}, hit.response.body)


async def _lookup(ctx: AppContext, body: dict[str, Any], key: str | None) -> CacheHit | None:
    if ctx.semantic is not None:
        return await ctx.semantic.lookup(body)
    found = await ctx.cache.get(key) if key is not None else None
    return CacheHit(found, "exact") if found is not None else None


async def _store(ctx: AppContext, plan: Plan, body: dict[str, Any], key: str,
                 stored: CachedResponse) -> None:
    try:
        await (ctx.semantic.store(body, stored) if ctx.semantic is not None
               else ctx.cache.set(key, stored))
    except Exception:  # the cache must never fail a request that was answered
        log.exception("cache store failed for request %s", plan.request_id)
