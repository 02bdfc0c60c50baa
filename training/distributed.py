"""The same training on a Dask cluster, from Parquet partitions of the outcome table.

`router train --dask local|ADDRESS` and `router retrain --dask ...` run it: the
tables are loaded and checked as for local training, written as Parquet
partitions (`export_partitions`, into a temporary folder unless one is named)
and trained on a `LocalCluster` or an existing scheduler (`dask_client`). The
Python API (`train_distributed` over partitions, e.g. `training.retrain.export_log_partitions`)
serves logs too large to load on one machine. The result is an ordinary
`QualityModel` artifact (same files, same `meta.json`, the same held-out metrics
and fitted bar), so serving, the registry and the gate cannot tell how it was
trained.

How, and why this way:

1. A share of the prompts is held out (`holdout_frac`, the split of
   `QualityModel.fit`, so from one table both hold out the same prompts) and
   kept off the cluster.
2. A sample of the other prompts (all their rows) is fitted locally with
   `QualityModel.fit`. That fixes everything that must be identical between
   training and serving and is cheap to learn from a sample: the
   `FeatureExtractor` (idf + SVD), the model order and descriptors, the linear
   head and the output-token model. No feature code is duplicated here:
   training and serving keep one implementation.
3. Every Parquet partition is turned into design-matrix rows *on the workers*
   with that same fitted extractor (`features_.transform`) and the predictor's
   own row builder, so feature extraction scales out with the data.
4. `lightgbm.DaskLGBMRegressor` (objective `cross_entropy`, labels in [0, 1],
   inverse-propensity `weight` as sample weights, the model code categorical)
   trains the quality booster over all partitions, data-parallel.
5. That booster replaces the sample model's quality booster; the held-out
   prompts then measure the model and calibrate its bar
   (`QualityModel.measure`, as local training does), and the artifact is saved
   as usual.

Dask's LightGBM integration has no early stopping, so the number of rounds is
fixed (`num_boost_round`; by default the sample model's early-stopped round
count scaled by sqrt of the data growth, capped).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.catalog import Catalog
from router.errors import ConfigError, DataError

__all__ = ["dask_client", "export_partitions", "fit_distributed",
           "train_distributed"]

log = logging.getLogger(__name__)

# How long `dask_client` waits for a scheduler address to answer.
CONNECT_TIMEOUT = "10s"

# Latencies ride along (optional columns) for models that learn them from the rows.
_COLUMNS = ("prompt_id", "messages", "model", "quality", "input_tokens", "output_tokens",
            "cost_usd", "weight", "latency_ms", "ttft_ms")


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


def _empty_design(names: list[str]) -> pd.DataFrame:
    """No design rows: the columns and dtypes of `_design_partition`'s output."""
    return pd.DataFrame({**{n: np.zeros(0, np.float32) for n in names},
                         "__label": np.zeros(0), "__weight": np.zeros(0)})


def _design_partition(part: pd.DataFrame, model: Any) -> pd.DataFrame:
    """Design-matrix rows of one partition, plus `__label` and `__weight` columns."""
    from router.conversation import parse_conversation
    from router.predictor import design_rows

    index = {m: i for i, m in enumerate(model.models_)}
    part = part[part["model"].astype(str).isin(index)]
    names = list(model.feature_names_)
    if len(part) == 0:
        return _empty_design(names)
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


def _distinct(column: Any) -> np.ndarray:
    """The distinct values of a Dask column as text: per partition, then here (a
    plain `unique()` shuffles, and Dask logs a warning for every shuffle)."""
    parts = column.astype(str).map_partitions(lambda s: pd.Series(s.unique()),
                                              meta=(column.name, "object"))
    return pd.unique(parts.compute().to_numpy())


def _stdout_to_stderr() -> None:
    """In a worker process of our own: what it prints (LightGBM's C++ log among it)
    goes to stderr, so the command's stdout stays its output."""
    import sys

    sys.stdout.flush()
    os.dup2(2, 1)


