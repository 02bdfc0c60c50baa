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
* `latency_`, `ttft_`: where the table has `latency_ms` / `ttft_ms`, heads
  predicting their P97.5 (`LATENCY_QUANTILE`) per (prompt, model) (`Prediction.latency_ms`,
  `.ttft_ms`; see `router.predictor._latency`), else None;
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

Where the code lives: `_model` is the estimator (`QualityModel`, how `fit`
wires the pieces together, `predict`). The design-matrix layout is
`router.predictor._design`; the pieces `fit` is
built from (table check, booster training, linear head) `router.predictor._fit`;
held-out metrics and the default bar `router.predictor._holdout`; latency
`router.predictor._latency`; the
one-conversation serving fast path `router.predictor._serving`; the artifact
folder (`save`/`load`, format version, sha256-checked files)
`router.predictor._artifact`.
"""

from router.predictor._artifact import (
    ARTIFACT_FORMAT_VERSION,
    library_versions,
)
from router.predictor._design import (
    design_rows,
)
from router.predictor._fit import (
    DEFAULT_PARAMS,
)
from router.predictor._holdout import (
    expected_calibration_error,
    holdout_metrics,
    holdout_split,
)
from router.predictor._latency import (
    LATENCY_QUANTILE,
    MIN_LATENCY_ROWS,
)
from router.predictor._model import (
    Prediction,
    QualityModel,
)
from router.predictor._serving import (
    FastBooster,
)

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "DEFAULT_PARAMS",
    "FastBooster",
    "LATENCY_QUANTILE",
    "MIN_LATENCY_ROWS",
    "Prediction",
    "QualityModel",
    "design_rows",
    "expected_calibration_error",
    "holdout_metrics",
    "holdout_split",
    "library_versions",
]
