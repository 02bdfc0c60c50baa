"""Routing metrics: AIQ, the Zero router, the oracle, PGR/APGR/CPT (pure numpy, no I/O).

Every function takes plain arrays, so evaluation, benchmarks and the promotion
gate compute the same numbers from the same definitions (DESIGN.md "Metrics").

Conventions:

* A *curve* is a set of (mean cost per request in USD, mean quality) points, one per
  routing setting (a quality bar, a lambda, a mixing probability), as a (k, 2) array.
* The *hull* of a curve is its upper convex hull made non-decreasing, starting at the
  cheapest point. Why the hull: mixing two settings at random reaches every point on
  the segment between them, and a budget may be left unspent, so the hull is what a
  curve can actually deliver at each cost.
* Left of the cheapest point nothing is reachable. AIQ follows RouterBench and
  integrates from the cheapest point only; since DESIGN.md divides by c_max (not
  c_max - c_min), the range [0, cheapest cost) contributes zero area. The same rule is
  applied to the router and to the Zero router (which use the same c_max), so a router
  whose cheapest setting is cheaper than every single model is credited for the extra
  range it really reaches, and never for a range it does not.
* Two-model metrics follow RouteLLM (`routellm/evals/evaluate.py`): the x axis is the
  share of calls sent to the strong model, PGR = (q - q_weak) / (q_strong - q_weak),
  thresholds are the 11 edges of 10 equal-count bins of the router score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "OracleResult",
    "convex_hull_upper",
    "hull_quality_at",
    "aiq",
    "zero_router_aiq",
    "oracle",
    "mix_curve",
    "cost_at_quality",
    "quality_at_cost",
    "pgr",
    "two_model_curve",
    "oracle_two_model_curve",
    "apgr",
    "cpt",
]

# Quality targets are compared with this slack so a hull that reaches the target up to
# float rounding (a mean of 0/1 outcomes computed two ways) counts as reaching it.
_EPS = 1e-12

ArrayLike = np.ndarray | Sequence[float] | Sequence[Sequence[float]]


def _points(points: ArrayLike) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"a curve must be a (k, 2) array of (cost, quality) points, "
                         f"got shape {arr.shape}")
    arr = arr[np.isfinite(arr).all(axis=1)]
    if len(arr) == 0:
        raise ValueError("a curve needs at least one finite (cost, quality) point")
    return arr


def convex_hull_upper(points: ArrayLike) -> np.ndarray:
    """The non-decreasing upper convex hull of (cost, quality) points, cheapest first.

    Returns a (h, 2) array with strictly increasing cost and quality. It starts at the
    cheapest point (the best one among equally cheap points); a point that costs more
    than another and is no better is dominated and dropped; points on or below a chord
    of the hull are dropped. Non-finite points are ignored.
    """
    pts = _points(points)
    order = np.lexsort((-pts[:, 1], pts[:, 0]))  # by cost, then best quality first
    pts = pts[order]
    # Keep only strict improvements in quality: everything else is dominated by a
    # cheaper point (including equal-cost points of lower quality).
    best = np.maximum.accumulate(pts[:, 1])
    keep = np.ones(len(pts), dtype=bool)
    keep[1:] = pts[1:, 1] > best[:-1]
    pts = pts[keep]
    hull: list[np.ndarray] = []
    for p in pts:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b is on or below the chord a -> p: it adds nothing a mix of a and p gives.
            if (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return np.array(hull, dtype=np.float64)


def hull_quality_at(points: ArrayLike, costs: ArrayLike) -> np.ndarray:
    """Quality on the hull at each cost: NaN left of the cheapest point, flat right of the last."""
    hull = convex_hull_upper(points)
    at = np.asarray(costs, dtype=np.float64)
    out = np.interp(at, hull[:, 0], hull[:, 1])
    return np.where(at < hull[0, 0], np.nan, out)


def aiq(costs: ArrayLike, qualities: ArrayLike, c_max: float | None = None) -> float:
    """Average improvement in quality (RouterBench): area under the hull / c_max.

    The hull of the points (see `convex_hull_upper`) is integrated from its cheapest
    point to `c_max`, extended flat past its last point and cut at `c_max` if it goes
    beyond; the area is divided by `c_max` (default: the highest cost among the
    points; for a router use the highest mean cost of any single model, so router and
    Zero router share one scale). Left of the cheapest point counts as zero (module
    docstring). A curve that starts above `c_max` scores 0.
    """
    c = np.asarray(costs, dtype=np.float64).ravel()
    q = np.asarray(qualities, dtype=np.float64).ravel()
    if c.shape != q.shape:
        raise ValueError(f"costs and qualities differ in length: {c.shape[0]} vs {q.shape[0]}")
    hull = convex_hull_upper(np.column_stack([c, q]))
    if c_max is None:
        c_max = float(np.nanmax(c))
    if not c_max > 0:
        raise ValueError(f"c_max must be positive, got {c_max!r}")
    x, y = hull[:, 0], hull[:, 1]
    if x[0] >= c_max:
        return 0.0
    inside = x < c_max
    xs, ys = x[inside], y[inside]
    # Close the integration at c_max: on the hull's next segment, or flat past its end.
    end_q = float(np.interp(c_max, x, y))
    xs = np.append(xs, c_max)
    ys = np.append(ys, end_q)
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    return area / c_max


def zero_router_aiq(single_costs: ArrayLike, single_qualities: ArrayLike,
                    c_max: float | None = None) -> float:
    """AIQ of the Zero router: the hull of the single models alone (random mixes of them).

    `c_max` defaults to the dearest single model, the same scale `aiq` should use for a
    router evaluated on the same prompts.
    """
    return aiq(single_costs, single_qualities, c_max)


@dataclass(frozen=True)
class OracleResult:
    """Per prompt, the cheapest model with the best realised quality."""

    choice: np.ndarray  # (n,) model index per prompt
    cost_usd: float  # mean cost per request
    quality: float  # mean quality


def oracle(quality: ArrayLike, cost: ArrayLike) -> OracleResult:
    """The perfect router: per prompt the best quality, at the lowest cost among ties.

    `quality` and `cost` are realised (n prompts, m models) matrices. No router can do
    better on quality, and none reaches that quality cheaper.
    """
    q = np.asarray(quality, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if q.ndim != 2 or q.shape != c.shape or q.shape[0] == 0:
        raise ValueError(f"quality and cost must be non-empty (n, m) matrices of one shape, "
                         f"got {q.shape} and {c.shape}")
    is_best = q >= q.max(axis=1, keepdims=True)
    choice = np.argmin(np.where(is_best, c, np.inf), axis=1)
    rows = np.arange(q.shape[0])
    return OracleResult(choice=choice, cost_usd=float(c[rows, choice].mean()),
                        quality=float(q[rows, choice].mean()))


def mix_curve(cost_a: float, quality_a: float, cost_b: float, quality_b: float,
              n_points: int = 11) -> np.ndarray:
    """Expected (cost, quality) of calling B with probability p and A otherwise, p in [0, 1].

    This is the random router (RouterBench's and RouteLLM's baseline) between two single
    models: in expectation it lies on the straight line between them.
    """
    p = np.linspace(0.0, 1.0, n_points)
    return np.column_stack([(1 - p) * cost_a + p * cost_b, (1 - p) * quality_a + p * quality_b])


def cost_at_quality(curve: ArrayLike, target: float, *,
                    reference_cost: float | None = None) -> float | None:
    """Least cost on the curve's hull that reaches `target` quality; None if never reached.

    Divided by `reference_cost` when given (e.g. the best single model's cost, so 0.4
    means "the same quality for 40% of the cost").
    """
    hull = convex_hull_upper(curve)
    x, y = hull[:, 0], hull[:, 1]
    if y[-1] < target - _EPS:
        return None
    i = int(np.argmax(y >= target - _EPS))
    if i == 0:
        cost = float(x[0])
    else:
        frac = (target - y[i - 1]) / (y[i] - y[i - 1])
        cost = float(x[i - 1] + min(max(frac, 0.0), 1.0) * (x[i] - x[i - 1]))
    if reference_cost is None:
        return cost
    if not reference_cost > 0:
        raise ValueError(f"reference_cost must be positive, got {reference_cost!r}")
    return cost / reference_cost


def quality_at_cost(curve: ArrayLike, budget: float) -> float | None:
    """Quality on the curve's hull at mean cost `budget`; None below the cheapest point."""
    value = float(hull_quality_at(curve, [budget])[0])
    return None if np.isnan(value) else value


