"""Scoring a freshly fitted quality model on its held-out prompts.

`QualityModel.fit(..., holdout_frac>0)` holds out a share of the prompts (split
by prompt, never by row) and stores what this module measures on them in the
artifact's metadata: calibration (`holdout_metrics`: log loss, Brier,
`expected_calibration_error`, AUC for 0/1 labels) and the routing bar served by
default with its meaning (`calibrate_bar`: the map from a target mean quality
to the utility rule's lambda, `router.policy.BarCalibration`), so a new model
ships with evidence and a bar measured on prompts it never saw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from router.conversation import Conversation, parse_conversation
from router.errors import DataError
from router.policy import BarCalibration
from router.predictor._latency import latency_metrics

if TYPE_CHECKING:
    from router.predictor._model import QualityModel

__all__ = ["calibrate_bar", "expected_calibration_error", "holdout_metrics", "holdout_split",
           "measure_model"]


def holdout_split(n_prompts: int, holdout_frac: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(held-out prompt indices, the other prompts' indices), a seeded shuffle of
    `range(n_prompts)` cut at `round(holdout_frac * n_prompts)`.

    The one split of `QualityModel.fit`; distributed training calls it on the same
    prompt order, so both hold out the same prompts and their metrics compare.
    """
    order = np.random.default_rng(seed).permutation(n_prompts)
    n_hold = int(round(holdout_frac * n_prompts)) if holdout_frac > 0 else 0
    if holdout_frac > 0 and not 1 <= n_hold < n_prompts:
        raise DataError(f"cannot hold out {holdout_frac:.0%} of {n_prompts} prompt(s)",
                        hint="use more prompts or --holdout-frac 0")
    return order[:n_hold], order[n_hold:]


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


def calibrate_bar(model: QualityModel, table: Any, prompt_codes: np.ndarray,
                  model_codes: np.ndarray, quality: np.ndarray, prompts: np.ndarray,
                  convs: list[Conversation], source: str
                  ) -> tuple[BarCalibration, float, str, dict[str, Any]]:
    """The bar's calibration, the default bar and what they measured, on `prompts`.

    `prompts` are the calibration prompt codes (prompts the model did not train
    on, where there are any) and `convs` their conversations, in the same order;
    `quality`, `model_codes` and `prompt_codes` are per row of `table`. The
    outcomes the table has for them correct the level of the predicted means
    (`BarCalibration.fit`).

    The default bar is the best single model's mean quality on these prompts, as
    the calibration estimates it: served without options, the router aims at the
    flagship's quality for less.
    """
    m = len(model.models_)
    local = np.full(int(prompt_codes.max()) + 1, -1, dtype=np.int64)
    local[prompts] = np.arange(len(prompts))
    rows = local[prompt_codes] >= 0
    where = local[prompt_codes[rows]]
    actual_q = np.full((len(prompts), m), np.nan)
    actual_c = np.full((len(prompts), m), np.nan)
    actual_q[where, model_codes[rows]] = quality[rows]
    actual_c[where, model_codes[rows]] = table["cost_usd"].to_numpy(np.float64)[rows]
    pred = model.predict(convs)
    pq, pc = np.asarray(pred.quality), np.asarray(pred.cost_usd)
    calibration = BarCalibration.fit(pq, pc, actual_q, actual_c, source=source)
    ac = np.where(np.isfinite(actual_c), actual_c, pc)
    # Each model's mean quality as the calibration sees it (predicted, level
    # corrected): the measured means of a few hundred 0/1 outcomes would pick the
    # luckiest model's luck as the default (the winner's curse).
    single_q, single_c = pq.mean(axis=0) + calibration.bias, ac.mean(axis=0)
    best = int(np.lexsort((single_c, -single_q))[0])
    bar = round(float(single_q[best]), 4)
    routed_q, routed_c = calibration.expected_at(bar)
    known = float(np.isfinite(actual_q).mean())
    out = {"best_single_model": model.models_[best],
           "best_single_quality": float(single_q[best]),
           "best_single_cost_usd": float(single_c[best]),
           "routed_quality_at_default_bar": routed_q,
           "routed_cost_usd_at_default_bar": routed_c,
           "calibration_outcomes_known": known}
    return (calibration, bar,
            f"{source}: the best single model's mean quality ({model.models_[best]})", out)


def measure_model(model: QualityModel, table: Any, *, source: str, metrics: bool) -> None:
    """`QualityModel.measure` on a checked table: metrics (with `metrics`) and the bar's
    calibration into `model.metadata`."""
    import pandas as pd

    table = table[table["model"].isin(model.models_)].reset_index(drop=True)
    if not len(table):
        raise DataError(f"no outcome rows for this model's models on the {source}",
                        hint=f"trained models: {', '.join(model.models_)}")
    prompt_codes, prompt_ids = pd.factorize(table["prompt_id"], sort=False)
    first_rows = np.unique(prompt_codes, return_index=True)[1]
    convs = [parse_conversation(m, where=f"prompt_id {pid!r}")
             for pid, m in zip(prompt_ids, table["messages"].to_numpy()[first_rows],
                               strict=True)]
    model_codes = table["model"].map({m: i for i, m in enumerate(model.models_)}
                                     ).to_numpy(dtype=np.int64)
    quality = table["quality"].to_numpy(dtype=np.float64)
    measured: dict[str, Any] = {}
    if metrics:
        measured = _prediction_metrics(model, table, convs, prompt_codes, model_codes)
    calibration, bar, bar_source, routing = calibrate_bar(
        model, table, prompt_codes, model_codes, quality, np.arange(len(convs)), convs,
        source)
    measured.update(routing)
    model.metadata.update({"metrics": measured, "default_bar": bar,
                           "default_bar_source": bar_source,
                           "bar_calibration": calibration.to_dict()})


def _prediction_metrics(model: QualityModel, table: Any, convs: list[Conversation],
                        prompt_codes: np.ndarray, model_codes: np.ndarray
                        ) -> dict[str, Any]:
    """Quality, output-length and latency error of `model`'s predictions on `table`."""
    pred = model.predict(convs)
    quality = table["quality"].to_numpy(dtype=np.float64)
    measured = holdout_metrics(quality, pred.quality[prompt_codes, model_codes])
    measured["rows"] = int(len(table))
    known_out = table["output_tokens"].to_numpy(dtype=np.float64)
    known = np.isfinite(known_out)
    if known.any():
        predicted = pred.output_tokens[prompt_codes[known], model_codes[known]]
        measured["output_tokens_mae"] = float(np.mean(np.abs(predicted - known_out[known])))
    for column, head, predicted in (("latency_ms", model.latency_, pred.latency_ms),
                                    ("ttft_ms", model.ttft_, pred.ttft_ms)):
        if head is None or predicted is None or column not in table:
            continue
        high = predicted[prompt_codes, model_codes]
        # The central estimate: the quantile less the model's residual quantile.
        central = high / np.exp(head.offset[model_codes])
        measured.update(latency_metrics(high, central, table[column].to_numpy(dtype=np.float64),
                                        prefix=column.removesuffix("_ms")))
    return measured
