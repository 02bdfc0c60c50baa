"""The building blocks `QualityModel.fit` is made of.

`check_table` validates the outcome table and fills optional columns,
`trained_models` checks every model has a price, `split_prompts` parses the
prompts and splits them into training, validation and held-out ones (the
`Design` rows every booster trains on are built from them), `train_booster`
trains one LightGBM booster with early stopping on validation prompts,
`fit_linear` fits the per-model logistic-regression head on TF-IDF rows,
`fit_output_tokens` the output-length booster and medians, `fit_timing_heads`
the latency heads (`router.predictor._latency`), `fit_metadata` what a fit
records.
`router.predictor._model` (`QualityModel.fit`) splits the prompts and wires these
together. Training-only dependencies (LightGBM, pandas, scikit-learn, scipy,
tqdm) are imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from router.catalog import Catalog
from router.conversation import Conversation, parse_conversation
from router.errors import ConfigError, DataError
from router.predictor._holdout import holdout_split
from router.predictor._latency import (
    LATENCY_QUANTILE,
    LATENCY_TAIL_NAMES,
    LatencyHead,
    fit_latency_head,
    latency_design,
)

if TYPE_CHECKING:
    from router.predictor._model import QualityModel

__all__ = [
    "DEFAULT_PARAMS",
    "MIN_OUTPUT_ROWS",
    "Design",
    "PromptSplit",
    "check_table",
    "fit_linear",
    "fit_metadata",
    "fit_output_tokens",
    "fit_timing_heads",
    "output_tokens_rows",
    "split_prompts",
    "train_booster",
    "trained_models",
]

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


@dataclass(frozen=True)
class PromptSplit:
    """The table's prompts, parsed once, and their roles (split by prompt, never by row)."""

    prompt_codes: np.ndarray  # (rows,) index of each row's prompt
    prompt_ids: Any  # (prompts,) the ids, first-seen order
    convs: list[Conversation]  # (prompts,)
    hold: np.ndarray  # prompt indices held out
    valid: np.ndarray  # prompt indices driving early stopping
    train: np.ndarray  # prompt indices trained on
    row_role: np.ndarray  # (rows,) int8: 0 train, 1 valid, 2 held out

    @property
    def rest(self) -> np.ndarray:
        """Every prompt not held out (what the features are fitted on), sorted."""
        return np.sort(np.concatenate([self.valid, self.train]))


def split_prompts(table: Any, holdout_frac: float, seed: int, *, valid_frac: float,
                  min_valid_prompts: int) -> PromptSplit:
    """Parse the checked table's prompts and split them: `holdout_frac` of them held
    out (seeded), then `valid_frac` of the rest for early stopping when the rest
    has at least `min_valid_prompts`."""
    import pandas as pd

    prompt_codes, prompt_ids = pd.factorize(table["prompt_id"], sort=False)
    first_rows = np.unique(prompt_codes, return_index=True)[1]
    messages = table["messages"].to_numpy()[first_rows]
    convs = [parse_conversation(m, where=f"prompt_id {pid!r}")
             for pid, m in zip(prompt_ids, messages, strict=True)]
    hold, rest = holdout_split(len(convs), holdout_frac, seed)
    n_valid = int(round(valid_frac * len(rest))) if len(rest) >= min_valid_prompts else 0
    role = np.zeros(len(convs), dtype=np.int8)
    role[rest[:n_valid]] = 1
    role[hold] = 2
    return PromptSplit(prompt_codes, prompt_ids, convs, hold, rest[:n_valid], rest[n_valid:],
                       role[prompt_codes])


def _output_targets(table: Any, catalog: Catalog, models: tuple[str, ...],
                    model_codes: np.ndarray) -> np.ndarray:
    """Known output tokens, else those implied by the row's cost and prices (NaN if neither)."""
    input_tokens = table["input_tokens"].to_numpy(dtype=np.float64)
    target = table["output_tokens"].to_numpy(dtype=np.float64).copy()
    price_in = np.array([catalog[m].input_usd_per_mtok for m in models])[model_codes]
    price_out = np.array([catalog[m].output_usd_per_mtok for m in models])[model_codes]
    cost = table["cost_usd"].to_numpy(dtype=np.float64)
    implied = np.isnan(target) & np.isfinite(cost) & (price_out > 0)
    target[implied] = np.maximum(
        0.0, (cost[implied] * 1e6 - input_tokens[implied] * price_in[implied])
        / price_out[implied])
    return target


