"""Scoring a freshly fitted quality model on its held-out prompts.

`QualityModel.fit(..., holdout_frac>0)` holds out a share of the prompts (split
by prompt, never by row) and stores what this module measures on them in the
artifact's metadata: calibration (`holdout_metrics`: log loss, Brier,
`expected_calibration_error`, AUC for 0/1 labels) and the routing bar served by
default (`choose_default_bar`), so a new model ships with evidence and a bar
chosen on prompts it never saw. `DEFAULT_BAR` is the bar used when there is no
such evidence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from router.conversation import Conversation

if TYPE_CHECKING:
    from router.predictor import QualityModel

__all__ = ["DEFAULT_BAR", "choose_default_bar", "expected_calibration_error", "holdout_metrics"]

DEFAULT_BAR = 0.7


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Mean |mean label - mean prediction| over equal-width bins, weighted by count."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        mask = bins == b
        total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(y))


def holdout_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Log loss, Brier, ECE (10 bins) and, for 0/1 labels with both classes, AUC."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    out = {
        "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": expected_calibration_error(y, p),
        "mean_quality": float(y.mean()),
        "mean_predicted": float(p.mean()),
    }
    binary = np.isin(y, (0.0, 1.0)).all()
    if binary and 0 < y.sum() < len(y):
        from sklearn.metrics import roc_auc_score

        out["auc"] = float(roc_auc_score(y, p))
    return out


def choose_default_bar(model: QualityModel, table: Any, rows: np.ndarray,
                       quality: np.ndarray, model_codes: np.ndarray, prompt_codes: np.ndarray,
                       hold_convs: list[Conversation],
                       hold_prompts: np.ndarray) -> tuple[float, str, dict[str, float]]:
    """Lowest bar whose routed held-out quality reaches the best single model's
    at no more than its cost.

    Only held-out prompts answered by every model count (a routed choice must
    have a known outcome). Falls back to `DEFAULT_BAR` when the router never
    reaches the best single model or too few prompts are complete.

    `rows` masks the held-out rows of `table` (`quality`, `model_codes` and
    `prompt_codes` are per row of it); `hold_prompts` are the held-out prompt
    codes and `hold_convs` their conversations, in the same order.
    """
    from router.policy import choose

    m = len(model.models_)
    local = {int(p): i for i, p in enumerate(hold_prompts)}
    actual_q = np.full((len(hold_prompts), m), np.nan)
    actual_c = np.full((len(hold_prompts), m), np.nan)
    where = np.array([local[int(p)] for p in prompt_codes[rows]], dtype=np.int64)
    actual_q[where, model_codes[rows]] = quality[rows]
    actual_c[where, model_codes[rows]] = table["cost_usd"].to_numpy(np.float64)[rows]
    complete = ~np.isnan(actual_q).any(axis=1)
    if complete.sum() < 10 or m < 2:
        return DEFAULT_BAR, "default (fewer than 10 complete held-out prompts)", {}
    pred = model.predict([hold_convs[i] for i in np.flatnonzero(complete)])
    aq, ac = actual_q[complete], actual_c[complete]
    # Rows without a cost of their own are counted at the predicted cost.
    ac = np.where(np.isnan(ac), pred.cost_usd, ac)
    single_q = aq.mean(axis=0)
    best = int(np.argmax(single_q))
    out = {"best_single_model": model.models_[best],
           "best_single_quality": float(single_q[best]),
           "best_single_cost_usd": float(ac[:, best].mean())}
    idx = np.arange(len(aq))
    for bar in np.round(np.arange(0.0, 1.0001, 0.01), 2):
        chosen = choose(pred.quality, pred.cost_usd, bar=float(bar))
        routed_q = float(aq[idx, chosen].mean())
        routed_c = float(ac[idx, chosen].mean())
        # A default that costs more than always calling the best model is no saving.
        if routed_q >= single_q[best] - 1e-12 and routed_c <= out["best_single_cost_usd"]:
            out.update({"routed_quality_at_default_bar": routed_q,
                        "routed_cost_usd_at_default_bar": routed_c})
            return float(bar), "held-out: lowest bar reaching the best single model", out
    return (DEFAULT_BAR, "default (held-out routing never matched the best single model "
            "at or below its cost)", out)
