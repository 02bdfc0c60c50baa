"""The same training on a Dask cluster, from Parquet partitions of the outcome log.

For logs too large for one machine. The result is an ordinary `QualityModel`
artifact (same files, same `meta.json`), so serving, the registry and the gate
cannot tell how it was trained.

How, and why this way:

1. A sample of prompts (all their rows) is fitted locally with `QualityModel.fit`.
   That fixes everything that must be identical between training and serving and
   is cheap to learn from a sample: the `FeatureExtractor` (idf + SVD), the model
   order and descriptors, and the output-token model. No feature code is
   duplicated here: training and serving keep one implementation.
2. Every Parquet partition is turned into design-matrix rows *on the workers*
   with that same fitted extractor (`features_.transform`) and the predictor's
   own row builder, so feature extraction scales out with the data.
3. `lightgbm.DaskLGBMRegressor` (objective `cross_entropy`, labels in [0, 1],
   inverse-propensity `weight` as sample weights, the model code categorical)
   trains the quality booster over all partitions, data-parallel.
4. That booster replaces the sample model's quality booster, and the artifact
   is saved as usual.

Dask's LightGBM integration has no early stopping, so the number of rounds is
fixed (`num_boost_round`; by default the sample model's early-stopped round
count scaled by sqrt of the data growth, capped).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.catalog import Catalog
from router.errors import DataError

__all__ = ["export_partitions", "export_log_partitions", "train_distributed"]

log = logging.getLogger(__name__)

_COLUMNS = ("prompt_id", "messages", "model", "quality", "input_tokens", "output_tokens",
            "cost_usd", "weight")


def export_partitions(table: pd.DataFrame, directory: str | os.PathLike[str], *,
                      rows_per_partition: int = 100_000) -> list[Path]:
    """Write a canonical outcome table as `part-NNNNN.parquet` files; rows of a prompt stay
    together (a prompt's features are computed once per partition)."""
    if rows_per_partition < 1:
        raise ValueError(f"rows_per_partition must be >= 1, got {rows_per_partition!r}")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.glob("part-*.parquet")):
        raise DataError(f"{folder}: already has part-*.parquet files",
                        hint="export into an empty folder so old partitions are not mixed in")
    table = table[[c for c in _COLUMNS if c in table]].copy()
    codes = pd.factorize(table["prompt_id"])[0]
    table = table.iloc[np.argsort(codes, kind="stable")]
    sorted_codes = np.sort(codes)
    # Cut only where a new prompt starts.
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    cuts, last = [0], 0
    for s in starts:
        if s - last >= rows_per_partition:
            cuts.append(int(s))
            last = s
    cuts.append(len(table))
    paths = []
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        path = folder / f"part-{i:05d}.parquet"
        table.iloc[a:b].to_parquet(path, index=False)
        paths.append(path)
    return paths


def export_log_partitions(log_url: str, directory: str | os.PathLike[str], *,
                          catalog: Catalog, since: Any = None,
                          rows_per_partition: int = 100_000) -> list[Path]:
    """The outcome log's training rows (see `training.retrain`) as Parquet partitions."""
    from training.retrain import _canonical, build_training_rows, load_log

    rows, counts = build_training_rows(load_log(log_url, since=since), since=since)
    log.info("log export: %s", counts.format())
    if not len(rows):
        raise DataError(f"{log_url}: no usable logged rows ({counts.format()})")
    return export_partitions(_canonical(rows, catalog), directory,
                             rows_per_partition=rows_per_partition)


def _design_partition(part: pd.DataFrame, model: Any) -> pd.DataFrame:
    """Design-matrix rows of one partition, plus `__label` and `__weight` columns."""
    from router.conversation import parse_conversation
    from router.predictor_design import design_rows

    index = {m: i for i, m in enumerate(model.models_)}
    part = part[part["model"].astype(str).isin(index)]
    names = list(model.feature_names_)
    if len(part) == 0:
        return pd.DataFrame({**{n: np.zeros(0, np.float32) for n in names},
                             "__label": np.zeros(0), "__weight": np.zeros(0)})
    codes, ids = pd.factorize(part["prompt_id"].astype(str))
    firsts = np.unique(codes, return_index=True)[1]
    convs = [parse_conversation(m, where=f"prompt_id {pid!r}")
             for pid, m in zip(ids, part["messages"].to_numpy()[firsts], strict=True)]
    prompt_x = model.features_.transform(convs)
    model_codes = part["model"].astype(str).map(index).to_numpy(dtype=np.int64)
    x = design_rows(prompt_x, codes, model_codes, model.descriptors_)
    out = pd.DataFrame(x, columns=names)
    out["__label"] = part["quality"].to_numpy(dtype=np.float64)
    weight = part["weight"] if "weight" in part else pd.Series(1.0, index=part.index)
    out["__weight"] = weight.fillna(1.0).to_numpy(dtype=np.float64)
    return out


