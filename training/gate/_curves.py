"""Each policy's operating points: realised on a full table, doubly robust on logs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from router.conversation import parse_conversation
from router.errors import DataError
from training.gate._report import Curve
from training.metrics import hull_quality_at
from training.offpolicy import bandit_from_table, doubly_robust, reward_matrices
from training.sweep import (
    RULE_KEYWORDS,
    calibration_of,
    decisions,
    sweep_bars,
    sweep_lambdas,
    utility_lambdas,
)

__all__ = ["DEFAULT_BARS", "hull_quality", "quality_at_equal_cost", "sweep_logged",
           "sweep_table"]

DEFAULT_BARS: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))


def hull_quality(cost: Sequence[float], quality: Sequence[float],
                 at: np.ndarray) -> np.ndarray:
    """Quality reachable at each cost in `at` (`training.metrics.hull_quality_at`).

    Mixing two policies reaches any point between them and a budget may be left
    unspent, so the reachable frontier is the non-decreasing upper convex hull,
    flat right of its last point; left of the cheapest point is NaN.
    """
    return hull_quality_at(np.column_stack([np.asarray(cost, dtype=np.float64),
                                            np.asarray(quality, dtype=np.float64)]), at)


def quality_at_equal_cost(reference: Curve, candidate: Curve, n_grid: int = 101, *,
                          rule: str | None = None) -> tuple[float, float, float]:
    """(candidate - reference, reference mean, candidate mean) of hull quality at equal cost.

    The hulls are over every operating point of each curve (bars and lambdas),
    or over one rule's points with `rule` ("default", "utility"). Averaged over
    a linear cost grid from the dearer of the two cheapest points (below it one
    of them cannot go) to the dearest point of either curve.
    """
    ref_pts, cand_pts = reference.points(rule), candidate.points(rule)
    lo = max(ref_pts[:, 0].min(), cand_pts[:, 0].min())
    hi = max(ref_pts[:, 0].max(), cand_pts[:, 0].max())
    grid = np.linspace(lo, hi, n_grid) if hi > lo else np.array([lo])
    ref = hull_quality(ref_pts[:, 0], ref_pts[:, 1], grid)
    cand = hull_quality(cand_pts[:, 0], cand_pts[:, 1], grid)
    return float(np.mean(cand - ref)), float(np.mean(ref)), float(np.mean(cand))


def _matrices(table: pd.DataFrame, where: str) -> tuple[list[str], list[Any], pd.DataFrame,
                                                        pd.DataFrame]:
    for col in ("prompt_id", "messages", "model", "quality", "cost_usd"):
        if col not in table:
            raise DataError(f"{where}: missing column {col!r}",
                            hint="load it with training.data.load_outcomes (it adds cost_usd)")
    first = table.drop_duplicates("prompt_id")
    ids = first["prompt_id"].astype(str).tolist()
    convs = [parse_conversation(m, where=f"{where} prompt {pid}")
             for pid, m in zip(ids, first["messages"], strict=True)]
    keyed = table.assign(prompt_id=table["prompt_id"].astype(str))
    quality = keyed.pivot_table(index="prompt_id", columns="model", values="quality",
                                aggfunc="mean").reindex(ids)
    cost = keyed.pivot_table(index="prompt_id", columns="model", values="cost_usd",
                             aggfunc="mean").reindex(ids)
    return ids, convs, quality, cost


def sweep_table(model: Any, table: pd.DataFrame, *, bars: Sequence[float] = DEFAULT_BARS,
                lambdas: Sequence[float] | None = None,
                conversations: Sequence[Any] | None = None,
                where: str = "eval table") -> Curve:
    """Realised mean cost and quality of `model`'s decisions at each bar and lambda.

    On a full table. Each policy may only choose models it knows that the table
    has an outcome for (per prompt), so a model missing from the table is never
    rewarded. `lambdas` defaults to `utility_lambdas` of the table's costs (the
    same for every model swept on it); `()` sweeps the default rule only.
    """
    ids, convs, quality, cost = _matrices(table, where)
    if lambdas is None:
        lambdas = utility_lambdas(cost.to_numpy(dtype=np.float64))
    pred = model.predict(conversations if conversations is not None else convs)
    models = [m for m in pred.models if m in quality.columns]
    if not models:
        raise DataError(f"{where}: none of the model's models ({', '.join(pred.models)}) "
                        "has outcomes in the table",
                        hint="evaluate on a table with outcomes for the catalog's models")
    cols = [list(pred.models).index(m) for m in models]
    q_true = quality[models].to_numpy(dtype=np.float64)
    c_true = cost[models].to_numpy(dtype=np.float64)
    allowed = np.isfinite(q_true) & np.isfinite(c_true)
    rows_ok = allowed.any(axis=1)
    q_pred, c_pred = pred.quality[rows_ok][:, cols], pred.cost_usd[rows_ok][:, cols]
    q_true, c_true, allowed = q_true[rows_ok], c_true[rows_ok], allowed[rows_ok]
    return Curve.from_sweeps(
        sweep_bars(q_pred, c_pred, q_true, c_true, bars, calibration_of(model, q_pred, c_pred),
                   allowed=allowed),
        sweep_lambdas(q_pred, c_pred, q_true, c_true, lambdas, allowed=allowed))


def sweep_logged(model: Any, logged: pd.DataFrame, reward: Any, *,
                 bars: Sequence[float] = DEFAULT_BARS,
                 lambdas: Sequence[float] | None = None,
                 conversations: Sequence[Any] | None = None) -> Curve:
    """Doubly robust estimates of `model`'s mean cost and quality at each bar and lambda.

    On logs. `reward` is the model whose predictions serve as the DR reward
    model. `lambdas` defaults to `utility_lambdas` of the logged cost of each
    served model (the same for every model swept on these logs); `()` sweeps the
    default rule only.
    """
    if conversations is None:
        conversations = [parse_conversation(m, where=f"logged row {i}")
                         for i, m in enumerate(logged["messages"])]
    pred = model.predict(conversations)
    rpred = pred if reward is model else reward.predict(conversations)
    log = bandit_from_table(logged, list(pred.models), where="recent logs")
    rq, rc = reward_matrices(pred, rpred)
    if lambdas is None:
        # One row of per-model means: only the served model's cost is logged.
        served = logged.groupby("model")["cost_usd"].mean().to_numpy(dtype=np.float64)
        lambdas = utility_lambdas(served[np.newaxis, :])

    calibration = calibration_of(model, pred.quality, pred.cost_usd)

    def estimates(rule: str, settings: Sequence[float]) -> np.ndarray:
        out = np.empty((len(settings), 5))
        for i, (value, pick) in enumerate(decisions(pred.quality, pred.cost_usd, rule,
                                                    settings, calibration=calibration)):
            est = doubly_robust(log, pick, rq, rc)
            out[i] = (value, est.cost_usd, est.quality, est.quality_se, est.ess)
        return out

    return Curve.from_sweeps(estimates(RULE_KEYWORDS["default"], bars),
                             estimates(RULE_KEYWORDS["utility"], lambdas))
