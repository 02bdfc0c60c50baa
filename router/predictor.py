"""The quality model: LightGBM predictions of quality, output length and cost.

`QualityModel` follows the estimator pattern (`fit` returns `self`, learned state
ends in `_`, `predict` refuses to run unfitted, `save`/`load` write and read the
whole pipeline). It holds:

* `features_`: the fitted `router.features.FeatureExtractor`;
* `quality_`: ONE LightGBM booster over every (prompt, model) row. The model is a
  categorical feature, next to model descriptors (log input / output price, log
  context window) and the prompt features, so models share what they have in
  common (hard prompts are hard for everyone) and differ where the data says so.
  Objective `cross_entropy`: labels in [0, 1], correct for 0/1 outcomes
  (probability of success) and for graded scores (expected score);
* `linear_coef_`, `linear_intercept_`: a per-model L2 logistic regression on the
  prompt's sparse TF-IDF vector, blended with the booster by `linear_weight`
  (see `QualityModel`); None when `linear_weight` is 0;
* `output_tokens_`: a second booster for log1p(output tokens) per (prompt, model)
  when the table has them; otherwise per-model medians, otherwise
  `default_output_tokens`. Where a row has no `output_tokens` but has `cost_usd`,
  the output tokens implied by its cost and prices are used, so predicted costs
  agree with how the table was priced (for MMLU-style tables priced on input
  only that is zero);
* `catalog_`: the prices the model was trained with, used to turn tokens into USD.
  `with_prices` swaps them for costing only; the quality model keeps the
  descriptors it was trained on (`descriptors_`).

Predicted cost: (input tokens x input price + predicted output tokens x output
price) / 1e6, with input tokens from `Conversation.input_tokens`.

The artifact is a folder (see CONTRIBUTING.md, "The artifact"): `meta.json`,
`catalog.json`, `features.joblib`, `quality.lgb` and, when trained,
`output_tokens.lgb` and `linear.npz` (float32 coefficients (buckets x models),
intercepts). `meta.json` lists the sha256 of every other file; `load`
checks format version, feature schema version, presence and integrity and raises
`ArtifactError` naming what is wrong. `save` writes to a temporary sibling folder
and renames it into place, so a reader never sees half an artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from router.catalog import Catalog
from router.conversation import Conversation, parse_conversation
from router.errors import ArtifactError, ConfigError, DataError, NotFittedError, PolicyError
from router.features import FEATURE_SCHEMA_VERSION, FeatureExtractor

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "DEFAULT_BAR",
    "Prediction",
    "QualityModel",
    "holdout_metrics",
    "expected_calibration_error",
    "library_versions",
]

# 2: the linear quality head (linear.npz, meta "linear_weight").
ARTIFACT_FORMAT_VERSION = 2
DEFAULT_BAR = 0.7
META, CATALOG, FEATURES, QUALITY, OUTPUT_TOKENS, LINEAR = (
    "meta.json", "catalog.json", "features.joblib", "quality.lgb", "output_tokens.lgb",
    "linear.npz")
_REQUIRED_FILES = (CATALOG, FEATURES, QUALITY)
_DESCRIPTOR_NAMES = ("model_log_input_price", "model_log_output_price", "model_log_context")
_MIN_OUTPUT_ROWS = 50  # fewer known output lengths than this: medians beat a booster

_DEFAULT_PARAMS: dict[str, Any] = {
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


@dataclass(frozen=True)
class Prediction:
    """Predictions for n conversations x m models (rows follow the input order)."""

    models: tuple[str, ...]
    quality: np.ndarray  # (n, m) expected quality in [0, 1]
    output_tokens: np.ndarray  # (n, m) expected output tokens
    cost_usd: np.ndarray  # (n, m) expected cost in USD
    input_tokens: np.ndarray  # (n,) input tokens of each conversation


def library_versions() -> dict[str, str]:
    """Versions recorded in every artifact (a model is only trusted with its stack)."""
    import lightgbm
    import pandas
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__,
            "pandas": pandas.__version__, "scikit-learn": sklearn.__version__,
            "lightgbm": lightgbm.__version__}


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


class QualityModel:
    """LightGBM quality + output-token model; see the module docstring.

    Parameters: `params` override LightGBM parameters (objective and seed are
    set by `fit`); `num_boost_round` caps boosting rounds; with at least
    `min_valid_prompts` training prompts, `valid_frac` of them (split by prompt)
    drive early stopping after `early_stopping_rounds` rounds without gain;
    `default_output_tokens` is the answer length assumed for a model with no
    known lengths; `n_components` is the text representation width when `fit`
    builds the feature extractor itself. `n_jobs` is LightGBM's thread count for
    fitting and batch prediction: 1 by default because OpenMP spin-waiting on an
    oversubscribed machine (containers that see the host's cores, parallel test
    runs) made 2 threads 7x slower than 1 here; raise it on a dedicated machine.

    `linear_weight` blends a linear head into the quality prediction:
    quality = (1 - w) * booster + w * sigmoid(tfidf . coef_m + b_m), one L2
    logistic regression (inverse strength `linear_c`) per model on the sparse
    TF-IDF vector of the prompt (`FeatureExtractor.transform_with_tfidf`). The
    booster sees the text only through 64 SVD components; the linear head sees
    every training-seen word and bigram. 0.5 is the shipped default because it
    measured best in 5-fold CV (bench/quality.py: MMLU APGR 0.672 -> 0.689, GSM8K
    0.593 -> 0.625 over the booster alone); 0 disables the head (not fitted), 1
    uses it alone. The weight may be changed after fitting (e.g. to compare).
    """

    def __init__(self, *, params: Mapping[str, Any] | None = None,
                 num_boost_round: int = 1000, early_stopping_rounds: int = 50,
                 valid_frac: float = 0.1, min_valid_prompts: int = 50,
                 default_output_tokens: float = 256.0, n_components: int = 64,
                 n_jobs: int = 1, linear_weight: float = 0.5, linear_c: float = 1.0) -> None:
        self.params = params
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.valid_frac = valid_frac
        self.min_valid_prompts = min_valid_prompts
        self.default_output_tokens = default_output_tokens
        self.n_components = n_components
        self.n_jobs = n_jobs
        self.linear_weight = linear_weight
        self.linear_c = linear_c
        self.metadata: dict[str, Any] = {}

    # ------------------------------------------------------------------ fit
    def fit(self, table: Any, *, catalog: Catalog,
            feature_extractor: FeatureExtractor | None = None, holdout_frac: float = 0.0,
            seed: int = 0, progress: bool = False) -> QualityModel:
        """Fit features (training prompts only) and both boosters on `table`.

        `table` is the loaded outcome table (`training.data.load_outcomes`).
        With `holdout_frac > 0` that share of prompts is held out (split by
        prompt, never by row), the model is fitted on the rest, and held-out log
        loss, Brier, ECE, AUC (0/1 labels), output-token MAE and the default bar
        are stored in `metadata["metrics"]`.
        """
        import lightgbm as lgb
        import pandas as pd

        if not 0.0 <= holdout_frac < 1.0:
            raise DataError(f"holdout_frac must be in [0, 1), got {holdout_frac!r}")
        table = _check_table(table)
        models = tuple(catalog.by_price(pd.unique(table["model"]).tolist()))
        missing = [m for m in models if m not in catalog]
        if missing:
            raise ConfigError(f"model(s) not in the catalog and without prices: "
                              f"{', '.join(missing)}",
                              hint="pass --prices FILE with a row for each model")
        catalog = catalog.subset(models)
        model_index = {m: i for i, m in enumerate(models)}
        descriptors = np.array(
            [[np.log1p(catalog[m].input_usd_per_mtok), np.log1p(catalog[m].output_usd_per_mtok),
              np.log(catalog[m].context_tokens)] for m in models], dtype=np.float32)

        prompt_codes, prompt_ids = pd.factorize(table["prompt_id"], sort=False)
        first_rows = np.unique(prompt_codes, return_index=True)[1]
        messages = table["messages"].to_numpy()[first_rows]
        convs = [parse_conversation(m, where=f"prompt_id {pid!r}")
                 for pid, m in zip(prompt_ids, messages, strict=True)]
        n_prompts = len(convs)

        rng = np.random.default_rng(seed)
        order = rng.permutation(n_prompts)
        n_hold = int(round(holdout_frac * n_prompts)) if holdout_frac > 0 else 0
        if holdout_frac > 0 and not 1 <= n_hold < n_prompts:
            raise DataError(f"cannot hold out {holdout_frac:.0%} of {n_prompts} prompt(s)",
                            hint="use more prompts or --holdout-frac 0")
        hold_prompts, rest = order[:n_hold], order[n_hold:]
        n_valid = (int(round(self.valid_frac * len(rest)))
                   if len(rest) >= self.min_valid_prompts else 0)
        valid_prompts, train_prompts = rest[:n_valid], rest[n_valid:]

        features = feature_extractor if feature_extractor is not None else FeatureExtractor(
            n_components=self.n_components, random_state=seed)
        features.fit([convs[i] for i in np.sort(rest)])
        prompt_x, tfidf_rows = features.transform_with_tfidf(convs)
        names = [*features.feature_names_, "model", *_DESCRIPTOR_NAMES]

        model_codes = table["model"].map(model_index).to_numpy(dtype=np.int64)
        x = _rows(prompt_x, prompt_codes, model_codes, descriptors)
        role = np.zeros(n_prompts, dtype=np.int8)  # 0 train, 1 valid, 2 held out
        role[valid_prompts] = 1
        role[hold_prompts] = 2
        row_role = role[prompt_codes]
        quality = table["quality"].to_numpy(dtype=np.float64)
        weight = table["weight"].to_numpy(dtype=np.float64)
        linear = None
        if self.linear_weight > 0:
            linear = _fit_linear(features.tfidf_matrix(tfidf_rows), prompt_codes, model_codes,
                                 quality, weight, row_role != 2, len(models), self.linear_c)
        cat_col = len(names) - len(_DESCRIPTOR_NAMES) - 1

        params = {**_DEFAULT_PARAMS, "num_threads": self.n_jobs, **(self.params or {}),
                  "seed": seed,
                  "deterministic": True, "force_row_wise": True}
        quality_booster, best_q = _train_booster(
            lgb, {**params, "objective": "cross_entropy"}, x, quality, weight, row_role,
            names, cat_col, self.num_boost_round, self.early_stopping_rounds,
            progress=progress, desc="quality model")

        # Output tokens: known values, else implied by cost and prices.
        input_tokens = table["input_tokens"].to_numpy(dtype=np.float64)
        known_out = table["output_tokens"].to_numpy(dtype=np.float64)
        target = known_out.copy()
        price_in = np.array([catalog[m].input_usd_per_mtok for m in models])[model_codes]
        price_out = np.array([catalog[m].output_usd_per_mtok for m in models])[model_codes]
        cost = table["cost_usd"].to_numpy(dtype=np.float64)
        implied = np.isnan(target) & np.isfinite(cost) & (price_out > 0)
        target[implied] = np.maximum(
            0.0, (cost[implied] * 1e6 - input_tokens[implied] * price_in[implied])
            / price_out[implied])
        has_target = np.isfinite(target) & (target >= 0)
        medians = {}
        for m, i in model_index.items():
            rows = has_target & (model_codes == i) & (row_role != 2)
            medians[m] = float(np.median(target[rows])) if rows.any() else None
        output_booster = None
        fit_rows = has_target & (row_role != 2)
        if fit_rows.sum() >= _MIN_OUTPUT_ROWS and np.ptp(target[fit_rows]) > 0:
            output_booster, _ = _train_booster(
                # Lengths need less precision than quality: coarser steps, fewer rounds.
                lgb, {**params, "objective": "regression",
                      "learning_rate": max(params["learning_rate"], 0.1)}, x[has_target],
                np.log1p(target[has_target]), weight[has_target], row_role[has_target],
                names, cat_col, self.num_boost_round, self.early_stopping_rounds,
                progress=progress, desc="output-token model")

        self.models_ = models
        self.catalog_ = catalog
        self.descriptors_ = descriptors
        self.features_ = features
        self.quality_ = quality_booster
        self.linear_coef_, self.linear_intercept_ = linear if linear is not None else (None, None)
        self.output_tokens_ = output_booster
        self.output_medians_ = medians
        self.feature_names_ = names
        self.metadata = {
            "n_rows": int(len(table)),
            "n_prompts": int(n_prompts),
            "n_train_prompts": int(len(train_prompts)),
            "n_valid_prompts": int(len(valid_prompts)),
            "n_holdout_prompts": int(n_hold),
            "models": list(models),
            "seed": int(seed),
            "holdout_frac": float(holdout_frac),
            "best_iteration": int(best_q),
            "output_tokens_model": "booster" if output_booster is not None else "medians",
            "params": {k: v for k, v in params.items() if not callable(v)},
            "default_bar": DEFAULT_BAR,
            "default_bar_source": "default (no held-out prompts)",
            # So `router eval --holdout-only` can score exactly the unseen prompts.
            "holdout_prompt_ids": [str(prompt_ids[i]) for i in np.sort(hold_prompts)],
        }
        if n_hold:
            self.metadata.update(self._evaluate_holdout(
                table, row_role == 2, x, quality, model_codes, known_out, prompt_codes,
                [convs[i] for i in hold_prompts], hold_prompts))
        return self

    def _evaluate_holdout(self, table: Any, rows: np.ndarray, x: np.ndarray,
                          quality: np.ndarray, model_codes: np.ndarray,
                          known_out: np.ndarray, prompt_codes: np.ndarray,
                          hold_convs: list[Conversation],
                          hold_prompts: np.ndarray) -> dict[str, Any]:
        hold_p = self.quality_.predict(x[rows], num_threads=self.n_jobs)
        if self._linear_on():
            _, hold_rows = self.features_.transform_with_tfidf(hold_convs)
            local = {int(p): i for i, p in enumerate(hold_prompts)}
            where = np.array([local[int(p)] for p in prompt_codes[rows]], dtype=np.int64)
            hold_p = self._blend(hold_p, self._linear_logits(hold_rows)[where,
                                                                     model_codes[rows]])
        metrics = holdout_metrics(quality[rows], hold_p)
        metrics["rows"] = int(rows.sum())
        known = rows & np.isfinite(known_out)
        if known.any():
            predicted = self._output_tokens_rows(x[known], model_codes[known],
                                                 threads=self.n_jobs)
            metrics["output_tokens_mae"] = float(np.mean(np.abs(predicted - known_out[known])))
        bar, source, routing = self._default_bar(table, rows, quality, model_codes,
                                                 prompt_codes, hold_convs, hold_prompts)
        metrics.update(routing)
        return {"metrics": metrics, "default_bar": bar, "default_bar_source": source}

    def _default_bar(self, table: Any, rows: np.ndarray, quality: np.ndarray,
                     model_codes: np.ndarray, prompt_codes: np.ndarray,
                     hold_convs: list[Conversation],
                     hold_prompts: np.ndarray) -> tuple[float, str, dict[str, float]]:
        """Lowest bar whose routed held-out quality reaches the best single model's
        at no more than its cost.

        Only held-out prompts answered by every model count (a routed choice must
        have a known outcome). Falls back to `DEFAULT_BAR` when the router never
        reaches the best single model or too few prompts are complete.
        """
        from router.policy import choose

        m = len(self.models_)
        local = {int(p): i for i, p in enumerate(hold_prompts)}
        actual_q = np.full((len(hold_prompts), m), np.nan)
        actual_c = np.full((len(hold_prompts), m), np.nan)
        where = np.array([local[int(p)] for p in prompt_codes[rows]], dtype=np.int64)
        actual_q[where, model_codes[rows]] = quality[rows]
        actual_c[where, model_codes[rows]] = table["cost_usd"].to_numpy(np.float64)[rows]
        complete = ~np.isnan(actual_q).any(axis=1)
        if complete.sum() < 10 or m < 2:
            return DEFAULT_BAR, "default (fewer than 10 complete held-out prompts)", {}
        pred = self.predict([hold_convs[i] for i in np.flatnonzero(complete)])
        aq, ac = actual_q[complete], actual_c[complete]
        # Rows without a cost of their own are counted at the predicted cost.
        ac = np.where(np.isnan(ac), pred.cost_usd, ac)
        single_q = aq.mean(axis=0)
        best = int(np.argmax(single_q))
        out = {"best_single_model": self.models_[best],
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

    # -------------------------------------------------------------- predict
    def predict(self, conversations: Iterable[Any],
                models: Sequence[str] | None = None) -> Prediction:
        """Expected quality, output tokens and cost for every conversation x model.

        `conversations`: `Conversation` objects, prompt strings or message lists.
        `models`: a subset of `models_` (in the order given); default all.

        This is the serving hot path (one conversation per request), so every
        per-model constant lives in a `_Serving` plan built once per fitted state
        and the boosters are called through LightGBM's C API directly (see
        `_FastBooster`). One conversation and a batch run the same code, so row i
        of a batch equals the prediction for conversation i alone.
        """
        self._check_fitted()
        convs = [c if isinstance(c, Conversation) else parse_conversation(c, where=f"item {i}")
                 for i, c in enumerate(conversations)]
        serving = self._serving()
        codes = serving.codes(models, self)
        n, m = len(convs), len(codes)
        input_tokens = np.array([c.input_tokens for c in convs], dtype=np.float64)
        if n == 0:
            empty = np.zeros((0, m))
            return Prediction(serving.names(codes), empty, empty.copy(), empty.copy(),
                              input_tokens)
        linear_on = serving.linear is not None and self.linear_weight > 0
        if linear_on:
            prompt_x, tfidf_rows = self.features_.transform_with_tfidf(convs)
        else:
            prompt_x = self.features_.transform(convs)
        plan = serving.plan(codes)
        x = plan.design(prompt_x)
        # One thread for a request: OpenMP start-up costs more than it saves.
        threads = 1 if n * m <= 4096 else self.n_jobs
        quality = serving.quality.predict(x, threads)
        if linear_on:
            quality = self._blend(quality, serving.linear_logits(tfidf_rows)[:, codes].ravel())
        np.clip(quality, 0.0, 1.0, out=quality)
        out_tokens = plan.output_tokens(x, n, serving.output_tokens, threads)
        cost = (input_tokens[:, None] * plan.price_in + out_tokens * plan.price_out) / 1e6
        return Prediction(plan.names, quality.reshape(n, m), out_tokens, cost, input_tokens)

    def _serving(self) -> _Serving:
        """The prediction plan for the current fitted state, built on first use.

        Keyed on the identity of every input it is derived from, so `fit`,
        `load`, `with_prices` or a test assigning `linear_coef_` never see a stale
        plan. Building it twice from two threads is harmless (same content; the
        last one wins), so no lock is needed.
        """
        key = (id(self.quality_), id(self.output_tokens_), id(self.catalog_),
               id(self.descriptors_), id(getattr(self, "linear_coef_", None)),
               id(getattr(self, "linear_intercept_", None)), id(self.output_medians_),
               self.default_output_tokens, self.models_)
        serving = self.__dict__.get("_serving_plan")
        if serving is None or serving.key != key:
            serving = _Serving(self, key)
            self._serving_plan = serving
        return serving

    def __getstate__(self) -> dict[str, Any]:
        # The plan holds C handles and is cheap to rebuild: never pickle it.
        state = self.__dict__.copy()
        state.pop("_serving_plan", None)
        return state

    def _linear_on(self) -> bool:
        return self.linear_weight > 0 and getattr(self, "linear_coef_", None) is not None

    def _linear_logits(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(n, n_models) float64 logits of the linear head for TF-IDF rows."""
        coef, out = self.linear_coef_, np.empty((len(rows), len(self.models_)))
        out[:] = self.linear_intercept_
        for i, (pos, vals) in enumerate(rows):
            # A gather of the prompt's few hundred rows beats a sparse product
            # for one request (no scipy matrix to build).
            if len(pos):
                out[i] += vals @ coef[pos]
        return out

    def _blend(self, booster_p: np.ndarray, logits: np.ndarray) -> np.ndarray:
        w = float(self.linear_weight)
        return (1.0 - w) * booster_p + w / (1.0 + np.exp(-logits))

    def _output_tokens_rows(self, x: np.ndarray, model_codes: np.ndarray, *,
                            threads: int) -> np.ndarray:
        fallback = np.array([self.default_output_tokens if v is None else v
                             for v in (self.output_medians_[mm] for mm in self.models_)])
        out = fallback[model_codes].astype(np.float64)
        if self.output_tokens_ is not None:
            # Models without any known length keep their fallback; the booster has
            # never seen them answer.
            learned = np.array([self.output_medians_[mm] is not None for mm in self.models_])
            use = learned[model_codes]
            if use.any():
                pred = self.output_tokens_.predict(x[use] if not use.all() else x,
                                                   num_threads=threads)
                out[use] = np.maximum(np.expm1(pred), 0.0)
        return out

    def _model_codes(self, models: Sequence[str] | None) -> np.ndarray:
        if models is None:
            return np.arange(len(self.models_))
        index = {m: i for i, m in enumerate(self.models_)}
        unknown = [m for m in models if m not in index]
        if unknown:
            raise PolicyError(f"unknown model(s) for this quality model: {', '.join(unknown)}",
                              hint=f"trained models: {', '.join(self.models_)}")
        if not models:
            raise PolicyError("no models to predict for",
                              hint=f"trained models: {', '.join(self.models_)}")
        return np.array([index[m] for m in models], dtype=np.int64)

    def with_prices(self, prices: Catalog | Mapping[str, tuple[float, float, int | None]]
                    ) -> QualityModel:
        """A copy that prices predictions with `prices` (quality is unchanged).

        Every trained model must have a price; extra models are ignored.
        """
        self._check_fitted()
        catalog = (prices if isinstance(prices, Catalog)
                   else self.catalog_.with_prices(prices))
        missing = [m for m in self.models_ if m not in catalog]
        if missing:
            raise ConfigError(f"no price for trained model(s): {', '.join(missing)}",
                              hint="add a row for each to the prices file")
        clone = object.__new__(QualityModel)
        clone.__dict__.update(self.__dict__)
        clone.catalog_ = catalog.subset(self.models_)
        clone.metadata = dict(self.metadata)
        return clone

    @property
    def version(self) -> str:
        """The artifact's version id ('' before it is saved or loaded)."""
        return str(self.metadata.get("version_id", ""))

    @property
    def default_bar(self) -> float:
        return float(self.metadata.get("default_bar", DEFAULT_BAR))

    def _check_fitted(self) -> None:
        if not hasattr(self, "quality_"):
            raise NotFittedError("QualityModel is not fitted",
                                 hint="call fit(table, catalog=...) or QualityModel.load(dir)")

    # ------------------------------------------------------------ artifact
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the artifact folder atomically; returns its path.

        An existing folder is replaced only when it is an artifact itself (has a
        `meta.json`) or is empty, so a mistyped `--out` cannot delete user files.
        """
        import joblib

        self._check_fitted()
        target = Path(directory)
        if target.exists() and not (target.is_dir() and (
                (target / META).is_file() or not any(target.iterdir()))):
            raise ArtifactError(f"{target}: exists and is not a model artifact; "
                                "refusing to overwrite it",
                                hint="choose a new --out folder or remove this one")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        try:
            (staging / CATALOG).write_text(
                json.dumps(self.catalog_.to_dict(), indent=2, sort_keys=True) + "\n",
                encoding="utf-8")
            joblib.dump(self.features_, staging / FEATURES)
            self.quality_.save_model(str(staging / QUALITY))
            files = [CATALOG, FEATURES, QUALITY]
            if self.linear_coef_ is not None:
                with (staging / LINEAR).open("wb") as handle:
                    np.savez(handle, coef=self.linear_coef_, intercept=self.linear_intercept_)
                files.append(LINEAR)
            if self.output_tokens_ is not None:
                self.output_tokens_.save_model(str(staging / OUTPUT_TOKENS))
                files.append(OUTPUT_TOKENS)
            meta = dict(self.metadata)
            meta.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
            if not meta.get("version_id"):
                meta["version_id"] = (f"v{datetime.now(UTC):%Y%m%d-%H%M%S}-"
                                      f"{_sha256(staging / QUALITY)[:8]}")
            meta.update({
                "format_version": ARTIFACT_FORMAT_VERSION,
                "feature_schema_version": FEATURE_SCHEMA_VERSION,
                "models": list(self.models_),
                "descriptors": self.descriptors_.tolist(),
                "output_medians": self.output_medians_,
                "default_output_tokens": float(self.default_output_tokens),
                "linear_weight": (float(self.linear_weight)
                                  if self.linear_coef_ is not None else 0.0),
                "feature_names": list(self.feature_names_),
                "library_versions": meta.get("library_versions") or library_versions(),
                "files": {name: _sha256(staging / name) for name in files},
            })
            (staging / META).write_text(json.dumps(meta, indent=2, sort_keys=True,
                                                    default=str) + "\n", encoding="utf-8")
            old = None
            if target.exists():
                old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(target, old)
            os.rename(staging, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.metadata = meta
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> QualityModel:
        """Read an artifact folder, checking versions and every file's sha256."""
        import joblib
        import lightgbm as lgb

        folder = Path(directory)
        retrain = f"retrain it: router train --data FILE --out {folder}"
        if not folder.is_dir():
            raise ArtifactError(f"{folder}: model folder not found",
                                hint="pass the folder written by `router train --out DIR`")
        meta_path = folder / META
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArtifactError(f"{meta_path}: missing; {folder} is not a trained model "
                                "folder", hint="pass the folder written by `router train "
                                "--out DIR`") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{meta_path}: corrupt, not valid JSON ({exc})",
                                hint=retrain) from None
        if not isinstance(meta, dict):
            raise ArtifactError(f"{meta_path}: corrupt, expected a JSON object", hint=retrain)
        fmt = meta.get("format_version")
        if fmt != ARTIFACT_FORMAT_VERSION:
            raise ArtifactError(f"{folder}: artifact format version {fmt!r}, this router "
                                f"reads version {ARTIFACT_FORMAT_VERSION}",
                                hint=f"use the router release that wrote it, or {retrain}")
        schema = meta.get("feature_schema_version")
        if schema != FEATURE_SCHEMA_VERSION:
            raise ArtifactError(f"{folder}: feature schema version {schema!r}, this router "
                                f"computes version {FEATURE_SCHEMA_VERSION}",
                                hint=f"features changed since it was trained; {retrain}")
        files = meta.get("files")
        if not isinstance(files, dict):
            raise ArtifactError(f"{meta_path}: corrupt, no 'files' checksums", hint=retrain)
        for name in _REQUIRED_FILES:
            if name not in files:
                raise ArtifactError(f"{meta_path}: corrupt, {name} is not listed", hint=retrain)
        for name, digest in files.items():
            path = folder / name
            if not path.is_file():
                raise ArtifactError(f"{path}: missing from the model folder", hint=retrain)
            if _sha256(path) != digest:
                raise ArtifactError(f"{path}: corrupt (sha256 differs from meta.json)",
                                    hint=retrain)
        self = cls()
        try:
            self.catalog_ = Catalog.from_dict(json.loads((folder / CATALOG).read_text("utf-8")),
                                              source=str(folder / CATALOG))
            self.features_ = joblib.load(folder / FEATURES)
            self.quality_ = lgb.Booster(model_file=str(folder / QUALITY))
            self.output_tokens_ = (lgb.Booster(model_file=str(folder / OUTPUT_TOKENS))
                                   if OUTPUT_TOKENS in files else None)
            self.linear_weight = float(meta["linear_weight"])
            self.linear_coef_ = self.linear_intercept_ = None
            if self.linear_weight > 0:
                if LINEAR not in files:
                    raise ArtifactError(f"{meta_path}: corrupt, linear_weight "
                                        f"{self.linear_weight} but {LINEAR} is not listed",
                                        hint=retrain)
                with np.load(folder / LINEAR, allow_pickle=False) as npz:
                    self.linear_coef_ = np.ascontiguousarray(npz["coef"], dtype=np.float32)
                    self.linear_intercept_ = np.asarray(npz["intercept"], dtype=np.float64)
            self.models_ = tuple(meta["models"])
            self.descriptors_ = np.asarray(meta["descriptors"], dtype=np.float32)
            self.output_medians_ = dict(meta["output_medians"])
            self.default_output_tokens = float(meta["default_output_tokens"])
            self.feature_names_ = list(meta["feature_names"])
        except (KeyError, TypeError, ValueError, EOFError, ConfigError, lgb.basic.LightGBMError,
                ImportError, AttributeError) as exc:
            raise ArtifactError(f"{folder}: cannot be read ({type(exc).__name__}: {exc})",
                                hint=retrain) from None
        if not isinstance(self.features_, FeatureExtractor):
            raise ArtifactError(f"{folder / FEATURES}: not a FeatureExtractor", hint=retrain)
        if self.linear_coef_ is not None and (
                self.linear_coef_.shape != (len(self.features_.buckets_), len(self.models_))
                or self.linear_intercept_.shape != (len(self.models_),)):
            raise ArtifactError(f"{folder / LINEAR}: shape {self.linear_coef_.shape} does not "
                                "match the features and models", hint=retrain)
        if self.descriptors_.shape != (len(self.models_), len(_DESCRIPTOR_NAMES)):
            raise ArtifactError(f"{meta_path}: descriptors do not match the models",
                                hint=retrain)
        self.metadata = meta
        return self