def _not_n_jobs(record: logging.LogRecord) -> bool:
    # The sklearn wrapper always passes n_jobs and the Dask path always drops it
    # (threads follow the workers): nothing actionable.
    return "Parameter n_jobs will be ignored" not in record.getMessage()


def _lightgbm_logs_to_logging() -> None:
    import lightgbm as lgb

    logger = logging.getLogger("lightgbm")
    logger.setLevel(max(logger.level, logging.WARNING))
    if _not_n_jobs not in logger.filters:
        logger.addFilter(_not_n_jobs)
    lgb.register_logger(logger)


@dataclass
class _Split:
    """The partitions' prompts: the held-out ones (read here) and those trained on."""

    frame: Any  # dask DataFrame of the training prompts' rows
    prompt_ids: np.ndarray
    train_ids: np.ndarray
    held: list[str]
    held_rows: pd.DataFrame | None


def _read_partitions(folder: Path) -> tuple[Any, list[Path]]:
    import dask.dataframe as dd

    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise DataError(f"{folder}: no .parquet partitions found",
                        hint="export them with training.distributed.export_partitions")
    # One partition per file, each read by pandas: dask's own Parquet reader calls a
    # pandas API that newer pandas deprecates (a warning, an error under our tests).
    frame = dd.from_map(pd.read_parquet, [str(f) for f in files])
    missing = [c for c in ("prompt_id", "messages", "model", "quality") if c not in frame.columns]
    if missing:
        raise DataError(f"{folder}: partitions lack column(s) {', '.join(missing)}",
                        hint="write them in the canonical outcome schema")
    return frame, files


def _hold_out(frame: Any, holdout_prompt_ids: Sequence[str] | None, holdout_frac: float,
              seed: int) -> _Split:
    """1. Held-out prompts, kept off the cluster (few: they are read into memory here)."""
    from router.predictor import holdout_split

    prompt_ids = np.sort(_distinct(frame["prompt_id"]))
    if holdout_prompt_ids is None:
        hold_idx, _ = holdout_split(len(prompt_ids), holdout_frac, seed)
        held = prompt_ids[hold_idx].tolist()
    else:
        held = sorted(set(map(str, holdout_prompt_ids)))
    if not held:
        return _Split(frame, prompt_ids, prompt_ids, held, None)
    keys = frame["prompt_id"].astype(str)
    return _Split(frame[~keys.isin(held)], prompt_ids, np.setdiff1d(prompt_ids, held), held,
                  frame[keys.isin(held)].compute())


def _fit_sample(split: _Split, folder: Path, *, sample_prompts: int, seed: int,
                params: dict[str, Any], n_components: int, catalog: Catalog
                ) -> tuple[Any, pd.DataFrame]:
    """2. Every row of up to `sample_prompts` training prompts, fitted locally."""
    from router.predictor import QualityModel

    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(split.train_ids, size=min(sample_prompts, len(split.train_ids)),
                            replace=False).tolist())
    frame = split.frame
    sample = frame[frame["prompt_id"].astype(str).isin(list(chosen))].compute()
    sample = sample.assign(prompt_id=sample["prompt_id"].astype(str))
    unseen = sorted(set(_distinct(frame["model"])) - set(sample["model"].astype(str)))
    if unseen:
        raise DataError(f"{folder}: the {len(chosen)}-prompt sample has no rows for "
                        f"{', '.join(unseen)}",
                        hint="raise sample_prompts so every model is in the sample")
    model = QualityModel(params=params, n_components=n_components).fit(
        sample, catalog=catalog, seed=seed)
    return model, sample


def _boost_rounds(model: Any, n_rows: int, n_sample_rows: int) -> int:
    """The sample's early-stopped round count, scaled by sqrt of the data growth, capped."""
    growth = max(1.0, n_rows / max(n_sample_rows, 1))
    return int(min(2000, max(50, model.metadata["best_iteration"] * math.sqrt(growth))))


