"""The decision rule, as pure functions of predictions and request limits.

Threshold mode (default): among allowed models whose expected quality meets the
bar, the one with the lowest expected cost; if none meets it, the one with the
highest expected quality (ties: cheaper). Utility mode: argmax q - lambda * c.
`max_cost_usd` removes candidates whose expected cost is above it; if it removes
all of them the cheapest allowed model is chosen, because answering over budget
is worse than answering with a weaker model.

`choose` works on whole matrices (evaluation sweeps millions of decisions);
`decide` is the per-request view with every candidate, built on `choose` so the
rule lives in one place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.errors import PolicyError

__all__ = ["Candidate", "Decision", "choose", "decide", "validate_bar", "validate_lambda"]


@dataclass(frozen=True, slots=True)
class Candidate:
    model: str
    expected_quality: float
    expected_cost_usd: float


@dataclass(frozen=True, slots=True)
class Decision:
    model: str
    quality_bar: float | None
    expected_quality: float
    expected_cost_usd: float
    candidates: tuple[Candidate, ...]
    met_bar: bool


def validate_bar(bar: float | None, *, name: str = "quality_bar") -> float | None:
    if bar is None:
        return None
    if isinstance(bar, bool) or not isinstance(bar, int | float) or not 0.0 <= bar <= 1.0:
        raise PolicyError(f"{name} must be a number in [0, 1], got {bar!r}")
    return float(bar)


def validate_lambda(value: float | None, *, name: str = "utility_lambda") -> float | None:
    """lambda is quality per USD: a finite number >= 0 (0 = best quality at any price)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        math.isfinite(value) and value >= 0
    ):
        raise PolicyError(f"{name} must be a finite number >= 0 (quality per USD), "
                          f"got {value!r}")
    return float(value)


def choose(
    quality: np.ndarray,
    cost: np.ndarray,
    *,
    bar: float | np.ndarray | None = None,
    utility_lambda: float | None = None,
    max_cost_usd: float | None = None,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Index of the chosen model for each row of `quality`/`cost` (shape n x m).

    `bar` may be a scalar or one value per row; `allowed` is a boolean mask over
    the m models (shape m or n x m). Exactly one of `bar` and `utility_lambda`.
    """
    quality = np.asarray(quality, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if quality.ndim != 2 or quality.shape != cost.shape:
        raise ValueError(f"quality and cost must be n x m matrices of one shape, "
                         f"got {quality.shape} and {cost.shape}")
    if (bar is None) == (utility_lambda is None):
        raise ValueError("pass exactly one of bar and utility_lambda")
    usable = np.ones(quality.shape, dtype=bool)
    if allowed is not None:
        usable &= np.broadcast_to(np.asarray(allowed, dtype=bool), quality.shape)
        if not usable.any(axis=1).all():
            raise PolicyError("no allowed model left to choose from")
    if max_cost_usd is not None:
        affordable = usable & (cost <= max_cost_usd)
        # Rows where nothing is affordable keep the cheapest usable model only.
        cheapest = np.argmin(np.where(usable, cost, np.inf), axis=1)
        none_left = ~affordable.any(axis=1)
        affordable[none_left, cheapest[none_left]] = True
        usable = affordable

    if utility_lambda is not None:
        score = np.where(usable, quality - utility_lambda * cost, -np.inf)
        # Ties go to the cheaper model: subtract a vanishing multiple of cost rank.
        return _argmax_cheapest(score, cost)

    bar_col = np.asarray(bar, dtype=np.float64).reshape(-1, 1) if np.ndim(bar) else bar
    meets = usable & (quality >= bar_col)
    cheapest_meeting = np.argmin(np.where(meets, cost, np.inf), axis=1)
    best = _argmax_cheapest(np.where(usable, quality, -np.inf), cost)
    return np.where(meets.any(axis=1), cheapest_meeting, best)


def _argmax_cheapest(score: np.ndarray, cost: np.ndarray) -> np.ndarray:
    top = score.max(axis=1, keepdims=True)
    is_top = score >= top
    return np.argmin(np.where(is_top, cost, np.inf), axis=1)


def decide(
    models: Sequence[str],
    quality: Sequence[float],
    cost: Sequence[float],
    *,
    bar: float | None = None,
    utility_lambda: float | None = None,
    max_cost_usd: float | None = None,
    allowed_models: Sequence[str] | None = None,
) -> Decision:
    """One request's decision, with every candidate so a caller can see why."""
    if not models:
        raise PolicyError("no models to choose from")
    validate_bar(bar)
    validate_lambda(utility_lambda)
    if max_cost_usd is not None and not max_cost_usd > 0:
        raise PolicyError(f"max_cost_usd must be positive, got {max_cost_usd!r}")
    allowed = None
    if allowed_models is not None:
        unknown = sorted(set(allowed_models) - set(models))
        if unknown:
            raise PolicyError(f"unknown model(s) in models: {', '.join(unknown)}",
                              hint=f"known models: {', '.join(models)}")
        wanted = set(allowed_models)
        allowed = np.array([m in wanted for m in models])
    q = np.asarray(quality, dtype=np.float64).reshape(1, -1)
    c = np.asarray(cost, dtype=np.float64).reshape(1, -1)
    index = int(choose(q, c, bar=bar, utility_lambda=utility_lambda,
                       max_cost_usd=max_cost_usd, allowed=allowed)[0])
    candidates = tuple(
        Candidate(m, float(q[0, i]), float(c[0, i]))
        for i, m in enumerate(models)
        if allowed is None or allowed[i]
    )
    chosen_q = float(q[0, index])
    return Decision(
        model=models[index],
        quality_bar=bar,
        expected_quality=chosen_q,
        expected_cost_usd=float(c[0, index]),
        candidates=candidates,
        met_bar=bar is None or chosen_q >= bar,
    )
