"""The one-conversation serving fast path of `QualityModel.predict`.

A routed request predicts for ONE conversation, so the fixed per-call overhead
matters more than the trees (quality, output tokens and, for a timed model, latency
and time to first token: up to four booster calls per request).
`QualityModel.predict` therefore takes every per-model constant (model codes and
descriptors, prices, fallback output lengths, the linear head as contiguous arrays)
from a `ServingPlan` built once per fitted state, keeps one `SelectionPlan` per
ordered selection of models, and calls the boosters through LightGBM's C API
directly (`FastBooster`). One conversation and a batch run the same code, so row i
of a batch equals the prediction for conversation i alone, and the numbers equal
those of `Booster.predict` on the `router.predictor._design` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from router.predictor._design import DESCRIPTOR_NAMES
from router.predictor._latency import HeadSelection, LatencyHead, latency_design

if TYPE_CHECKING:
    from router.predictor._model import QualityModel

__all__ = ["FastBooster", "SelectionPlan", "ServingPlan", "linear_logits"]


class FastBooster:
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


class SelectionPlan:
    """Per-model constants for one ordered selection of models (`codes`)."""

    def __init__(self, models: tuple[str, ...], d: int, descriptors: np.ndarray,
                 codes: np.ndarray, prices_in: np.ndarray, prices_out: np.ndarray,
                 fallback: np.ndarray, learned: np.ndarray,
                 heads: tuple[LatencyHead | None, LatencyHead | None]) -> None:
        self.codes = codes
        self.names = tuple(models[i] for i in codes)
        self.d = d
        # The model columns of the design matrix: code, then descriptors (as `design_rows`).
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
        # (latency, time to first token): each None when the model was trained untimed.
        self.heads: tuple[HeadSelection | None, ...] = tuple(
            None if head is None else head.select(codes) for head in heads)
        self.timing_rows_needed = any(
            head is not None and head.booster is not None and head.select(codes).learned.any()
            for head in heads)

    def design(self, prompt_x: np.ndarray) -> np.ndarray:
        """The (n * m, features) float32 design matrix, rows prompt-major (as `design_rows`)."""
        n, m, d = len(prompt_x), len(self.codes), self.d
        x = np.empty((n, m, d + self.tail.shape[1]), dtype=np.float32)
        x[:, :, :d] = prompt_x[:, None, :]
        x[:, :, d:] = self.tail
        return x.reshape(n * m, -1)

    def output_tokens(self, x: np.ndarray, n: int, booster: FastBooster | None,
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

    def timings(self, x: np.ndarray, input_tokens: np.ndarray, out_tokens: np.ndarray,
                boosters: tuple[FastBooster | None, ...], threads: int
                ) -> tuple[np.ndarray | None, ...]:
        """(latency_ms, ttft_ms), each (n, m) or None (the head is absent)."""
        n, m = out_tokens.shape
        rows = None
        if self.timing_rows_needed:
            rows = latency_design(x, np.repeat(input_tokens, m), out_tokens.ravel())
        return tuple(None if head is None else head.predict(rows, n, booster, threads)
                     for head, booster in zip(self.heads, boosters, strict=True))


class ServingPlan:
    """Everything `QualityModel.predict` derives from the fitted state, built once.

    Holds references to its inputs so the identities in `key` stay unique for as
    long as the plan lives.
    """

    def __init__(self, model: QualityModel, key: tuple[Any, ...]) -> None:
        self.key = key
        # The same objects `key_of` takes the identity of, in the same order.
        self._refs = (model.quality_, model.output_tokens_, model.catalog_,
                      model.descriptors_, getattr(model, "linear_coef_", None),
                      getattr(model, "linear_intercept_", None), model.output_medians_,
                      *self.heads_of(model))
        self.models = model.models_
        self.index = {m: i for i, m in enumerate(model.models_)}
        self.quality = FastBooster(model.quality_)
        self.output_tokens = (FastBooster(model.output_tokens_)
                              if model.output_tokens_ is not None else None)
        self.heads = self.heads_of(model)
        self.head_boosters = tuple(
            None if head is None or head.booster is None else FastBooster(head.booster)
            for head in self.heads)
        coef = getattr(model, "linear_coef_", None)
        self.linear = None
        if coef is not None:
            self.linear = (np.ascontiguousarray(coef, dtype=np.float32),
                           np.asarray(model.linear_intercept_, dtype=np.float64))
        medians = [model.output_medians_[m] for m in model.models_]
        self._args = (
            model.models_, len(model.feature_names_) - 1 - len(DESCRIPTOR_NAMES),
            model.descriptors_)
        self._per_model = (
            np.array([model.catalog_[m].input_usd_per_mtok for m in model.models_],
                     dtype=np.float64),
            np.array([model.catalog_[m].output_usd_per_mtok for m in model.models_],
                     dtype=np.float64),
            np.array([model.default_output_tokens if v is None else v for v in medians],
                     dtype=np.float64),
            np.array([v is not None for v in medians], dtype=bool), self.heads)
        self.all_codes = np.arange(len(model.models_))
        self._plans: dict[tuple[int, ...], SelectionPlan] = {}
        self._all = self._plans[tuple(range(len(model.models_)))] = SelectionPlan(
            *self._args, self.all_codes, *self._per_model)

    @staticmethod
    def key_of(model: QualityModel) -> tuple[Any, ...]:
        """The identity of every input a plan is derived from (see `ServingPlan.key`)."""
        return (id(model.quality_), id(model.output_tokens_), id(model.catalog_),
                id(model.descriptors_), id(getattr(model, "linear_coef_", None)),
                id(getattr(model, "linear_intercept_", None)), id(model.output_medians_),
                *(id(head) for head in ServingPlan.heads_of(model)),
                model.default_output_tokens, model.models_)

    @staticmethod
    def heads_of(model: QualityModel) -> tuple[LatencyHead | None, LatencyHead | None]:
        """(latency head, time-to-first-token head); None each for a model fitted or
        saved before latency was predicted."""
        return getattr(model, "latency_", None), getattr(model, "ttft_", None)

    def codes(self, models: Sequence[str] | None, model: QualityModel) -> np.ndarray:
        if models is None:
            return self.all_codes
        return model._model_codes(models)

    def names(self, codes: np.ndarray) -> tuple[str, ...]:
        return tuple(self.models[i] for i in codes)

    def plan(self, codes: np.ndarray) -> SelectionPlan:
        if codes is self.all_codes:
            return self._all
        key = tuple(int(c) for c in codes)
        plan = self._plans.get(key)
        if plan is None:
            plan = SelectionPlan(*self._args, np.asarray(codes, dtype=np.int64), *self._per_model)
            if len(self._plans) < 64:  # bounded: callers pass few distinct selections
                self._plans[key] = plan
        return plan

    def linear_logits(self, rows: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """(n, n_models) float64 logits of the linear head."""
        return linear_logits(*self.linear, rows)


def linear_logits(coef: np.ndarray, intercept: np.ndarray,
                  rows: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(n, n_models) float64 logits of the per-model TF-IDF logistic regression, for
    TF-IDF rows given as (bucket positions, values)."""
    out = np.empty((len(rows), len(intercept)))
    out[:] = intercept
    for i, (pos, vals) in enumerate(rows):
        # Only the prompt's non-zero buckets: a gather of a few hundred rows
        # beats a sparse product for one request (no scipy matrix to build).
        if len(pos):
            out[i] += vals @ coef[pos]
    return out
