"""The estimator: `QualityModel` (how `fit` wires the pieces, `predict`, `save`/`load`)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.catalog import Catalog
from router.conversation import Conversation, parse_conversation
from router.errors import ArtifactError, ConfigError, DataError, NotFittedError, PolicyError
from router.features import FeatureExtractor
from router.policy import BarCalibration
from router.predictor._artifact import (
    read_artifact,
    write_artifact,
)
from router.predictor._design import DESCRIPTOR_NAMES, design_rows, model_descriptors
from router.predictor._fit import (
    DEFAULT_PARAMS,
    Design,
    PromptSplit,
    check_table,
    fit_linear,
    fit_metadata,
    fit_output_tokens,
    fit_timing_heads,
    output_tokens_rows,
    split_prompts,
    train_booster,
    trained_models,
)
from router.predictor._holdout import measure_model
from router.predictor._serving import ServingPlan

__all__ = ["Prediction", "QualityModel"]


@dataclass(frozen=True)
class Prediction:
    """Predictions for n conversations x m models (rows follow the input order)."""

    models: tuple[str, ...]
    quality: np.ndarray  # (n, m) expected quality in [0, 1]
    output_tokens: np.ndarray  # (n, m) expected output tokens
    cost_usd: np.ndarray  # (n, m) expected cost in USD
    input_tokens: np.ndarray  # (n,) input tokens of each conversation
    # (n, m) expected latency of the whole answer / of the first token, ms: a high
    # quantile (`LATENCY_QUANTILE`, P97.5; see router.predictor._latency); None when the model was
    # trained on a table without that column.
    latency_ms: np.ndarray | None = None
    ttft_ms: np.ndarray | None = None


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
    booster sees the text only through the SVD components; the linear head sees
    every training-seen word and bigram. 0.5 is the shipped default because it
    measured best in 5-fold CV (bench/quality.py, default-rule AIQ and APGR): also
    against choosing w per fit by routing AIQ on the validation prompts, which
    measured no better (MMLU APGR 0.678 vs 0.685, GSM8K 0.602 vs 0.610, demo AIQ
    0.9296 vs 0.9314; the validation prompts are too few to choose well). 0
    disables the head (not fitted), 1 uses it alone. The weight may be changed
    after fitting (e.g. to compare).

    `refit`: with held-out prompts, once they have measured the model and
    calibrated the bar, fit every learned part again on all prompts
    (`metadata["refit_on_all_prompts"]`), keeping the measurements and the
    calibration. Off by default: in 5-fold CV over three seeds it helped the
    large two-model sets (MMLU APGR 0.685 -> 0.694) but cost the 15-model
    arena_bench_v1 0.009 AIQ on average (the calibration was measured on the
    other fit's predictions). Without it the held-out prompts stay unseen, so
    `router eval --holdout-only` can score them.
    """

    def __init__(self, *, params: Mapping[str, Any] | None = None,
                 num_boost_round: int = 1000, early_stopping_rounds: int = 50,
                 valid_frac: float = 0.1, min_valid_prompts: int = 50,
                 default_output_tokens: float = 256.0, n_components: int = 64,
                 n_jobs: int = 1, linear_weight: float = 0.5, linear_c: float = 1.0,
                 refit: bool = False) -> None:
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
        self.refit = refit
        self.metadata: dict[str, Any] = {}

    # ------------------------------------------------------------------ fit
    def fit(self, table: Any, *, catalog: Catalog,
            feature_extractor: FeatureExtractor | None = None, holdout_frac: float = 0.0,
            seed: int = 0, progress: bool = False) -> QualityModel:
        """Fit features (training prompts only) and every booster on `table`.

        `table` is the loaded outcome table (`training.data.load_outcomes`).
        With `holdout_frac > 0` that share of prompts is held out (split by
        prompt, never by row), the model is fitted on the rest, and held-out log
        loss, Brier, ECE, AUC (0/1 labels), output-token MAE and, where the
        table is timed, latency error are stored in `metadata["metrics"]`.
        Either way the bar is calibrated (`metadata["bar_calibration"]`,
        `default_bar`; see `router.policy`). Where the table has `latency_ms` /
        `ttft_ms`, their P97.5 is predicted too (`router.predictor._latency`;
        `metadata["latency_model"]`, `["ttft_model"]`: booster, per_model or none).
        """
        import lightgbm as lgb

        if not 0.0 <= holdout_frac < 1.0:
            raise DataError(f"holdout_frac must be in [0, 1), got {holdout_frac!r}")
        table = check_table(table)
        models, catalog = trained_models(table, catalog)
        split = split_prompts(table, holdout_frac, seed, valid_frac=self.valid_frac,
                              min_valid_prompts=self.min_valid_prompts)
        features = feature_extractor if feature_extractor is not None else FeatureExtractor(
            n_components=self.n_components, random_state=seed)
        features.fit([split.convs[i] for i in split.rest])
        prompt_x, tfidf_rows = features.transform_with_tfidf(split.convs)
        names = [*features.feature_names_, "model", *DESCRIPTOR_NAMES]
        model_codes = table["model"].map({m: i for i, m in enumerate(models)}
                                         ).to_numpy(dtype=np.int64)
        descriptors = model_descriptors(catalog, models)
        params = {**DEFAULT_PARAMS, "num_threads": self.n_jobs, **(self.params or {}),
                  "seed": seed, "deterministic": True, "force_row_wise": True}
        design = Design(lgb, params,
                         design_rows(prompt_x, split.prompt_codes, model_codes, descriptors),
                         model_codes, split.row_role, names,
                         len(names) - len(DESCRIPTOR_NAMES) - 1,
                         (self.num_boost_round, self.early_stopping_rounds), progress)

        quality_booster, best_q, linear = self._fit_quality(table, design, features,
                                                            tfidf_rows, split, len(models))
        output_booster, medians = fit_output_tokens(
            lgb, params, table, catalog, models, design.x, model_codes, split.row_role, names,
            design.cat_col, design.rounds, progress=progress)

        self.models_ = models
        self.catalog_ = catalog
        self.descriptors_ = descriptors
        self.features_ = features
        self.quality_ = quality_booster
        self.linear_coef_, self.linear_intercept_ = linear if linear is not None else (None, None)
        self.output_tokens_ = output_booster
        self.output_medians_ = medians
        self.feature_names_ = names
        self.latency_, self.ttft_ = fit_timing_heads(
            table, design, len(models), lambda: output_tokens_rows(
                output_booster, [medians[m] for m in models], self.default_output_tokens,
                design.x, model_codes, threads=self.n_jobs))
        self.metadata = fit_metadata(self, table, split, seed=seed, holdout_frac=holdout_frac,
                                     best_iteration=best_q, params=params)
        self._calibrate_after_fit(table, split)
        if len(split.hold) and self.refit:
            self._refit_on_everything(table, catalog, feature_extractor, seed, progress)
        return self

    def _fit_quality(self, table: Any, design: Design, features: FeatureExtractor,
                     tfidf_rows: Any, split: PromptSplit, n_models: int
                     ) -> tuple[Any, int, tuple[np.ndarray, np.ndarray] | None]:
        """(quality booster, its rounds, the linear head or None)."""
        quality = table["quality"].to_numpy(dtype=np.float64)
        weight = table["weight"].to_numpy(dtype=np.float64)
        linear = None
        if self.linear_weight > 0:
            linear = fit_linear(features.tfidf_matrix(tfidf_rows), split.prompt_codes,
                                design.model_codes, quality, weight, split.row_role != 2,
                                n_models, self.linear_c)
        booster, best = train_booster(
            design.lgb, {**design.params, "objective": "cross_entropy"}, design.x, quality,
            weight, split.row_role, design.names, design.cat_col, *design.rounds,
            progress=design.progress, desc="quality model")
        return booster, best, linear

    def _calibrate_after_fit(self, table: Any, split: PromptSplit) -> None:
        """Calibrate the bar on prompts the model did not learn from where there are
        any: held out, else the early-stopping ones (unseen by the booster's
        gradients), else (tiny tables) the training prompts themselves."""
        if len(split.hold):
            self.measure(table[split.row_role == 2], source="held-out prompts")
        elif len(split.valid):
            self.measure(table[split.row_role == 1], source="validation prompts",
                         metrics=False)
        else:
            self.measure(table, metrics=False,
                         source="training prompts (no held-out or validation prompts)")
    def _refit_on_everything(self, table: Any, catalog: Catalog,
                             feature_extractor: FeatureExtractor | None, seed: int,
                             progress: bool) -> None:
        """Refit every learned part on all prompts, keeping what the held-out fit
        measured (metrics, the bar's calibration, the default bar): the held-out
        prompts measured the procedure, and then add their information to the model
        served (see `refit`)."""
        measured = self.metadata
        everything = object.__new__(type(self))
        everything.__dict__.update({k: v for k, v in self.__dict__.items()
                                    if not k.endswith("_") and not k.startswith("_")})
        everything.refit = False
        everything.fit(table, catalog=catalog, feature_extractor=feature_extractor,
                       holdout_frac=0.0, seed=seed, progress=progress)
        for key, value in everything.__dict__.items():
            if key.endswith("_") and not key.startswith("_"):
                setattr(self, key, value)
        kept = ("metrics", "default_bar", "default_bar_source", "bar_calibration",
                "n_holdout_prompts", "holdout_frac", "holdout_prompt_ids")
        self.metadata = {**everything.metadata, **{k: measured[k] for k in kept},
                         # The held-out prompts are in the served model now: they
                         # measured the procedure, not this fit.
                         "refit_on_all_prompts": True}

    def measure(self, table: Any, *, source: str = "held-out prompts",
                metrics: bool = True) -> QualityModel:
        """Measure the fitted model on prompts it did not train on; calibrate its bar there.

        `table` holds the outcome rows of those prompts (loaded as for `fit`;
        rows of models this model does not know are ignored). With `metrics`,
        `metadata["metrics"]` gets their log loss, Brier, ECE, AUC (0/1 labels),
        row count, output-token MAE and, where timed, latency error (MAE of log
        latency, share under the predicted quantile); either way the bar is
        calibrated on them (`metadata["bar_calibration"]`, `default_bar`,
        `default_bar_source`, and the routing numbers in `metadata["metrics"]`),
        `source` naming them. `fit` calls it on its held-out prompts;
        distributed training on the prompts it kept from the cluster. Returns self.
        """
        self._check_fitted()
        measure_model(self, check_table(table), source=source, metrics=metrics)
        return self
    # -------------------------------------------------------------- predict
    def predict(self, conversations: Iterable[Any],
                models: Sequence[str] | None = None) -> Prediction:
        """Expected quality, output tokens, cost and latency for every conversation x model.

        `conversations`: `Conversation` objects, prompt strings or message lists.
        `models`: a subset of `models_` (in the order given); default all.

        This is the serving hot path (one conversation per request), so every
        per-model constant lives in a `ServingPlan` built once per fitted state
        and the boosters are called through LightGBM's C API directly (see
        `router.predictor._serving`). One conversation and a batch run the same
        code, so row i of a batch equals the prediction for conversation i alone.
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
            timings = [None if head is None else empty.copy() for head in serving.heads]
            return Prediction(serving.names(codes), empty, empty.copy(), empty.copy(),
                              input_tokens, *timings)
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
        latency, ttft = plan.timings(x, input_tokens, out_tokens, serving.head_boosters,
                                     threads)
        return Prediction(plan.names, quality.reshape(n, m), out_tokens, cost, input_tokens,
                          latency, ttft)

    @property
    def predicts_latency(self) -> bool:
        """Whether `predict` gives `latency_ms` (the training table was timed)."""
        self._check_fitted()
        return getattr(self, "latency_", None) is not None

    def _serving(self) -> ServingPlan:
        """The prediction plan for the current fitted state, built on first use.

        Keyed on the identity of every input it is derived from, so `fit`,
        `load`, `with_prices` or a test assigning `linear_coef_` never see a stale
        plan. Building it twice from two threads is harmless (same content; the
        last one wins), so no lock is needed.
        """
        key = ServingPlan.key_of(self)
        serving = self.__dict__.get("_serving_plan")
        if serving is None or serving.key != key:
            serving = ServingPlan(self, key)
            self._serving_plan = serving
        return serving

    def __getstate__(self) -> dict[str, Any]:
        # The plan holds C handles and is cheap to rebuild: never pickle it.
        state = self.__dict__.copy()
        state.pop("_serving_plan", None)
        return state

    def _blend(self, booster_p: np.ndarray, logits: np.ndarray) -> np.ndarray:
        w = float(self.linear_weight)
        return (1.0 - w) * booster_p + w / (1.0 + np.exp(-logits))

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
        """The bar served when a request names none: a target mean quality."""
        self._check_fitted()
        return float(self.metadata["default_bar"])

    @property
    def bar_calibration(self) -> BarCalibration:
        """What a quality bar means for this model (`router.policy.BarCalibration`)."""
        self._check_fitted()
        calibration = BarCalibration.from_metadata(self.metadata)
        if calibration is None:
            raise ArtifactError("the model has no bar calibration",
                                hint="retrain it with router train")
        return calibration

    def _check_fitted(self) -> None:
        if not hasattr(self, "quality_"):
            raise NotFittedError("QualityModel is not fitted",
                                 hint="call fit(table, catalog=...) or QualityModel.load(dir)")

    # ------------------------------------------------------------ artifact
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the artifact folder atomically; returns its path.

        An existing folder is replaced only when it is an artifact itself (has a
        `meta.json`) or is empty; see `router.predictor._artifact`.
        """
        self._check_fitted()
        target, self.metadata = write_artifact(self, directory)
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> QualityModel:
        """Read an artifact folder, checking versions and every file's sha256."""
        return read_artifact(directory, cls)