# ---------------------------------------------------------------------- helpers
def _rows(prompt_x: np.ndarray, prompt_idx: np.ndarray, model_codes: np.ndarray,
          descriptors: np.ndarray) -> np.ndarray:
    """The (prompt, model) design matrix: prompt features, model code, descriptors."""
    d = prompt_x.shape[1]
    x = np.empty((len(prompt_idx), d + 1 + descriptors.shape[1]), dtype=np.float32)
    x[:, :d] = prompt_x[prompt_idx]
    x[:, d] = model_codes
    x[:, d + 1:] = descriptors[model_codes]
    return x


class _FastBooster:
    """`Booster.predict` for float32 row-major matrices without its per-call glue.

    `lightgbm.Booster.predict` builds a fresh `_InnerPredictor` on every call
    (deep copy of the parameters, parameter string rebuilt, two extra C calls):
    about 45 us of Python per call, more than the trees cost for 8 rows. This
    calls `LGBM_BoosterPredictForMat` directly with what `Booster.predict(x,
    num_threads=t)` would pass (normal prediction, start iteration 0, the
    booster's `best_iteration`), so the numbers are the same bit for bit.

    Thread-safe: no state is mutated per call (the output array is allocated per
    call, LightGBM guards its booster with its own lock, ctypes releases the
    GIL). Holds the booster so its C handle outlives this object.
    """

    def __init__(self, booster: Any) -> None:
        import ctypes

        import lightgbm as lgb

        self.booster = booster
        self._lib = lgb.basic._LIB
        self._safe_call = lgb.basic._safe_call
        self._ctypes = ctypes
        self._handle = booster._handle
        self._num_iteration = ctypes.c_int(int(booster.best_iteration))
        self._n_features = int(booster.num_feature())
        self._params: dict[int, bytes] = {}

    def predict(self, x: np.ndarray, threads: int) -> np.ndarray:
        """float64 (len(x),) predictions for a C-contiguous float32 (n, features) matrix."""
        ct = self._ctypes
        if x.dtype != np.float32 or not x.flags.c_contiguous or x.ndim != 2:
            x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[1] != self._n_features:
            # Let LightGBM word the error exactly as Booster.predict would.
            return self.booster.predict(x, num_threads=threads)
        params = self._params.get(threads)
        if params is None:
            params = self._params[threads] = f"num_threads={threads}".encode()
        n = x.shape[0]
        out = np.empty(n, dtype=np.float64)
        written = ct.c_int64(0)
        self._safe_call(self._lib.LGBM_BoosterPredictForMat(
            self._handle, ct.c_void_p(x.ctypes.data), ct.c_int(0),  # C_API_DTYPE_FLOAT32
            ct.c_int32(n), ct.c_int32(x.shape[1]), ct.c_int(1),  # row major
            ct.c_int(0), ct.c_int(0), self._num_iteration,  # normal, from iteration 0
            ct.c_char_p(params), ct.byref(written),
            ct.c_void_p(out.ctypes.data)))
        if written.value != n:
            raise ValueError(f"LightGBM wrote {written.value} predictions for {n} rows")
        return out