def _cluster_booster(client: Any, frame: Any, model: Any, *, params: dict[str, Any],
                     seed: int, rounds: int) -> Any:
    """3. Design rows on the workers with the sample's fitted extractor; 4. data-parallel
    LightGBM over the cluster. Returns the quality booster."""
    import lightgbm as lgb

    from router.predictor import DEFAULT_PARAMS

    names = list(model.feature_names_)
    shipped = client.scatter(model, broadcast=True)
    design = frame.map_partitions(_design_partition, shipped,
                                  meta=_empty_design(names)).persist()
    x = design[names].to_dask_array(lengths=True)
    y = design["__label"].to_dask_array(lengths=True)
    w = design["__weight"].to_dask_array(lengths=True)
    lgb_params = {**DEFAULT_PARAMS, **params, "seed": seed, "objective": "cross_entropy"}
    # Dask sets the threads per worker itself and warns (an error under pytest) if asked.
    for key in ("verbosity", "num_threads", "n_jobs", "nthread", "num_thread", "nthreads"):
        lgb_params.pop(key, None)
    regressor = lgb.DaskLGBMRegressor(client=client, n_estimators=rounds, verbose=-1,
                                      **lgb_params)
    # LightGBM prints its network set-up (before it reads `verbose`) to stdout, where
    # it would mix with a command's output (`--json`): here, send it to logging,
    # warnings and worse only (worker processes of `dask_client("local")` print to
    # stderr instead).
    _lightgbm_logs_to_logging()
    regressor.fit(x, y, sample_weight=w, feature_name=names,
                  categorical_feature=[names.index("model")])
    return lgb.Booster(model_str=regressor.booster_.model_to_string())


def _record_training(model: Any, split: _Split, *, client: Any, n_rows: int, rounds: int,
                     holdout_frac: float, partitions: int, sample_prompts: int) -> None:
    """5. What the artifact's meta.json says about a cluster fit."""
    model.metadata.update({
        "n_rows": n_rows + (len(split.held_rows) if split.held_rows is not None else 0),
        "n_prompts": len(split.prompt_ids), "n_train_prompts": len(split.train_ids),
        # The rounds are fixed (the sample's early-stopped count, scaled): the
        # cluster has no validation prompts.
        "n_valid_prompts": 0, "n_holdout_prompts": len(split.held),
        "holdout_frac": float(holdout_frac), "holdout_prompt_ids": split.held,
        "best_iteration": rounds,
        "trained_with": "dask", "partitions": partitions,
        "dask_workers": len(client.scheduler_info().get("workers", {})),
        "feature_sample_prompts": sample_prompts,
        # The linear head (QualityModel.linear_weight) is fitted with the features,
        # on the sample only; the cluster retrains the booster alone.
        "linear_head_fitted_on": "sample" if model.linear_coef_ is not None else None,
    })


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
    holdout_frac: float = 0.1,
    holdout_prompt_ids: Sequence[str] | None = None,
) -> Any:
    """Train a `QualityModel` from Parquet partitions on the Dask cluster of `client`.

    `parquet` is a folder of `*.parquet` partitions in the canonical outcome
    schema (`export_partitions`, `export_log_partitions`). `holdout_frac` of the
    prompts (or exactly `holdout_prompt_ids`) are kept off the cluster to
    measure the model and calibrate its bar, as `QualityModel.fit` does; with
    none, the bar is calibrated on the feature sample's prompts. Returns the
    fitted model; saves the artifact to `out_dir` when given.
    """
    folder = Path(parquet)
    frame, files = _read_partitions(folder)
    split = _hold_out(frame, holdout_prompt_ids, holdout_frac, seed)
    base_params = {**(params or {})}
    model, sample = _fit_sample(split, folder, sample_prompts=sample_prompts, seed=seed,
                                params=base_params, n_components=n_components, catalog=catalog)
    n_rows = int(split.frame.shape[0].compute())
    rounds = (_boost_rounds(model, n_rows, len(sample)) if num_boost_round is None
              else num_boost_round)
    # 5. The cluster-trained quality booster, measured like a local fit, same artifact.
    model.quality_ = _cluster_booster(client, split.frame, model, params=base_params,
                                      seed=seed, rounds=rounds)
    _record_training(model, split, client=client, n_rows=n_rows, rounds=rounds,
                     holdout_frac=holdout_frac, partitions=len(files),
                     sample_prompts=sample["prompt_id"].nunique())
    held_rows = split.held_rows
    if held_rows is not None and len(held_rows):
        model.measure(held_rows.assign(prompt_id=held_rows["prompt_id"].astype(str)),
                      source="held-out prompts")
    else:
        model.measure(sample, metrics=False,
                      source="training prompts (the feature sample; no held-out prompts)")
    if out_dir is not None:
        model.save(out_dir)
    return model


