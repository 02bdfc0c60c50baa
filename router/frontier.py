"""Cost-quality frontiers: the upper hull of operating points and the area under it.

Pure numpy, shared by the quality model (choosing its blend on validation prompts,
`router.predictor`) and by evaluation, the gate and the benchmarks
(`training.metrics`, which builds the rest of the routing metrics on these).

* A *curve* is a set of (mean cost per request in USD, mean quality) points, one per
  routing setting, as a (k, 2) array.
* Its *hull* is the upper convex hull made non-decreasing, starting at the cheapest
  point: mixing two settings at random reaches every point between them, and a
  budget may be left unspent, so the hull is what a curve can deliver at each cost.
* **AIQ** (RouterBench) integrates the hull from its cheapest point to c_max and
  divides by c_max; left of the cheapest point nothing is reachable and counts zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["aiq", "convex_hull_upper"]

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