class _Plan:
    """Per-model constants for one ordered selection of models (`codes`)."""

    def __init__(self, models: tuple[str, ...], d: int, descriptors: np.ndarray,
                 codes: np.ndarray, prices_in: np.ndarray, prices_out: np.ndarray,
                 fallback: np.ndarray, learned: np.ndarray) -> None:
        self.codes = codes
        self.names = tuple(models[i] for i in codes)
        self.d = d
        # The model columns of the design matrix: code, then descriptors (as `_rows`).
        tail = np.empty((len(codes), 1 + descriptors.shape[1]), dtype=np.float32)
        tail[:, 0] = codes
        tail[:, 1:] = descriptors[codes]
        self.tail = tail
        self.price_in = prices_in[codes]
        self.price_out = prices_out[codes]
        self.fallback = fallback[codes]
        self.learned = learned[codes]
        self.all_learned = bool(self.learned.all())
        self.any_learned = bool(self.learned.any())

    def design(self, prompt_x: np.ndarray) -> np.ndarray:
        """The (n * m, features) float32 design matrix, rows prompt-major (as `_rows`)."""
        n, m, d = len(prompt_x), len(self.codes), self.d
        x = np.empty((n, m, d + self.tail.shape[1]), dtype=np.float32)
        x[:, :, :d] = prompt_x[:, None, :]
        x[:, :, d:] = self.tail
        return x.reshape(n * m, -1)

    def output_tokens(self, x: np.ndarray, n: int, booster: _FastBooster | None,
                      threads: int) -> np.ndarray:
        """(n, m) expected output tokens; models never seen answering keep the fallback."""
        out = np.tile(self.fallback, n)
        if booster is not None and self.any_learned:
            if self.all_learned:
                out = np.maximum(np.expm1(booster.predict(x, threads)), 0.0)
            else:
                use = np.tile(self.learned, n)
                out[use] = np.maximum(np.expm1(booster.predict(x[use], threads)), 0.0)
        return out.reshape(n, len(self.codes))


