"""The rule on whole matrices (`choose`: evaluation sweeps millions of decisions) and
what a quality bar means (`BarCalibration`, fitted with `choose`, so the rule and
its calibration stay one implementation)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.errors import ArtifactError, PolicyError
from router.policy._limits import within_latency

__all__ = ["NEGLIGIBLE_GAIN_RATE", "BarCalibration", "choose", "lambda_grid", "resolve_lambda"]

# A step up the frontier that gains less quality per USD than this share of the
# frontier's average rate is "a negligible gain at a large price", never bought.
NEGLIGIBLE_GAIN_RATE = 0.05
# Quality targets are compared with this slack, so a bar equal to a calibration
# point's quality up to float rounding maps to that point.
_EPS = 1e-9


def lambda_grid(cost: np.ndarray, n: int = 60) -> list[float]:
    """0 (best quality at any price) then a geometric grid spanning the cost scale.

    `cost` is cost per row and model (rows x models; NaN where unknown); each
    model's scale is its mean over the rows it has. lambda is quality per USD: from
    1e-3 / (dearest mean cost), where cost barely matters, to 10 / (cheapest mean
    cost), where only cost does. The grid depends on the costs only, so every
    model swept on the same data gets the same lambdas.
    """
    cost = np.asarray(cost, dtype=np.float64)
    finite = np.isfinite(cost)
    counts = finite.sum(axis=0)
    # sum / count rather than np.nanmean: a model without any value is skipped,
    # not a RuntimeWarning (and on complete data it equals cost.mean(axis=0)).
    mean_cost = np.where(finite, cost, 0.0).sum(axis=0)[counts > 0] / counts[counts > 0]
    positive = mean_cost[mean_cost > 0]
    if positive.size == 0:
        return [0.0]
    low, high = 1e-3 / positive.max(), 10.0 / positive.min()
    return [0.0, *np.geomspace(low, high, n).tolist()]


@dataclass(frozen=True)
class BarCalibration:
    """What a quality bar means: the map from target mean quality b to lambda(b).

    `quality`, `cost_usd` and `lambdas` are the Pareto-efficient operating points
    of the utility rule on the calibration prompts, cheapest first: mean quality
    and mean cost both strictly increase along them. A bar takes the first point
    whose quality reaches it; a bar above every point takes the last (the best
    mean quality seen there, not the dearest model). `source` says which prompts
    and which outcomes the points were measured on.
    """

    quality: tuple[float, ...]
    cost_usd: tuple[float, ...]
    lambdas: tuple[float, ...]
    source: str = ""
    n_prompts: int = 0
    # Mean realised minus predicted quality on the calibration prompts: added to
    # every predicted mean the calibration reports.
    bias: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.lambdas)
        if n == 0 or len(self.quality) != n or len(self.cost_usd) != n:
            raise ArtifactError("bar calibration needs one quality, cost and lambda per point")
        q, c = np.asarray(self.quality), np.asarray(self.cost_usd)
        if (np.diff(q) <= 0).any() or (np.diff(c) < 0).any():
            raise ArtifactError("bar calibration points must rise in quality and cost")
        if not all(math.isfinite(v) and v >= 0 for v in self.lambdas):
            raise ArtifactError("bar calibration lambdas must be finite and >= 0")

    @classmethod
    def fit(cls, pred_quality: np.ndarray, pred_cost: np.ndarray,
            quality: np.ndarray | None = None, cost: np.ndarray | None = None, *,
            lambdas: Sequence[float] | None = None, source: str = "") -> BarCalibration:
        """Calibrate on (n, m) predictions of prompts the model did not train on.

        Each lambda's point is the mean predicted quality of its decisions, moved
        by the model's mean error where `quality` is known (finite), and their mean
        cost, realised where `cost` is known. Measured per operating point instead,
        a few hundred 0/1 outcomes reorder the points by noise: 5-fold CV put this
        ahead on every dataset in bench/quality.py (arena_bench_v1 AIQ 0.7970 ->
        0.8019, GSM8K 0.7445 -> 0.7477, demo 0.9254 -> 0.9296). Logged traffic
        (one model per prompt) works the same way. The dearest points that buy a
        negligible gain are dropped (`NEGLIGIBLE_GAIN_RATE`). `lambdas` defaults to
        the lambdas where the decisions switch.
        """
        pq = np.asarray(pred_quality, dtype=np.float64)
        pc = np.asarray(pred_cost, dtype=np.float64)
        if pq.ndim != 2 or pq.shape != pc.shape or pq.shape[0] == 0:
            raise ValueError(f"predictions must be non-empty n x m matrices of one shape, "
                             f"got {pq.shape} and {pc.shape}")
        ac = pc if cost is None else np.where(np.isfinite(cost), cost, pc)
        # The model's mean calibration error where outcomes are known: one number,
        # so a few hundred 0/1 outcomes correct the level of the predicted means
        # without their noise reordering the operating points.
        known = np.zeros(pq.shape, dtype=bool) if quality is None else np.isfinite(quality)
        bias = float((np.asarray(quality)[known] - pq[known]).mean()) if known.any() else 0.0
        grid = sorted(set(_switch_points(pq, pc) if lambdas is None else map(float, lambdas)))
        rows = np.arange(pq.shape[0])
        points = []
        for lam in grid:
            idx = choose(pq, pc, utility_lambda=lam)
            points.append((float(ac[rows, idx].mean()), float(pq[rows, idx].mean()) + bias, lam))
        # Cheapest first; among equal costs the best quality, then the larger lambda
        # (the cheaper rule on unseen prompts).
        points.sort(key=lambda p: (p[0], -p[1], -p[2]))
        frontier: list[tuple[float, float, float]] = []
        for c, q, lam in points:
            if not frontier or q > frontier[-1][1] + _EPS:
                frontier.append((c, q, lam))
        frontier = _without_negligible_tail(frontier)
        return cls(quality=tuple(p[1] for p in frontier),
                   cost_usd=tuple(p[0] for p in frontier),
                   lambdas=tuple(p[2] for p in frontier), source=source,
                   n_prompts=int(pq.shape[0]), bias=bias)

    def lambda_for(self, bar: float) -> float:
        """lambda(bar): the least-cost calibration point reaching mean quality `bar`."""
        return float(self.lambdas_for(np.asarray([bar]))[0])

    def lambdas_for(self, bars: np.ndarray) -> np.ndarray:
        """lambda(bar) for an array of bars (one per request, or a sweep)."""
        i = np.searchsorted(np.asarray(self.quality), np.asarray(bars, dtype=np.float64) - _EPS)
        return np.asarray(self.lambdas)[np.minimum(i, len(self.lambdas) - 1)]

    def expected_at(self, bar: float) -> tuple[float, float]:
        """(mean quality, mean cost) the calibration prompts got at `bar`."""
        i = min(int(np.searchsorted(np.asarray(self.quality), bar - _EPS)),
                len(self.lambdas) - 1)
        return self.quality[i], self.cost_usd[i]

    def to_dict(self) -> dict[str, Any]:
        return {"quality": list(self.quality), "cost_usd": list(self.cost_usd),
                "lambdas": list(self.lambdas), "source": self.source,
                "n_prompts": self.n_prompts, "bias": self.bias}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> BarCalibration | None:
        """The calibration an artifact's `meta.json` stores, or None if it has none."""
        data = (metadata or {}).get("bar_calibration")
        return None if data is None else cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BarCalibration:
        try:
            return cls(quality=tuple(float(v) for v in data["quality"]),
                       cost_usd=tuple(float(v) for v in data["cost_usd"]),
                       lambdas=tuple(float(v) for v in data["lambdas"]),
                       source=str(data.get("source", "")),
                       n_prompts=int(data.get("n_prompts", 0)),
                       bias=float(data.get("bias", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"bar calibration is malformed: {exc}",
                                hint="retrain the model (router train)") from None


def _without_negligible_tail(frontier: list[tuple[float, float, float]]
                             ) -> list[tuple[float, float, float]]:
    """The frontier without its dearest points that buy a negligible gain: each
    dropped step gains less than `NEGLIGIBLE_GAIN_RATE` of the frontier's average
    quality per USD. Whatever the bar, the router then never pays a large price
    for a prediction that barely moves."""
    if len(frontier) < 3:
        return frontier
    (c0, q0, _), (c1, q1, _) = frontier[0], frontier[-1]
    if c1 <= c0:
        return frontier
    floor = NEGLIGIBLE_GAIN_RATE * (q1 - q0) / (c1 - c0)
    kept = list(frontier)
    while len(kept) > 2:
        (ca, qa, _), (cb, qb, _) = kept[-2], kept[-1]
        if cb > ca and (qb - qa) / (cb - ca) >= floor:
            break
        kept.pop()
    return kept


def _switch_points(quality: np.ndarray, cost: np.ndarray, n: int = 400) -> list[float]:
    """Lambdas where decisions change, for calibration: `n` quantiles of the per-row
    ratios dq / dc between a dearer, better model and a cheaper one (the lambda at
    which a row switches between them), plus a coarse `lambda_grid`. Dense where
    the traffic's decisions actually move, so the frontier has no coarse steps."""
    rows = quality.shape[0]
    take = np.arange(rows) if rows * quality.shape[1] ** 2 <= 4_000_000 else \
        np.linspace(0, rows - 1, 4_000_000 // quality.shape[1] ** 2).astype(int)
    dq = quality[take, :, None] - quality[take, None, :]
    dc = cost[take, :, None] - cost[take, None, :]
    switching = (dq > 0) & (dc > 0)
    ratios = dq[switching] / dc[switching]
    grid = lambda_grid(cost, 60)
    if ratios.size:
        grid += np.quantile(ratios, np.linspace(0.0, 1.0, n)).tolist()
    return grid


def resolve_lambda(bar: float | np.ndarray | None, utility_lambda: float | None,
                   calibration: BarCalibration | None) -> float | np.ndarray | None:
    """The utility weight a request runs with: explicit, or lambda(bar); None if neither."""
    if utility_lambda is not None:
        return utility_lambda
    if bar is None:
        return None
    if calibration is None:
        raise PolicyError("this model has no bar calibration, so a quality bar has no meaning",
                          hint="retrain it with router train (held-out prompts calibrate "
                               "the bar), or pass min_quality or utility_lambda")
    if np.ndim(bar):
        return calibration.lambdas_for(np.asarray(bar))
    return calibration.lambda_for(float(bar))


def choose(
    quality: np.ndarray,
    cost: np.ndarray,
    *,
    bar: float | np.ndarray | None = None,
    calibration: BarCalibration | None = None,
    min_quality: float | np.ndarray | None = None,
    utility_lambda: float | np.ndarray | None = None,
    max_cost_usd: float | None = None,
    allowed: np.ndarray | None = None,
    latency_ms: np.ndarray | None = None,
    max_latency_ms: float | None = None,
) -> np.ndarray:
    """Index of the chosen model for each row of `quality`/`cost` (shape n x m).

    Exactly one of `bar` (needs `calibration`), `min_quality` and
    `utility_lambda`; each may be a scalar or one value per row. `allowed` is a
    boolean mask over the m models (shape m or n x m). `max_latency_ms` needs
    `latency_ms`, the expected latencies (n x m).
    """
    quality = np.asarray(quality, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if quality.ndim != 2 or quality.shape != cost.shape:
        raise ValueError(f"quality and cost must be n x m matrices of one shape, "
                         f"got {quality.shape} and {cost.shape}")
    if sum(v is not None for v in (bar, min_quality, utility_lambda)) != 1:
        raise ValueError("pass exactly one of bar, min_quality and utility_lambda")
    usable = np.ones(quality.shape, dtype=bool)
    if allowed is not None:
        usable &= np.broadcast_to(np.asarray(allowed, dtype=bool), quality.shape)
        if not usable.any(axis=1).all():
            raise PolicyError("no allowed model left to choose from")
    if max_latency_ms is not None:
        if latency_ms is None:
            raise ValueError("max_latency_ms needs latency_ms, the expected latencies")
        usable, _ = within_latency(np.broadcast_to(latency_ms, quality.shape),
                                   max_latency_ms, usable)
    if max_cost_usd is not None:
        affordable = usable & (cost <= max_cost_usd)
        # Rows where nothing is affordable keep the cheapest usable model only.
        cheapest = np.argmin(np.where(usable, cost, np.inf), axis=1)
        none_left = ~affordable.any(axis=1)
        affordable[none_left, cheapest[none_left]] = True
        usable = affordable

    if min_quality is None:
        lam = resolve_lambda(bar, utility_lambda, calibration)
        lam_col = np.asarray(lam, dtype=np.float64).reshape(-1, 1) if np.ndim(lam) else lam
        score = np.where(usable, quality - lam_col * cost, -np.inf)
        return _argmax_cheapest(score, cost)

    floor = (np.asarray(min_quality, dtype=np.float64).reshape(-1, 1)
             if np.ndim(min_quality) else min_quality)
    meets = usable & (quality >= floor)
    cheapest_meeting = np.argmin(np.where(meets, cost, np.inf), axis=1)
    best = _argmax_cheapest(np.where(usable, quality, -np.inf), cost)
    return np.where(meets.any(axis=1), cheapest_meeting, best)


def _argmax_cheapest(score: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Argmax per row; ties go to the cheaper model."""
    top = score.max(axis=1, keepdims=True)
    is_top = score >= top
    return np.argmin(np.where(is_top, cost, np.inf), axis=1)
