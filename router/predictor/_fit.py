"""The building blocks `QualityModel.fit` is made of.

`check_table` validates the outcome table and fills optional columns,
`train_booster` trains one LightGBM booster with early stopping on validation
prompts, `fit_linear` fits the per-model logistic-regression head on TF-IDF rows.
`router.predictor._model` (`QualityModel.fit`) splits the prompts and wires these
together. Training-only dependencies (LightGBM, pandas, scikit-learn, scipy,
tqdm) are imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from router.conversation import parse_conversation
from router.errors import DataError

__all__ = ["DEFAULT_PARAMS", "MIN_OUTPUT_ROWS", "check_table", "fit_linear", "train_booster"]

MIN_OUTPUT_ROWS = 50  # fewer known output lengths than this: medians beat a booster

DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_bin": 63,
    "max_cat_to_onehot": 8,
    "verbosity": -1,
}


def check_table(table: Any) -> Any:
    """The outcome table, checked, re-indexed, with optional columns filled in."""
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame outcome table, got {type(table).__name__}",
                        hint="load it with training.data.load_outcomes(paths)")
    missing = [c for c in ("prompt_id", "messages", "model", "quality") if c not in table]
    if missing:
        raise DataError(f"outcome table is missing column(s): {', '.join(missing)}",
                        hint="load it with training.data.load_outcomes(paths)")
    if len(table) == 0:
        raise DataError("outcome table has no rows", hint="train on a non-empty table")
    q = table["quality"].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(q) & (q >= 0) & (q <= 1)))
    if len(bad):
        raise DataError(f"outcome table row {int(bad[0]) + 1}: quality {float(q[bad[0]])!r} "
                        "is not in [0, 1]", hint="rescale scores to [0, 1]")
    table = table.reset_index(drop=True)
    extra = {}
    if "weight" not in table:
        extra["weight"] = 1.0
    if "output_tokens" not in table:
        extra["output_tokens"] = np.nan
    if "cost_usd" not in table:
        extra["cost_usd"] = np.nan
    if "input_tokens" not in table:
        extra["input_tokens"] = [parse_conversation(m).input_tokens for m in table["messages"]]
    return table.assign(**extra) if extra else table


def train_booster(lgb: Any, params: dict[str, Any], x: np.ndarray, y: np.ndarray,
                   w: np.ndarray, row_role: np.ndarray, names: list[str], cat_col: int,
                   num_boost_round: int, early_stopping_rounds: int, *, progress: bool,
                   desc: str) -> tuple[Any, int]:
    """Train on role 0 rows, early-stop on role 1 rows; returns (booster, rounds)."""
    train = row_role == 0
    valid = row_role == 1
    dtrain = lgb.Dataset(x[train], label=y[train], weight=w[train], feature_name=names,
                         categorical_feature=[cat_col], free_raw_data=True)
    callbacks = []
    valid_sets = []
    rounds = num_boost_round
    if valid.any():
        valid_sets = [lgb.Dataset(x[valid], label=y[valid], weight=w[valid],
                                  reference=dtrain, free_raw_data=True)]
        callbacks.append(lgb.early_stopping(early_stopping_rounds, verbose=False))
    else:
        # No validation prompts (a tiny table): a fixed, conservative round count.
        rounds = min(num_boost_round, 200)
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=rounds, desc=desc, unit="round", disable=not sys.stderr.isatty())
        callbacks.append(lambda env: bar.update(1))
    try:
        booster = lgb.train(params, dtrain, num_boost_round=rounds, valid_sets=valid_sets,
                            callbacks=callbacks)
    finally:
        if bar is not None:
            bar.close()
    best = booster.best_iteration or booster.current_iteration()
    # Round-trip through text so the in-memory model is exactly what `save` writes.
    text = booster.model_to_string(num_iteration=best)
    return lgb.Booster(model_str=text), int(best)


def fit_linear(matrix: Any, prompt_codes: np.ndarray, model_codes: np.ndarray,
                quality: np.ndarray, weight: np.ndarray, use: np.ndarray, n_models: int,
                c: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-model L2 logistic regression on TF-IDF rows: (coef (buckets, m) float32,
    intercept (m,) float64).

    Graded labels q in [0, 1] become soft labels: each row appears once as a
    success with weight q * w and once as a failure with weight (1 - q) * w, the
    weighted log loss of the probability against q. A model whose rows are all
    one class gets zero coefficients and the logit of its (clipped) mean.
    """
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    coef = np.zeros((matrix.shape[1], n_models), dtype=np.float32)
    intercept = np.zeros(n_models, dtype=np.float64)
    for m in range(n_models):
        rows = np.flatnonzero(use & (model_codes == m))
        q, w = quality[rows], weight[rows]
        pos_w, neg_w = q * w, (1.0 - q) * w
        if rows.size == 0 or pos_w.sum() <= 0 or neg_w.sum() <= 0:
            mean = float(np.average(q, weights=w)) if rows.size and w.sum() > 0 else 0.5
            mean = min(max(mean, 1e-3), 1 - 1e-3)
            intercept[m] = np.log(mean / (1 - mean))
            continue
        x = matrix[prompt_codes[rows]]
        keep_pos, keep_neg = pos_w > 0, neg_w > 0
        xx = sparse.vstack([x[keep_pos], x[keep_neg]], format="csr")
        yy = np.concatenate([np.ones(keep_pos.sum()), np.zeros(keep_neg.sum())])
        ww = np.concatenate([pos_w[keep_pos], neg_w[keep_neg]])
        # Rescaled by the mean row weight so C means the same whatever the weight unit.
        ww = ww / w.mean()
        lr = LogisticRegression(C=c, solver="lbfgs", max_iter=3000)
        lr.fit(xx, yy, sample_weight=ww)
        coef[:, m] = lr.coef_[0]
        intercept[m] = float(lr.intercept_[0])
    return coef, intercept