# -- two models (RouteLLM) ----------------------------------------------------------

def pgr(quality: float | np.ndarray, q_weak: float, q_strong: float) -> float | np.ndarray:
    """Performance gap recovered: 0 at the weak model's quality, 1 at the strong one's."""
    gap = q_strong - q_weak
    if abs(gap) < _EPS:
        raise ValueError(f"PGR is undefined when the strong and weak models have the same "
                         f"quality ({q_strong!r})")
    if np.ndim(quality):
        return (np.asarray(quality, dtype=np.float64) - q_weak) / gap
    return (float(quality) - q_weak) / gap


def two_model_curve(score: ArrayLike, quality_weak: ArrayLike, quality_strong: ArrayLike,
                    n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(strong-call share, mean quality) at RouteLLM's thresholds on a router score.

    A prompt goes to the strong model when its score is >= the threshold (> for the
    last threshold, so the sweep ends at 0% strong). The thresholds are the
    `n_bins + 1` quantile edges of the scores, so the shares run from 100% to 0% in
    about `n_bins` equal steps. Returned sorted by share, ascending.
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    qw = np.asarray(quality_weak, dtype=np.float64).ravel()
    qs = np.asarray(quality_strong, dtype=np.float64).ravel()
    if not (s.shape == qw.shape == qs.shape) or s.size == 0:
        raise ValueError(f"score, quality_weak and quality_strong must be non-empty and of one "
                         f"length, got {s.size}, {qw.size}, {qs.size}")
    thresholds = np.quantile(s, np.linspace(0.0, 1.0, n_bins + 1))
    shares, quals = [], []
    for i, t in enumerate(thresholds):
        strong = s > t if i == len(thresholds) - 1 else s >= t
        shares.append(strong.mean())
        quals.append(np.where(strong, qs, qw).mean())
    order = np.argsort(shares, kind="stable")
    return np.asarray(shares)[order], np.asarray(quals)[order]


def oracle_two_model_curve(quality_weak: ArrayLike,
                           quality_strong: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Best mean quality at each strong-call share (RouteLLM's "optimal" curve).

    Strong calls go first to the prompts where they gain most; once no prompt gains,
    more strong calls are not made (the curve stays flat up to 100%).
    """
    qw = np.asarray(quality_weak, dtype=np.float64).ravel()
    qs = np.asarray(quality_strong, dtype=np.float64).ravel()
    n = qw.size
    gain = np.sort(qs - qw)[::-1]
    gain = gain[gain > 0]
    shares = np.arange(gain.size + 1) / n
    quals = qw.mean() + np.concatenate([[0.0], np.cumsum(gain)]) / n
    if shares[-1] < 1.0:
        shares = np.append(shares, 1.0)
        quals = np.append(quals, quals[-1])
    return shares, quals


def apgr(strong_share: ArrayLike, quality: ArrayLike, q_weak: float, q_strong: float) -> float:
    """Average PGR: the area under PGR over strong-call share (trapezoids), per unit share.

    As in RouteLLM, the area is divided by the range of shares covered, which is 1 for
    a full 0%..100% sweep. A random router scores 0.5. PGR, hence APGR, can exceed 1:
    the oracle beats the strong model alone by using the weak one where only it is right.
    """
    x = np.asarray(strong_share, dtype=np.float64).ravel()
    y = pgr(np.asarray(quality, dtype=np.float64).ravel(), q_weak, q_strong)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    span = x[-1] - x[0]
    if not span > 0:
        raise ValueError("APGR needs points at two or more different strong-call shares")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / span)


def cpt(strong_share: ArrayLike, quality: ArrayLike, q_weak: float, q_strong: float,
        x: float) -> float | None:
    """Call-performance threshold: least strong-call share whose PGR reaches `x`.

    `x` is a fraction (0.5 for CPT(50%)). The curve is walked from the lowest share; the
    first segment that crosses `x` is interpolated linearly. None if PGR never reaches
    `x`.
    """
    shares = np.asarray(strong_share, dtype=np.float64).ravel()
    quals = np.asarray(quality, dtype=np.float64).ravel()
    order = np.lexsort((-quals, shares))
    shares, values = shares[order], pgr(quals[order], q_weak, q_strong)
    reached = values >= x - _EPS
    if not reached.any():
        return None
    i = int(np.argmax(reached))
    if i == 0:
        return float(shares[0])
    frac = (x - values[i - 1]) / (values[i] - values[i - 1])
    return float(shares[i - 1] + min(max(frac, 0.0), 1.0) * (shares[i] - shares[i - 1]))