def fit_distributed(table: pd.DataFrame, *, client: Any, catalog: Catalog,
                    holdout_frac: float = 0.1, seed: int = 0,
                    params: Mapping[str, Any] | None = None,
                    partitions_dir: str | os.PathLike[str] | None = None,
                    partitions: int | None = None, **options: Any) -> Any:
    """`QualityModel().fit(table, ...)` on a Dask cluster: what `--dask` runs.

    Writes `table` (a loaded outcome table) as `partitions` Parquet partitions
    (default two per worker) into a temporary folder, removed afterwards:
    inside `partitions_dir` when given (storage every worker can read, for a
    cluster beyond this machine), else in the system's temporary folder. Holds
    out the prompts `QualityModel.fit` would hold out of this table and runs
    `train_distributed` (`options` go to it).
    """
    from router.predictor import holdout_split

    ids = pd.unique(table["prompt_id"].astype(str))
    hold_idx, _ = holdout_split(len(ids), holdout_frac, seed)
    if partitions is None:
        partitions = 2 * max(1, len(client.scheduler_info().get("workers", {})))
    rows = max(1, math.ceil(len(table) / partitions))
    if partitions_dir is not None:
        Path(partitions_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="router-dask-", dir=partitions_dir) as folder:
        export_partitions(table, folder, rows_per_partition=rows)
        return train_distributed(folder, client=client, catalog=catalog, seed=seed,
                                 params=params, holdout_prompt_ids=ids[hold_idx].tolist(),
                                 holdout_frac=holdout_frac, **options)


@contextlib.contextmanager
def dask_client(address: str, *, workers: int = 2, processes: bool = True) -> Iterator[Any]:
    """A Dask client for `--dask`: "local" (a `LocalCluster` of `workers` single-threaded
    workers on this machine, stopped afterwards) or a running scheduler's address."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise ConfigError(f"--dask needs dask[distributed], which is not installed ({exc})",
                          hint="pip install 'cost-aware-router[dask]'") from None
    if address == "local":
        if workers < 1:
            raise ConfigError(f"--dask-workers must be >= 1, got {workers}")
        # A cluster of our own: its start-up and shut-down chatter (dozens of INFO
        # lines) is not the user's business; warnings still show.
        chatter = logging.getLogger("distributed")
        level = chatter.level
        chatter.setLevel(max(level, logging.WARNING))
        try:
            # A free port for its HTTP server: without one it takes 8787 and warns
            # when another cluster has it.
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                              dashboard_address=":0") as cluster, Client(cluster) as client:
                if processes:
                    client.run(_stdout_to_stderr)
                yield client
        finally:
            chatter.setLevel(level)
        return
    if "://" not in address and ":" not in address:
        raise ConfigError(f"--dask must be 'local' or a scheduler address, got {address!r}",
                          hint="e.g. --dask local, or --dask tcp://10.0.0.5:8786")
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"--dask: no Dask scheduler answers at {address} ({exc})",
                          hint="start one with `dask scheduler` and `dask worker ADDRESS`, "
                               "or use --dask local") from None
    with client:
        yield client
