"""Expected latency per (request, model): the whole answer and the first token.

What is predicted is a high quantile, the P97.5 (`LATENCY_QUANTILE`): a time
the call stays under 39 times in 40. A latency limit excludes models "expected
to exceed it", and with heavy-tailed latencies a median would admit a model that
misses the limit a third of the time. The quantile is above the 95% the limit
promises because choosing the models predicted just under a limit selects the
ones whose prediction erred low, and the requests no model is predicted to
answer in time go to the fastest anyway. Measured on demo data (1,000 unseen
prompts, the default bar; `router eval --max-latency-ms`), share of requests
within the limit at 4 s, just above the fastest model's P95 of 3.7 s: P90 93.0%,
P95 94.5%, P97.5 95.0% (quality 0.744 against 0.766 with the P95: the price is
more requests sent to the faster, cheaper models); at 5 s: P95 96.6%, P97.5 97.1%.

Per timing target (`latency_ms`, `ttft_ms`) a `LatencyHead` holds:

* a LightGBM regression on log milliseconds over the (prompt, model) design rows
  of the quality model plus two columns, log1p(input tokens) and log1p(predicted
  output tokens) (`latency_design`): the model is categorical, as in the quality
  booster, so models share what they have in common (long answers are slow);
* per model, the `LATENCY_QUANTILE` of its log residuals, added to the booster's log
  prediction, so a model with a wide spread is predicted slower than one with
  the same centre and a narrow spread;
* per model, a fallback: its own quantile where it has fewer than `MIN_LATENCY_ROWS`
  timed rows (too few for a residual quantile to rest on, see the constant), and the
  slowest timed model's quantile for a model never timed (unknown is treated as slow,
  so a limit does not pick a model because nobody measured it).

A table without the column gives no head (None), and `Prediction.latency_ms`
is None: a limit is then refused by the caller with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LATENCY_QUANTILE",
    "LATENCY_TAIL_NAMES",
    "MIN_LATENCY_ROWS",
    "MIN_VALID_RESIDUALS",
    "HeadSelection",
    "LatencyHead",
    "fit_latency_head",
    "latency_design",
    "latency_metrics",
]

LATENCY_QUANTILE = 0.975
# Below this many timed rows a model gets its own quantile instead of the booster's: the
# quantile of its residuals would rest on fewer than 10 rows above it, and the booster's
# leaves (min_data_in_leaf 20) can barely single the model out.
MIN_LATENCY_ROWS = 200
# A model's residual quantile comes from its early-stopping rows when it has this many
# (10 rows above it).
MIN_VALID_RESIDUALS = 200
# The columns `latency_design` appends to the quality model's design rows.
LATENCY_TAIL_NAMES = ("log_input_tokens", "log_output_tokens_predicted")


def latency_design(x: np.ndarray, input_tokens: np.ndarray,
                   output_tokens: np.ndarray) -> np.ndarray:
    """float32 (rows, features + 2): design rows `x` with log1p of the input and the
    predicted output tokens of each row appended (`LATENCY_TAIL_NAMES`)."""
    out = np.empty((x.shape[0], x.shape[1] + 2), dtype=np.float32)
    out[:, :-2] = x
    out[:, -2] = np.log1p(input_tokens)
    out[:, -1] = np.log1p(output_tokens)
    return out


class HeadSelection:
    """A head's per-model constants for one ordered selection of models (built once
    per selection by the serving plan, so the request path only reads them)."""

    def __init__(self, offset: np.ndarray, fallback_ms: np.ndarray,
                 learned: np.ndarray) -> None:
        self.offset = offset  # (m,) log quantile of the booster's residuals
        self.fallback_ms = fallback_ms  # (m,)
        self.learned = learned  # (m,) bool: the booster serves this model
        self.any_learned = bool(learned.any())
        self.all_learned = bool(learned.all())

    def predict(self, rows: np.ndarray | None, n: int, booster: Any, threads: int,
                *, central: bool = False) -> np.ndarray:
        """(n, m) milliseconds for `rows` (`latency_design`, prompt-major, n * m rows).

        `booster` is anything with `predict(rows, threads)` (a `FastBooster`), or
        None. `central`: the booster's median estimate, without the residual quantile
        (held-out error is measured on it).
        """
        m = len(self.offset)
        if booster is None or rows is None or not self.any_learned:
            return np.tile(self.fallback_ms, n).reshape(n, m)
        log_ms = booster.predict(rows if self.all_learned else rows[np.tile(self.learned, n)],
                                 threads)
        if self.all_learned:  # the common case, without a mask on the request path
            log_ms = log_ms.reshape(n, m)
            return np.exp(log_ms if central else log_ms + self.offset)
        out = np.tile(self.fallback_ms, n)
        use = np.tile(self.learned, n)
        out[use] = np.exp(log_ms if central else log_ms + np.tile(self.offset, n)[use])
        return out.reshape(n, m)


@dataclass(frozen=True)
class LatencyHead:
    """One timing target predicted per (request, model); see the module docstring."""

    booster: Any | None  # lightgbm.Booster on log ms, or None (too few rows)
    offset: np.ndarray  # (models,) log quantile of the residuals, 0 where not learned
    fallback_ms: np.ndarray  # (models,)
    learned: np.ndarray  # (models,) bool

    @property
    def kind(self) -> str:
        """'booster' when it serves at least one model, else 'per_model' (quantiles)."""
        return "booster" if self.booster is not None and self.learned.any() else "per_model"

    def select(self, codes: np.ndarray) -> HeadSelection:
        return HeadSelection(self.offset[codes], self.fallback_ms[codes], self.learned[codes])

    def to_meta(self) -> dict[str, Any]:
        """What `meta.json` stores (the booster is a file of its own)."""
        return {"offset": self.offset.tolist(), "fallback_ms": self.fallback_ms.tolist(),
                "learned": self.learned.tolist(), "booster": self.booster is not None}

    @classmethod
    def from_meta(cls, meta: dict[str, Any], booster: Any | None,
                  n_models: int) -> LatencyHead:
        """The head `to_meta` described; ValueError when it does not fit `n_models`."""
        head = cls(booster, np.asarray(meta["offset"], dtype=np.float64),
                   np.asarray(meta["fallback_ms"], dtype=np.float64),
                   np.asarray(meta["learned"], dtype=bool))
        if not (head.offset.shape == head.fallback_ms.shape == head.learned.shape
                == (n_models,)):
            raise ValueError(f"latency head has {head.offset.shape} values for "
                             f"{n_models} models")
        if bool(meta["booster"]) != (booster is not None):
            raise ValueError("latency head booster listed but not stored, or the reverse")
        return head


def fit_latency_head(lgb: Any, params: dict[str, Any], rows: np.ndarray, ms: np.ndarray,
                     weight: np.ndarray, row_role: np.ndarray, model_codes: np.ndarray,
                     n_models: int, names: list[str], cat_col: int, *,
                     train_booster: Any, rounds: tuple[int, int], progress: bool,
                     desc: str) -> LatencyHead | None:
    """Fit one head on the rows whose `ms` is known; None when no row is timed.

    `rows` are `latency_design` rows of every table row; `row_role` 0 train,
    1 early-stopping validation, 2 held out (never used here). `train_booster`
    is `router.predictor._fit.train_booster`; `rounds` (max rounds, early stop).
    """
    timed = np.isfinite(ms) & (row_role != 2)
    if not timed.any():
        return None
    log_ms = np.log(np.maximum(ms, 1.0))
    counts = np.bincount(model_codes[timed], minlength=n_models)
    fallback = np.full(n_models, np.nan)
    for m in np.flatnonzero(counts):
        fallback[m] = float(np.quantile(ms[timed & (model_codes == m)], LATENCY_QUANTILE))
    fallback[counts == 0] = np.nanmax(fallback)
    learned = counts >= MIN_LATENCY_ROWS
    booster = None
    offset = np.zeros(n_models)
    if learned.any():
        booster, _ = train_booster(
            lgb, {**params, "objective": "regression",
                  "learning_rate": max(params["learning_rate"], 0.1)},
            rows[timed], log_ms[timed], weight[timed], row_role[timed], names, cat_col,
            *rounds, progress=progress, desc=desc)
        residual = log_ms[timed] - booster.predict(rows[timed], num_threads=1)
        codes, unseen = model_codes[timed], row_role[timed] == 1
        for m in np.flatnonzero(learned):
            # Residuals on the early-stopping rows where there are enough: the
            # training rows' are smaller than a new request's (measured on demo
            # data: 0.88 of held-out calls under a P90 from training residuals).
            mine = codes == m
            if (mine & unseen).sum() >= MIN_VALID_RESIDUALS:
                mine &= unseen
            offset[m] = float(np.quantile(residual[mine], LATENCY_QUANTILE))
    return LatencyHead(booster, offset, fallback, learned)


def latency_metrics(predicted_quantile: np.ndarray, predicted_median: np.ndarray,
                    actual: np.ndarray, *, prefix: str) -> dict[str, float]:
    """Held-out error of one head on the rows where `actual` is known: MAE of log
    latency (the central estimate), and the share of calls that stayed under the
    predicted quantile (`LATENCY_QUANTILE` when calibrated)."""
    known = np.isfinite(actual)
    if not known.any():
        return {}
    a = np.maximum(actual[known], 1.0)
    return {f"{prefix}_log_mae": float(np.mean(np.abs(np.log(predicted_median[known])
                                                      - np.log(a)))),
            f"{prefix}_quantile_coverage": float(np.mean(actual[known]
                                                         <= predicted_quantile[known])),
            f"{prefix}_rows": int(known.sum())}
