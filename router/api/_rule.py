"""A routed request's rule, validated once at the HTTP edge.

`Rule.of` reads the rule fields of a `/v1/route` or chat body (and a bar given in
the model name, and the `x-router-max-latency-ms` header) and checks them with
`router.policy`'s validators, so HTTP and the CLI refuse a value with the same
words; a bad one is a 400 naming the field or header. `Rule.route` hands the
checked rule to `RoutingService.route`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.api._schemas import LATENCY_HEADER, ChatRequest, RouteRequest
from router.conversation import Conversation
from router.deps import ApiError
from router.errors import PolicyError
from router.policy import validate_bar, validate_lambda, validate_max_latency
from router.service import RouteResult, RoutingService

__all__ = ["Rule"]


@dataclass(frozen=True, slots=True)
class Rule:
    """What a routed request asks for, validated once: at most one of a bar, a floor
    and a lambda, and the cost and latency limits and allowed models."""

    quality_bar: float | None = None
    min_quality: float | None = None
    utility_lambda: float | None = None
    max_cost_usd: float | None = None
    max_latency_ms: float | None = None
    models: tuple[str, ...] | None = None
    #: Where the latency limit came from (the body field, or the header), for errors.
    latency_param: str = "max_latency_ms"

    @classmethod
    def of(cls, body: RouteRequest | ChatRequest, *, bar: float | None = None,
           latency_header: str | None = None) -> Rule:
        """The rule of `body`; `bar` is one given in the model name (`router:0.8`),
        `latency_header` the `x-router-max-latency-ms` value (the body field wins;
        a malformed header is refused either way).
        Raises `ApiError` (400) naming the field or header."""
        bar = body.quality_bar if bar is None else bar
        given = [name for name, value in (("quality_bar", bar),
                                          ("min_quality", body.min_quality),
                                          ("utility_lambda", body.utility_lambda))
                 if value is not None]
        if len(given) > 1:
            raise ApiError(400, f"give one of quality_bar, min_quality and utility_lambda, "
                           f"not {' and '.join(given)}", param=given[-1],
                           code=f"invalid_{given[-1]}")
        try:
            rule = (validate_bar(bar), validate_bar(body.min_quality, name="min_quality"),
                    validate_lambda(body.utility_lambda))
        except PolicyError as exc:
            raise ApiError(400, str(exc), param=given[0], code=f"invalid_{given[0]}") from None
        # A malformed header is refused even when the body's field wins over it: the
        # client sent something wrong, and would not learn it otherwise.
        header = _latency(_number(latency_header), LATENCY_HEADER) if latency_header is not None \
            else None
        latency, param = _latency(body.max_latency_ms, "max_latency_ms"), "max_latency_ms"
        if latency is None and header is not None:
            latency, param = header, LATENCY_HEADER
        return cls(*rule, max_cost_usd=body.max_cost_usd, max_latency_ms=latency,
                   models=tuple(body.models) if body.models is not None else None,
                   latency_param=param)

    def route(self, service: RoutingService, conversation: Conversation, *,
              proxy_only: bool, rng: Any = None) -> RouteResult:
        """`service.route` under this rule; its refusals are 400s naming the field."""
        try:
            return service.route(conversation, bar=self.quality_bar,
                                 min_quality=self.min_quality,
                                 utility_lambda=self.utility_lambda,
                                 max_cost_usd=self.max_cost_usd,
                                 max_latency_ms=self.max_latency_ms, models=self.models,
                                 rng=rng, proxy_only=proxy_only)
        except PolicyError as exc:
            # Every value was checked above: what the service can still refuse is the
            # allowed models, or a latency limit the served model has no prediction for.
            param = (self.latency_param if self.max_latency_ms is not None
                     and "latency" in exc.message else "models")
            code = "invalid_max_latency_ms" if param != "models" else "invalid_models"
            raise ApiError(400, str(exc), param=param, code=code) from None


def _latency(value: float | str | None, param: str) -> float | None:
    try:
        return validate_max_latency(value, name=param)  # type: ignore[arg-type]
    except PolicyError as exc:
        raise ApiError(400, str(exc), param=param, code="invalid_max_latency_ms") from None


def _number(text: str) -> float | str:
    """A header's number, or the text itself (which the validator then names)."""
    try:
        return float(text)
    except ValueError:
        return text
