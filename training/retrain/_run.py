"""`retrain`: log -> rows -> challenger -> gate -> registry, each a named step."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.errors import DataError
from router.registry import Registry, new_version_id
from training.retrain._rows import (
    RowCounts,
    build_training_rows,
    canonical_rows,
    load_log,
    split_recent,
)
from training.retrain._settings import RetrainSettings

__all__ = ["FitFunction", "RetrainResult", "retrain"]

FitFunction = Callable[[pd.DataFrame, Any, int], Any]


@dataclass
class RetrainResult:
    """One retrain's outcome: the registered version, whether it was promoted, the log's
    row counts, the gate's report and the sizes of the training and held-out rows."""

    version_id: str | None
    promoted: bool
    counts: RowCounts
    gate: Any = None
    train_rows: int = 0
    holdout_rows: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class _TrainingData:
    """What the challenger learns from and what the gate holds out."""

    table: pd.DataFrame
    catalog: Any
    counts: RowCounts
    logged_train_rows: int
    recent: pd.DataFrame


def _logged_rows(settings: RetrainSettings, catalog: Any, now: datetime | None,
                 echo: Callable[[str], None]) -> tuple[pd.DataFrame, RowCounts]:
    if settings.log_url is None:
        # Base tables alone (e.g. a registry's first version): no log to read.
        echo("log: none (base tables only)")
        return pd.DataFrame(), RowCounts()
    requests = load_log(settings.log_url, since=settings.since, now=now)
    rows, counts = build_training_rows(requests, since=settings.since, now=now,
                                       max_weight=settings.max_weight)
    echo(f"log: {counts.format()}")
    return (canonical_rows(rows, catalog) if len(rows) else rows), counts


def _training_data(settings: RetrainSettings, catalog: Any, now: datetime | None,
                   echo: Callable[[str], None]) -> _TrainingData:
    """Logged rows (the newest held out) plus the base tables, checked for size."""
    from training.data import load_priced_outcomes

    rows, counts = _logged_rows(settings, catalog, now, echo)
    enough = len(rows) >= settings.min_rows
    train_rows, recent = split_recent(rows, settings.holdout_frac if enough else 0.0)
    parts = [train_rows] if len(train_rows) else []
    if settings.base:
        # A base table may hold models the catalog lacks: their prices are learned
        # from their rows' cost_usd, as `router train` does.
        priced = load_priced_outcomes(list(settings.base), catalog=catalog)
        catalog = priced.catalog
        echo(f"base: {len(priced.table)} rows from {len(settings.base)} table(s)")
        parts.append(priced.table)
    if not parts:
        raise DataError(f"no usable training rows ({counts.format()})",
                        hint="wait for feedback to accumulate, widen --since, or add --base")
    table = pd.concat(parts, ignore_index=True, sort=False)
    if len(table) < settings.min_rows:
        raise DataError(f"only {len(table)} training rows (fewer than {settings.min_rows})",
                        hint="widen --since, add --base tables, or lower --min-rows")
    return _TrainingData(table, catalog, counts, len(train_rows), recent)


def _eval_table(settings: RetrainSettings, catalog: Any) -> pd.DataFrame | None:
    from training.data import load_outcomes

    if settings.eval_data is None or isinstance(settings.eval_data, pd.DataFrame):
        return settings.eval_data
    return load_outcomes([settings.eval_data], catalog=catalog)


def _default_fit(settings: RetrainSettings, dask: Any) -> FitFunction:
    """`QualityModel().fit`, here or (with a Dask client) on its cluster."""
    # 10% of prompts held out so the version's meta.json carries log loss / AUC.
    if dask is not None:
        from training.distributed import fit_distributed

        def fit_on_cluster(table: pd.DataFrame, catalog: Any, seed: int) -> Any:
            return fit_distributed(table, client=dask, catalog=catalog, seed=seed,
                                   holdout_frac=0.1, partitions_dir=settings.dask_partitions)
        return fit_on_cluster
    from router.predictor import QualityModel

    def fit_here(table: pd.DataFrame, catalog: Any, seed: int) -> Any:
        return QualityModel().fit(table, catalog=catalog, seed=seed, holdout_frac=0.1,
                                  progress=True)
    return fit_here


def _gate(settings: RetrainSettings, registry: Registry, challenger: Any,
          data: _TrainingData, eval_table: pd.DataFrame | None, version_id: str) -> Any:
    """The gate's report on the challenger against the current version."""
    from router.predictor import QualityModel
    from training.gate import run_gate

    champion, champion_id = None, registry.current_version()
    if champion_id is not None:
        champion = QualityModel.load(registry.current())
    recent = data.recent[~data.recent["fallback"]] if len(data.recent) else None
    return run_gate(challenger, champion, recent=recent, eval_table=eval_table,
                    tolerance=settings.tolerance, min_logged_rows=settings.min_logged_rows,
                    champion_id=champion_id, challenger_id=version_id)


def _register(registry: Registry, challenger: Any, version_id: str,
              extra_meta: dict[str, Any]) -> None:
    """Save the challenger into a staging folder and move it into the registry."""
    staging = Path(tempfile.mkdtemp(prefix="router-retrain-"))
    try:
        artifact = staging / "artifact"
        challenger.save(artifact)
        registry.add(artifact, version_id=version_id, move=True, extra_meta=extra_meta)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def retrain(
    settings: RetrainSettings,
    *,
    registry: Registry,
    catalog: Any = None,
    now: datetime | None = None,
    fit: FitFunction | None = None,
    dask: Any = None,
    echo: Callable[[str], None] = print,
) -> RetrainResult:
    """One retrain: log -> rows -> challenger -> gate -> registry (promote if it passes).

    `settings` says what to read and how to judge; `catalog` prices the rows
    (default: `load_catalog()`); `now` is the clock of the `since` window and the
    version id. `fit(table, catalog, seed)` returns a fitted model with `.predict`
    and `.save(dir)` (default: `QualityModel().fit`, or with `dask`, a
    `dask.distributed.Client`, `training.distributed.fit_distributed` on its
    cluster), so tests can inject a deliberately bad trainer.
    """
    if catalog is None:
        from router.catalog import load_catalog

        catalog = load_catalog()
    data = _training_data(settings, catalog, now, echo)
    eval_table = _eval_table(settings, data.catalog)
    echo(f"training the challenger on {len(data.table)} rows ({data.logged_train_rows} "
         f"logged, {len(data.table) - data.logged_train_rows} base)")
    challenger = (fit or _default_fit(settings, dask))(data.table, data.catalog, settings.seed)

    version_id = new_version_id(now)
    report = _gate(settings, registry, challenger, data, eval_table, version_id)
    echo(report.format())
    _register(registry, challenger, version_id, {
        "gate": json.loads(json.dumps(report.to_dict(), default=_jsonable)),
        "retrain": {"log_rows": data.counts.to_dict(), "train_rows": len(data.table),
                    "logged_train_rows": data.logged_train_rows,
                    "holdout_rows": len(data.recent), **settings.to_meta()},
    })
    if report.passed:
        registry.promote(version_id, reason=report.reason)
        echo(f"promoted {version_id}")
    else:
        echo(f"kept {report.champion}; {version_id} registered but not promoted")
    return RetrainResult(version_id=version_id, promoted=report.passed, counts=data.counts,
                         gate=report, train_rows=len(data.table),
                         holdout_rows=len(data.recent))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
