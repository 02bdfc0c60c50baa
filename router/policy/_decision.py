"""One request's decision (`decide`), with every candidate so a caller can see why;
built on `choose`, so the rule lives in one place."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.errors import PolicyError
from router.policy._limits import (
    NO_LATENCY,
    NO_LATENCY_HINT,
    validate_bar,
    validate_lambda,
    validate_max_latency,
    within_latency,
)
from router.policy._rule import BarCalibration, choose, resolve_lambda

__all__ = ["Candidate", "Decision", "decide"]


@dataclass(frozen=True, slots=True)
class Candidate:
    model: str
    expected_quality: float
    expected_cost_usd: float
    #: Expected whole-answer latency; None when the model predicts no latency.
    expected_latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    model: str
    quality_bar: float | None
    expected_quality: float
    expected_cost_usd: float
    candidates: tuple[Candidate, ...]
    met_bar: bool
    # The utility weight the decision used (explicit, or lambda(bar)); None for a floor.
    utility_lambda: float | None = None
    min_quality: float | None = None
    max_latency_ms: float | None = None
    #: False when no allowed model was expected within `max_latency_ms`, so the
    #: fastest was chosen regardless of quality and cost.
    latency_limit_met: bool = True

    @property
    def latency_reason(self) -> str | None:
        """Why the latency limit did not decide as asked (None when it did, or none was set)."""
        if self.latency_limit_met:
            return None
        chosen = next((c for c in self.candidates if c.model == self.model), None)
        expected = chosen.expected_latency_ms if chosen is not None else None
        return (f"no model is expected to answer within max_latency_ms={self.max_latency_ms:g}; "
                f"chose the fastest, {self.model}"
                + (f" (expected {expected:.0f} ms)" if expected is not None else ""))


def decide(
    models: Sequence[str],
    quality: Sequence[float],
    cost: Sequence[float],
    *,
    bar: float | None = None,
    calibration: BarCalibration | None = None,
    min_quality: float | None = None,
    utility_lambda: float | None = None,
    max_cost_usd: float | None = None,
    allowed_models: Sequence[str] | None = None,
    latency_ms: Sequence[float] | None = None,
    max_latency_ms: float | None = None,
) -> Decision:
    """One request's decision, with every candidate so a caller can see why.

    `latency_ms` is each model's expected whole-answer latency (NaN where a
    model has none); `max_latency_ms` drops the models expected over it before
    the quality/cost rule, and when none is left the decision takes the fastest
    and says so (`latency_limit_met=False`, `latency_reason`).
    """
    _check_request(models, bar, min_quality, utility_lambda, max_cost_usd, max_latency_ms,
                   latency_ms is not None)
    shown = _allowed_mask(models, allowed_models)  # candidates: every allowed model
    lam = resolve_lambda(bar, utility_lambda, calibration)
    q = np.asarray(quality, dtype=np.float64).reshape(1, -1)
    c = np.asarray(cost, dtype=np.float64).reshape(1, -1)
    lat = None if latency_ms is None else np.asarray(latency_ms, dtype=np.float64).reshape(1, -1)
    allowed, limit_met = shown, True
    if max_latency_ms is not None:
        allowed, limit_met = _within_limit(lat[0], max_latency_ms, shown)
    index = int(choose(q, c, min_quality=min_quality, utility_lambda=lam,
                       max_cost_usd=max_cost_usd, allowed=allowed)[0])
    candidates = tuple(
        Candidate(m, float(q[0, i]), float(c[0, i]),
                  None if lat is None or not math.isfinite(lat[0, i]) else float(lat[0, i]))
        for i, m in enumerate(models)
        if shown is None or shown[i]
    )
    chosen_q = float(q[0, index])
    return Decision(
        model=models[index],
        quality_bar=bar,
        expected_quality=chosen_q,
        expected_cost_usd=float(c[0, index]),
        candidates=candidates,
        met_bar=min_quality is None or chosen_q >= min_quality,
        utility_lambda=None if lam is None else float(lam),
        min_quality=min_quality,
        max_latency_ms=max_latency_ms,
        latency_limit_met=limit_met,
    )


def _check_request(models: Sequence[str], bar: float | None, min_quality: float | None,
                   utility_lambda: float | None, max_cost_usd: float | None,
                   max_latency_ms: float | None, has_latency: bool) -> None:
    """`PolicyError` for a request the rule cannot answer as asked."""
    if not models:
        raise PolicyError("no models to choose from")
    validate_bar(bar)
    validate_bar(min_quality, name="min_quality")
    validate_lambda(utility_lambda)
    if sum(v is not None for v in (bar, min_quality, utility_lambda)) != 1:
        raise PolicyError("give one of quality_bar, min_quality and utility_lambda")
    if max_cost_usd is not None and not max_cost_usd > 0:
        raise PolicyError(f"max_cost_usd must be positive, got {max_cost_usd!r}")
    validate_max_latency(max_latency_ms)
    if max_latency_ms is not None and not has_latency:
        raise PolicyError(NO_LATENCY, hint=NO_LATENCY_HINT)


def _allowed_mask(models: Sequence[str],
                  allowed_models: Sequence[str] | None) -> np.ndarray | None:
    """Which of `models` the request allows (None: all); unknown names refused."""
    if allowed_models is None:
        return None
    unknown = sorted(set(allowed_models) - set(models))
    if unknown:
        raise PolicyError(f"unknown model(s) in models: {', '.join(unknown)}",
                          hint=f"known models: {', '.join(models)}")
    wanted = set(allowed_models)
    return np.array([m in wanted for m in models])


def _within_limit(latency: np.ndarray, max_latency_ms: float,
                  allowed: np.ndarray | None) -> tuple[np.ndarray, bool]:
    """(the models the rule may still choose, whether any was within the limit).

    The filter `choose` would apply, done here once, so the decision can say when
    it left only the fastest model. A model without a latency estimate (NaN) is
    never within a limit.
    """
    timed = np.isfinite(latency) & (True if allowed is None else allowed)
    if not timed.any():
        raise PolicyError(NO_LATENCY, hint=NO_LATENCY_HINT)
    within, none_within = within_latency(latency.reshape(1, -1), max_latency_ms,
                                         timed.reshape(1, -1))
    return within[0], not bool(none_within[0])
