"""What a routing decision gives the endpoints: `RouteResult`, and its JSON parts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from router.policy import Candidate

__all__ = ["RouteResult"]


@dataclass(frozen=True, slots=True)
class RouteResult:
    """A decision for one request and everything the log needs about it."""

    model: str
    policy_model: str
    quality_bar: float | None
    expected_quality: float
    expected_cost_usd: float
    candidates: tuple[Candidate, ...]
    propensity: float
    explored: bool
    fallbacks: tuple[str, ...]
    decision_s: float
    utility_lambda: float | None = None
    min_quality: float | None = None
    #: Expected whole-answer latency of the served model (None: no latency prediction).
    expected_latency_ms: float | None = None
    max_latency_ms: float | None = None
    #: False when no model was expected within `max_latency_ms` and the fastest was chosen.
    latency_limit_met: bool = True
    latency_reason: str | None = None

    def candidates_json(self) -> list[dict[str, Any]]:
        return [{"model": c.model, "expected_quality": c.expected_quality,
                 "expected_cost_usd": c.expected_cost_usd,
                 "expected_latency_ms": c.expected_latency_ms} for c in self.candidates]

    def latency_json(self) -> dict[str, Any]:
        """The decision JSON's latency part: empty without a limit; else the limit,
        whether it was met and, when it was not, why the fastest model was chosen."""
        if self.max_latency_ms is None:
            return {}
        out: dict[str, Any] = {"max_latency_ms": self.max_latency_ms,
                               "latency_limit_met": self.latency_limit_met}
        if self.latency_reason is not None:
            out["latency_reason"] = self.latency_reason
        return out
