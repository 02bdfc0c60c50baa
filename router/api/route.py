"""`POST /v1/route`: which model the router would pick, and why (every candidate)."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Request, Response

from router.api.schemas import ERROR_RESPONSES, RouteRequest
from router.conversation import Conversation, parse_conversation
from router.deps import ApiError, AppContext, ClientKey, Ctx, new_request_id
from router.errors import PolicyError
from router.outcome_log import RequestRecord
from router.policy import validate_bar, validate_lambda
from router.service import RouteResult, RoutingService

__all__ = ["router", "checked_conversation", "route_record", "route_response"]

router = APIRouter(tags=["route"], responses=ERROR_RESPONSES)

# Built once: `json.dumps` with any non-default option builds a new encoder per call.
_encode_compact = json.JSONEncoder(separators=(",", ":")).encode
_encode_text = json.JSONEncoder(ensure_ascii=False).encode


def checked_conversation(ctx: AppContext, messages: object) -> Conversation:
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


def route_record(ctx: AppContext, service: RoutingService, request_id: str,
                 client: str | None, conversation: Conversation, result: RouteResult,
                 candidates: list[dict[str, object]] | None = None,
                 **fields: object) -> RequestRecord:
    """The outcome-log row shared by /v1/route and routed chat requests.

    `candidates` is `result.candidates_json()` when the caller already built it.
    """
    return RequestRecord(
        request_id=request_id,
        client_key_id=client,
        conversation_hash=conversation.digest,
        conversation=None if ctx.settings.privacy_mode else _encode_text(
            conversation.to_messages()),
        feature_schema_version=_schema_version(service),
        model_version=service.version,
        quality_bar=result.quality_bar,
        utility_lambda=result.utility_lambda,
        candidates=result.candidates_json() if candidates is None else candidates,
        chosen_model=result.model,
        propensity=result.propensity,
        explored=result.explored,
        **fields,  # type: ignore[arg-type]
    )


def _schema_version(service: RoutingService) -> int | None:
    meta = getattr(service.model, "metadata", None) or {}
    value = meta.get("feature_schema_version") if isinstance(meta, dict) else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def checked_rule(bar: float | None, min_quality: float | None, utility_lambda: float | None
                 ) -> tuple[float | None, float | None, float | None]:
    """The request's (quality_bar, min_quality, utility_lambda), at most one set, or an
    OpenAI-shaped 400 naming the field."""
    given = [name for name, value in (("quality_bar", bar), ("min_quality", min_quality),
                                      ("utility_lambda", utility_lambda)) if value is not None]
    if len(given) > 1:
        raise ApiError(400, f"give one of quality_bar, min_quality and utility_lambda, "
                       f"not {' and '.join(given)}", param=given[-1],
                       code=f"invalid_{given[-1]}")
    try:
        return (validate_bar(bar), validate_bar(min_quality, name="min_quality"),
                validate_lambda(utility_lambda))
    except PolicyError as exc:
        raise ApiError(400, str(exc), param=given[0], code=f"invalid_{given[0]}") from None


def route_response(ctx: AppContext, client: str | None, messages: object,
                   quality_bar: float | None, min_quality: float | None,
                   utility_lambda: float | None, max_cost_usd: float | None,
                   models: list[str] | None, started: float) -> tuple[bytes, str, str]:
    """Decide, log and count one /v1/route request: (JSON body, request id, model).

    Shared by the FastAPI handler and the lean ASGI path (`router.api.fast_path`).
    Every `ApiError` is raised before anything is logged or counted, so a caller
    may retry the request elsewhere after one without double-counting it.
    """
    conversation = checked_conversation(ctx, messages)
    service = ctx.require_service()
    bar, floor, lam = checked_rule(quality_bar, min_quality, utility_lambda)
    try:
        result = service.route(conversation, bar=bar, min_quality=floor, utility_lambda=lam,
                               max_cost_usd=max_cost_usd, models=models)
    except PolicyError as exc:
        raise ApiError(400, str(exc), param="models", code="invalid_models") from None
    request_id = new_request_id()
    candidates = result.candidates_json()
    payload = {
        "request_id": request_id,
        "model": result.model,
        "quality_bar": result.quality_bar,
        "expected_quality": result.expected_quality,
        "expected_cost_usd": result.expected_cost_usd,
        "candidates": candidates,
        "model_version": service.version,
    }
    if result.min_quality is not None:
        payload["min_quality"] = result.min_quality
    if result.utility_lambda is not None:
        payload["utility_lambda"] = result.utility_lambda
    body = _encode_compact(payload).encode()
    elapsed = time.perf_counter() - started
    ctx.store.log(route_record(ctx, service, request_id, client, conversation, result,
                               served_model=None, endpoint="route",
                               input_tokens=conversation.input_tokens,
                               latency_ms=elapsed * 1000.0, candidates=candidates))
    metrics = ctx.metrics
    metrics.route_decision.observe(result.decision_s)
    counter = ctx.route_counters.get(result.model)
    if counter is None:  # one `labels()` per model, not per request (it locks and hashes)
        counter = ctx.route_counters[result.model] = metrics.requests.labels(
            "route", result.model, "200")
    counter.inc()
    duration = ctx.route_counters.get("")
    if duration is None:
        duration = ctx.route_counters[""] = metrics.request_duration.labels("route")
    duration.observe(elapsed)
    return body, request_id, result.model


@router.post("/v1/route")
async def route(body: RouteRequest, request: Request, ctx: Ctx, client: ClientKey) -> Response:
    request.state.endpoint = "route"
    content, request_id, model = route_response(
        ctx, client, body.messages, body.quality_bar, body.min_quality, body.utility_lambda,
        body.max_cost_usd, body.models, time.perf_counter())
    return Response(content, media_type="application/json",
                    headers={"x-request-id": request_id, "x-router-model": model})