def fit_output_tokens(lgb: Any, params: dict[str, Any], table: Any, catalog: Catalog,
                      models: tuple[str, ...], x: np.ndarray, model_codes: np.ndarray,
                      row_role: np.ndarray, names: list[str], cat_col: int,
                      rounds: tuple[int, int], *, progress: bool
                      ) -> tuple[Any | None, dict[str, float | None]]:
    """(booster on log1p(output tokens) or None, per-model medians or None) from the
    rows not held out; `rounds` is (max rounds, early-stopping rounds)."""
    target = _output_targets(table, catalog, models, model_codes)
    weight = table["weight"].to_numpy(dtype=np.float64)
    has_target = np.isfinite(target) & (target >= 0)
    medians = {}
    for i, m in enumerate(models):
        rows = has_target & (model_codes == i) & (row_role != 2)
        medians[m] = float(np.median(target[rows])) if rows.any() else None
    fit_rows = has_target & (row_role != 2)
    if fit_rows.sum() < MIN_OUTPUT_ROWS or np.ptp(target[fit_rows]) <= 0:
        return None, medians
    booster, _ = train_booster(
        # Lengths need less precision than quality: coarser steps, fewer rounds.
        lgb, {**params, "objective": "regression",
              "learning_rate": max(params["learning_rate"], 0.1)}, x[has_target],
        np.log1p(target[has_target]), weight[has_target], row_role[has_target],
        names, cat_col, *rounds, progress=progress, desc="output-token model")
    return booster, medians


@dataclass(frozen=True)
class Design:
    """What every booster of one fit is trained on."""

    lgb: Any
    params: dict[str, Any]
    x: np.ndarray  # (rows, features) design rows (router.predictor._design)
    model_codes: np.ndarray
    row_role: np.ndarray  # 0 train, 1 early-stopping validation, 2 held out
    names: list[str]
    cat_col: int
    rounds: tuple[int, int]  # (max rounds, early-stopping rounds)
    progress: bool


def trained_models(table: Any, catalog: Catalog) -> tuple[tuple[str, ...], Catalog]:
    """The table's models, cheapest first, and the catalog cut to them; every one
    must have a price."""
    import pandas as pd

    present = pd.unique(table["model"]).tolist()
    missing = [m for m in present if m not in catalog]
    if missing:
        raise ConfigError(f"model(s) not in the catalog and without prices: "
                          f"{', '.join(missing)}",
                          hint="pass --prices FILE with a row for each model, or train "
                               "with `router train` (training.data.load_priced_outcomes), "
                               "which learns their prices from the rows' cost_usd")
    models = tuple(catalog.by_price(present))
    return models, catalog.subset(models)


def output_tokens_rows(booster: Any | None, medians: Sequence[float | None],
                       default_output_tokens: float, x: np.ndarray, model_codes: np.ndarray,
                       *, threads: int) -> np.ndarray:
    """Predicted output tokens of design rows `x` (the rows' models `model_codes`, and
    `medians` per model, None where never seen answering)."""
    fallback = np.array([default_output_tokens if v is None else v for v in medians])
    out = fallback[model_codes].astype(np.float64)
    if booster is not None:
        # Models without any known length keep their fallback; the booster has
        # never seen them answer.
        use = np.array([v is not None for v in medians])[model_codes]
        if use.any():
            pred = booster.predict(x[use] if not use.all() else x, num_threads=threads)
            out[use] = np.maximum(np.expm1(pred), 0.0)
    return out


def fit_timing_heads(table: Any, design: Design, n_models: int,
                     output_tokens: Callable[[], np.ndarray]
                     ) -> tuple[LatencyHead | None, LatencyHead | None]:
    """(latency head, time-to-first-token head), each None where the table has no
    such column or no value in it. `output_tokens()` gives the predicted output
    tokens of every row (called only for a timed table)."""
    timed = [c for c in ("latency_ms", "ttft_ms") if c in table and table[c].notna().any()]
    if not timed:
        return None, None
    rows = latency_design(design.x, table["input_tokens"].to_numpy(dtype=np.float64),
                          output_tokens())
    heads = {column: fit_latency_head(
        design.lgb, design.params, rows, table[column].to_numpy(dtype=np.float64),
        table["weight"].to_numpy(dtype=np.float64), design.row_role, design.model_codes,
        n_models, [*design.names, *LATENCY_TAIL_NAMES], design.cat_col,
        train_booster=train_booster, rounds=design.rounds, progress=design.progress,
        desc=f"{column} model") for column in timed}
    return heads.get("latency_ms"), heads.get("ttft_ms")


def fit_metadata(model: QualityModel, table: Any, split: PromptSplit, *, seed: int,
                 holdout_frac: float, best_iteration: int,
                 params: dict[str, Any]) -> dict[str, Any]:
    """What a fit records in `QualityModel.metadata` (before measuring)."""
    return {
        "n_rows": int(len(table)),
        "n_prompts": int(len(split.convs)),
        "n_train_prompts": int(len(split.train)),
        "n_valid_prompts": int(len(split.valid)),
        "n_holdout_prompts": int(len(split.hold)),
        "models": list(model.models_),
        "seed": int(seed),
        "holdout_frac": float(holdout_frac),
        "best_iteration": int(best_iteration),
        "output_tokens_model": "booster" if model.output_tokens_ is not None else "medians",
        "latency_model": model.latency_.kind if model.latency_ is not None else "none",
        "ttft_model": model.ttft_.kind if model.ttft_ is not None else "none",
        "latency_quantile": LATENCY_QUANTILE,
        "params": {k: v for k, v in params.items() if not callable(v)},
        # So `router eval --holdout-only` can score exactly the unseen prompts
        # (unless `refit` folds them into the served model).
        "holdout_prompt_ids": [str(split.prompt_ids[i]) for i in np.sort(split.hold)],
    }