def train_distributed(
    parquet: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    client: Any,
    catalog: Catalog,
    sample_prompts: int = 5_000,
    num_boost_round: int | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    n_components: int = 64,
) -> Any:
    """Train a `QualityModel` from Parquet partitions on the Dask cluster of `client`.

    `parquet` is a folder of `*.parquet` partitions in the canonical outcome
    schema (`export_partitions`, `export_log_partitions`). Returns the fitted
    model; saves the artifact to `out_dir` when given.
    """
    import dask.dataframe as dd
    import lightgbm as lgb

    from router.predictor import QualityModel
    from router.predictor_fit import DEFAULT_PARAMS

    folder = Path(parquet)
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise DataError(f"{folder}: no .parquet partitions found",
                        hint="export them with training.distributed.export_partitions")
    frame = dd.read_parquet([str(f) for f in files])
    missing = [c for c in ("prompt_id", "messages", "model", "quality") if c not in frame.columns]
    if missing:
        raise DataError(f"{folder}: partitions lack column(s) {', '.join(missing)}",
                        hint="write them in the canonical outcome schema")

    # 1. The sample: every row of up to `sample_prompts` prompts, fitted locally.
    prompt_ids = frame["prompt_id"].astype(str).unique().compute().to_numpy()
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(prompt_ids, size=min(sample_prompts, len(prompt_ids)),
                            replace=False).tolist())
    sample = frame[frame["prompt_id"].astype(str).isin(chosen)].compute()
    sample = sample.assign(prompt_id=sample["prompt_id"].astype(str))
    all_models = set(frame["model"].astype(str).unique().compute())
    unseen = sorted(all_models - set(sample["model"].astype(str)))
    if unseen:
        raise DataError(f"{folder}: the {len(chosen)}-prompt sample has no rows for "
                        f"{', '.join(unseen)}",
                        hint="raise sample_prompts so every model is in the sample")
    base_params = {**(params or {})}
    model = QualityModel(params=base_params, n_components=n_components).fit(
        sample, catalog=catalog, seed=seed)
    n_rows = int(frame.shape[0].compute())
    if num_boost_round is None:
        growth = max(1.0, n_rows / max(len(sample), 1))
        num_boost_round = int(min(2000, max(50, model.metadata["best_iteration"]
                                            * math.sqrt(growth))))

    # 2. Design rows on the workers, with the sample's fitted extractor.
    names = list(model.feature_names_)
    meta = pd.DataFrame({**{n: np.zeros(0, np.float32) for n in names},
                         "__label": np.zeros(0), "__weight": np.zeros(0)})
    shipped = client.scatter(model, broadcast=True)
    design = frame.map_partitions(_design_partition, shipped, meta=meta)
    design = design.persist()
    x = design[names].to_dask_array(lengths=True)
    y = design["__label"].to_dask_array(lengths=True)
    w = design["__weight"].to_dask_array(lengths=True)

    # 3. Data-parallel LightGBM over the cluster.
    cat_col = names.index("model")
    lgb_params = {**DEFAULT_PARAMS, **base_params, "seed": seed,
                  "objective": "cross_entropy"}
    # Dask sets the threads per worker itself and warns (an error under pytest) if asked.
    for key in ("verbosity", "num_threads", "n_jobs", "nthread", "num_thread", "nthreads"):
        lgb_params.pop(key, None)
    regressor = lgb.DaskLGBMRegressor(client=client, n_estimators=num_boost_round,
                                      verbose=-1, **lgb_params)
    with warnings.catch_warnings():
        # The sklearn wrapper always passes n_jobs and the Dask path always drops it
        # (threads follow the workers); the warning says nothing actionable.
        warnings.filterwarnings("ignore", message=r"Parameter n_jobs will be ignored")
        regressor.fit(x, y, sample_weight=w, feature_name=names,
                      categorical_feature=[cat_col])
    booster = lgb.Booster(model_str=regressor.booster_.model_to_string())

    # 4. The same artifact, with the cluster-trained quality booster.
    model.quality_ = booster
    model.metadata.update({
        "n_rows": n_rows, "n_prompts": len(prompt_ids), "best_iteration": num_boost_round,
        "trained_with": "dask", "partitions": len(files),
        "dask_workers": len(client.scheduler_info().get("workers", {})),
        "feature_sample_prompts": len(chosen),
        # The linear head (QualityModel.linear_weight) is fitted with the features,
        # on the sample only; the cluster retrains the booster alone.
        "linear_head_fitted_on": "sample" if model.linear_coef_ is not None else None,
        "holdout_prompt_ids": [],
    })
    if out_dir is not None:
        model.save(out_dir)
    return model
