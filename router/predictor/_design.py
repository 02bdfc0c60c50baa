"""The (prompt, model) design matrix both quality-model boosters read.

One row per (prompt, model): the prompt's features, then the model's code (the
booster's categorical feature), then the model's descriptors (log input / output
price, log context window); why one booster over all models, see
`router.predictor._model`.

Fitting (`router.predictor._model`), the serving fast path (`router.predictor._serving`,
which builds the same rows without the index arithmetic), the artifact check
(`router.predictor._artifact`) and distributed training all depend on this
layout, so it is defined once, here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from router.catalog import Catalog

__all__ = ["DESCRIPTOR_NAMES", "design_rows", "model_descriptors"]

DESCRIPTOR_NAMES = ("model_log_input_price", "model_log_output_price", "model_log_context")


def model_descriptors(catalog: Catalog, models: Sequence[str]) -> np.ndarray:
    """float32 (len(models), len(DESCRIPTOR_NAMES)) descriptors, in `DESCRIPTOR_NAMES` order."""
    return np.array(
        [[np.log1p(catalog[m].input_usd_per_mtok), np.log1p(catalog[m].output_usd_per_mtok),
          np.log(catalog[m].context_tokens)] for m in models], dtype=np.float32)


def design_rows(prompt_x: np.ndarray, prompt_idx: np.ndarray, model_codes: np.ndarray,
                descriptors: np.ndarray) -> np.ndarray:
    """The (prompt, model) design matrix: prompt features, model code, descriptors."""
    d = prompt_x.shape[1]
    x = np.empty((len(prompt_idx), d + 1 + descriptors.shape[1]), dtype=np.float32)
    x[:, :d] = prompt_x[prompt_idx]
    x[:, d] = model_codes
    x[:, d + 1:] = descriptors[model_codes]
    return x
