"""`router eval --max-latency-ms`: the default rule under a latency limit, scored on
realised latency.

The limit is applied by `router.policy.choose` (the one implementation serving
uses): models the artifact expects over the limit (`Prediction.latency_ms`, a
P90) are dropped before the quality/cost rule, and a request with none left
keeps the fastest. Whether a request met the limit is read from the table's
`latency_ms` of the model chosen, never from the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from router.errors import DataError, PolicyError
from router.policy import BarCalibration, within_latency
from training import metrics
from training.data import outcome_matrices
from training.sweep import RowCalibrations, decisions, met_share, sweep_latency_limited

__all__ = ["LatencyLimit", "latency_limit", "latency_section"]


@dataclass(frozen=True)
class LatencyLimit:
    """A latency limit and the (n, m) latencies an evaluation scores it with."""

    max_latency_ms: float
    predicted: np.ndarray  # expected (P90) ms, what the rule sees
    realised: np.ndarray  # the table's latency_ms, NaN where unknown


def latency_limit(max_latency_ms: float, predicted: np.ndarray | None, table: pd.DataFrame,
                  models: Sequence[str], prompt_ids: Sequence[str],
                  notes: list[str]) -> LatencyLimit:
    """The limit's inputs for the evaluated prompts; a clear error when the model
    predicts no latency or the table records none."""
    if predicted is None:
        raise PolicyError(f"max_latency_ms {max_latency_ms:g}: the model predicts no latency "
                          "(its training table had no latency_ms)",
                          hint="retrain on an outcome table with a latency_ms column "
                               "(router demo-data writes one; router retrain carries the "
                               "outcome log's)")
    if "latency_ms" not in table.columns or not table["latency_ms"].notna().any():
        raise DataError(f"max_latency_ms {max_latency_ms:g}: the evaluated data have no "
                        "latency_ms, so whether a request met the limit cannot be measured",
                        hint="evaluate on an outcome table with a latency_ms column")
    (realised,) = outcome_matrices(table, models, prompt_ids, columns=("latency_ms",))
    unknown = int((~np.isfinite(realised)).sum())
    if unknown:
        notes.append(f"{unknown} (prompt, model) latencies are unknown in the data: the share "
                     "within the limit counts the requests whose latency is known")
    return LatencyLimit(float(max_latency_ms), np.asarray(predicted, dtype=np.float64),
                        realised)


def latency_section(limit: LatencyLimit, models: Sequence[str], pred_quality: np.ndarray,
                    pred_cost: np.ndarray, quality: np.ndarray, cost: np.ndarray,
                    bars: Sequence[float], calibration: BarCalibration | RowCalibrations,
                    default_bar: float | None, c_max: float) -> dict[str, Any]:
    """What `EvalReport.latency` holds: the default rule's curve under the limit with
    the share of requests that met it, its AIQ, the default bar with and without the
    limit, the share routed to the fastest model because none was expected within
    it, and each model's realised P50/P95/P99 and share within the limit."""
    x = limit.max_latency_ms
    curve = sweep_latency_limited(pred_quality, pred_cost, limit.predicted, quality, cost,
                                  limit.realised, bars, x, calibration)
    p50, p95, p99 = (_percentiles(limit.realised, q) for q in (50, 95, 99))
    section: dict[str, Any] = {
        "max_latency_ms": x,
        "curve": [{"bar": float(b), "cost_usd": float(c), "quality": float(q),
                   "met_share": _finite(s)} for b, c, q, s in curve],
        "aiq": metrics.aiq(curve[:, 1], curve[:, 2], c_max),
        "fallback_share": float(within_latency(limit.predicted, x)[1].mean()),
        "single_models": [{"model": m, "p50_ms": _finite(a), "p95_ms": _finite(b),
                           "p99_ms": _finite(c), "met_share": _finite(
                               met_share(limit.realised[:, i], x))}
                          for i, (m, a, b, c) in enumerate(zip(models, p50, p95, p99,
                                                               strict=True))],
        # Realised: the model with the lowest P95 in the data (models never timed
        # there are not candidates).
        "fastest_model": models[int(np.nanargmin(p95))],
        "fastest_p95_ms": float(np.nanmin(p95)),
    }
    if default_bar is not None:
        rows = np.arange(quality.shape[0])
        points = {}
        for key, limited in (("default_point", True), ("default_point_without_limit", False)):
            [(_, idx)] = decisions(pred_quality, pred_cost, "bar", [default_bar],
                                   calibration=calibration,
                                   latency_ms=limit.predicted if limited else None,
                                   max_latency_ms=x if limited else None)
            points[key] = {"bar": float(default_bar), "cost_usd": float(cost[rows, idx].mean()),
                           "quality": float(quality[rows, idx].mean()),
                           "met_share": _finite(met_share(limit.realised[rows, idx], x))}
        section.update(points)
    return section


def _percentiles(latency: np.ndarray, q: float) -> np.ndarray:
    """Per model (column), the q-th percentile of its known latencies; NaN for a
    model with none (without numpy's all-NaN warning)."""
    return np.array([np.percentile(col[np.isfinite(col)], q) if np.isfinite(col).any()
                     else np.nan for col in latency.T])


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
