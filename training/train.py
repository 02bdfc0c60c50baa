"""Fit the quality model on an outcome table and write its artifact.

`train` is what `router train` and the retraining job call: it fits a
`router.predictor.QualityModel` (features, quality booster, output-token
booster), here or on a Dask cluster (`training.distributed`), evaluates it on
prompts it did not see, and saves the artifact folder with metadata that makes
the version self-describing: a version id, the training data hash and row
count, the models, the held-out metrics, the default quality bar and its
calibration (`QualityModel.measure`) and the library versions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from router.catalog import Catalog
from router.errors import ConfigError
from router.predictor import QualityModel, library_versions
from training.data import table_fingerprint
from training.pricing import LearnedPrice

__all__ = ["train"]


def train(table: pd.DataFrame, out_dir: str | os.PathLike[str], *, catalog: Catalog,
          holdout_frac: float = 0.1, seed: int = 0, params: Mapping[str, Any] | None = None,
          progress: bool = True,
          learned_prices: Mapping[str, LearnedPrice] | None = None,
          refit: bool = False, dask: Any = None,
          dask_options: Mapping[str, Any] | None = None) -> QualityModel:
    """Fit on `table` (from `training.data.load_outcomes`), save to `out_dir`, return it.

    `holdout_frac` of the prompts (split by prompt) are held out for the metrics
    and the bar's calibration, then (`refit`) folded into the model served, see
    `QualityModel`; `params` override LightGBM parameters. The saved
    metadata's `version_id` is `v<UTC timestamp>-<8 hex of data hash, params and
    seed>`, so two runs on the same data with the same settings are recognisable.
    `learned_prices` (from `training.data.load_priced_outcomes`, already in
    `catalog`) are recorded as `metadata["learned_prices"]`: model ->
    input/output USD per 1M tokens, rows and method. `dask` (a
    `dask.distributed.Client`) trains on its cluster instead
    (`training.distributed.fit_distributed`, given `dask_options`), with the
    same held-out prompts, metrics and bar calibration.
    """
    created = datetime.now(UTC)
    fingerprint = table_fingerprint(table)
    if dask is None:
        model = QualityModel(params=params, refit=refit).fit(
            table, catalog=catalog, holdout_frac=holdout_frac, seed=seed, progress=progress)
    else:
        from training.distributed import fit_distributed

        if refit:
            raise ConfigError("--refit cannot be combined with --dask",
                              hint="distributed training keeps its held-out prompts out; "
                                   "drop --refit or --dask")
        model = fit_distributed(table, client=dask, catalog=catalog, holdout_frac=holdout_frac,
                                seed=seed, params=params, **(dask_options or {}))
    settings = json.dumps({"data": fingerprint, "params": dict(params or {}), "seed": seed,
                           "holdout_frac": holdout_frac, "refit": refit,
                           **({"dask": True} if dask is not None else {})},
                          sort_keys=True, default=str)
    short = hashlib.sha256(settings.encode()).hexdigest()[:8]
    model.metadata.update({
        "version_id": f"v{created:%Y%m%d-%H%M%S}-{short}",
        "created": created.isoformat(timespec="seconds"),
        "training_data_hash": fingerprint,
        "training_rows": int(len(table)),
        "library_versions": library_versions(),
        "learned_prices": {m: p.to_dict() for m, p in (learned_prices or {}).items()},
    })
    model.save(Path(out_dir))
    return model