class _Serving:
    """Everything `QualityModel.predict` derives from the fitted state, built once.

    Holds references to its inputs so the identities in `key` stay unique for as
    long as the plan lives.
    """

    def __init__(self, model: QualityModel, key: tuple[Any, ...]) -> None:
        self.key = key
        self._refs = (model.quality_, model.output_tokens_, model.catalog_,
                      model.descriptors_, getattr(model, "linear_coef_", None),
                      getattr(model, "linear_intercept_", None), model.output_medians_)
        self.models = model.models_
        self.index = {m: i for i, m in enumerate(model.models_)}
        self.quality = _FastBooster(model.quality_)
        self.output_tokens = (_FastBooster(model.output_tokens_)
                              if model.output_tokens_ is not None else None)
        coef = getattr(model, "linear_coef_", None)
        self.linear = None
        if coef is not None:
            self.linear = (np.ascontiguousarray(coef, dtype=np.float32),
                           np.asarray(model.linear_intercept_, dtype=np.float64))
        medians = [model.output_medians_[m] for m in model.models_]
        self._args = (
            model.models_, len(model.feature_names_) - 1 - len(_DESCRIPTOR_NAMES),
            model.descriptors_)
        self._prices = (
            np.array([model.catalog_[m].input_usd_per_mtok for m in model.models_],
                     dtype=np.float64),
            np.array([model.catalog_[m].output_usd_per_mtok for m in model.models_],
                     dtype=np.float64),
            np.array([model.default_output_tokens if v is None else v for v in medians],
                     dtype=np.float64),
            np.array([v is not None for v in medians], dtype=bool))
        self.all_codes = np.arange(len(model.models_))
        self._plans: dict[tuple[int, ...], _Plan] = {}
        self._all = self._plans[tuple(range(len(model.models_)))] = _Plan(
            *self._args, self.all_codes, *self._prices)

    def codes(self, models: Sequence[str] | None, model: QualityModel) -> np.ndarray:
        if models is None:
            return self.all_codes
        return model._model_codes(models)

    def names(self, codes: np.ndarray) -> tuple[str, ...]:
        return tuple(self.models[i] for i in codes)

    def plan(self, codes: np.ndarray) -> _Plan:
        if codes is self.all_codes:
            return self._all
        key = tuple(int(c) for c in codes)
        plan = self._plans.get(key)
        if plan is None:
            plan = _Plan(*self._args, np.asarray(codes, dtype=np.int64), *self._prices)
            if len(self._plans) < 64:  # bounded: callers pass few distinct selections
                self._plans[key] = plan
        return plan

    def linear_logits(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(n, n_models) float64 logits of the linear head (as `_linear_logits`)."""
        coef, intercept = self.linear
        out = np.empty((len(rows), len(intercept)))
        out[:] = intercept
        for i, (pos, vals) in enumerate(rows):
            # Only the prompt's non-zero buckets: a gather of a few hundred rows
            # beats a sparse product for one request.
            if len(pos):
                out[i] += vals @ coef[pos]
        return out


def _fit_linear(matrix: Any, prompt_codes: np.ndarray, model_codes: np.ndarray,
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


def _train_booster(lgb: Any, params: dict[str, Any], x: np.ndarray, y: np.ndarray,
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


def _check_table(table: Any) -> Any:
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
