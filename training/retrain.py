"""Retrain on logged outcomes, gate the challenger, register it, promote it if it is not worse.

Logged traffic shows only the served model's outcome for each request, and the
serving policy chose that model *because* of the request, so the logged rows are
a biased sample of (request, model) pairs: cheap models are seen on easy
requests, strong models on hard ones. Each row is therefore weighted by the
inverse of the logged propensity (clipped, so a handful of rare exploration
rows cannot dominate), which makes the weighted sample look as if models had
been assigned at random. The exploration share of the serving policy (the
`ROUTER_EXPLORATION` setting of `router serve`) is what
keeps those propensities away from zero.

Rows used (and the others counted, so an operator sees why a log gave few rows):
requests with feedback (the latest feedback per request wins), a successful
upstream call, the conversation text (privacy-mode rows log no text and are
skipped: features need it), a propensity in (0, 1], not served from cache.

The most recent `holdout_frac` of the usable rows (by time) is held out for the
champion/challenger gate's off-policy comparison; the challenger is trained on
the older rows plus any base outcome tables.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.catalog import Catalog
from router.errors import DataError
from router.registry import Registry, new_version_id

__all__ = [
    "RowCounts",
    "RetrainResult",
    "canonical_rows",
    "export_log_partitions",
    "build_training_rows",
    "split_recent",
    "load_log",
    "retrain",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_WEIGHT = 20.0
_OK_STATUS = {"ok", "success", "served"}


@dataclass
class RowCounts:
    """How many logged requests were seen, used, and why the others were not."""

    requests: int = 0
    outside_window: int = 0
    no_feedback: int = 0
    failed: int = 0
    cache_hit: int = 0
    no_text: int = 0
    bad_propensity: int = 0
    used: int = 0
    fallback: int = 0
    clipped: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def format(self) -> str:
        skipped = {k: v for k, v in self.to_dict().items()
                   if k not in ("requests", "used", "fallback", "clipped") and v}
        extra = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in skipped.items())
        return (f"{self.used} of {self.requests} logged requests used"
                + (f" (skipped: {extra})" if extra else "")
                + (f"; {self.fallback} served by a fallback" if self.fallback else "")
                + (f"; {self.clipped} weights clipped" if self.clipped else ""))


@dataclass
class RetrainResult:
    version_id: str | None
    promoted: bool
    counts: RowCounts
    gate: Any = None
    train_rows: int = 0
    holdout_rows: int = 0
    notes: list[str] = field(default_factory=list)


def _timestamps(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return pd.to_datetime(values, unit="s", utc=True)
    return pd.to_datetime(values, utc=True, format="mixed")


def _col(frame: pd.DataFrame, *names: str) -> pd.Series | None:
    for name in names:
        if name in frame:
            return frame[name]
    return None


def build_training_rows(
    requests: pd.DataFrame,
    feedback: pd.DataFrame | None = None,
    *,
    since: timedelta | None = None,
    now: datetime | None = None,
    max_weight: float = DEFAULT_MAX_WEIGHT,
) -> tuple[pd.DataFrame, RowCounts]:
    """Canonical training rows (one per served request with feedback) from a log export.

    `requests` is `OutcomeLog.export_dataframe()` (request fields plus the joined
    `feedback_latest`); or pass the raw `feedback` rows (`request_id`, `ts`,
    `quality`) and the latest feedback per request is used. Returns a table in
    the canonical schema (`prompt_id`, `messages`, `model`, `quality`,
    `input_tokens`, `output_tokens`, `cost_usd`, `propensity`, `weight`,
    `timestamp`, `quality_bar`, `fallback`) sorted by time, and the counts of
    what was skipped.
    """
    counts = RowCounts(requests=len(requests))
    for col in ("request_id", "ts"):
        if col not in requests:
            raise DataError(f"outcome log export: missing column {col!r}",
                            hint="export with OutcomeLog.export_dataframe()")
    frame = requests.copy()
    frame["_ts"] = _timestamps(frame["ts"])
    if since is not None:
        now = now or datetime.now(UTC)
        inside = frame["_ts"] >= pd.Timestamp(now - since)
        counts.outside_window = int((~inside).sum())
        frame = frame[inside]

    if feedback is not None and len(feedback):
        if "quality" not in feedback:
            raise DataError("outcome log feedback: missing column 'quality'")
        fb = feedback.copy()
        fb["_fts"] = _timestamps(fb["ts"]) if "ts" in fb else pd.Timestamp(0, tz="UTC")
        fb = fb.sort_values("_fts").drop_duplicates("request_id", keep="last")
        fb = fb[["request_id", "quality"]].rename(columns={"quality": "_quality"})
        frame = frame.merge(fb, on="request_id", how="left")
    else:
        latest = _col(frame, "feedback_latest", "feedback_quality", "quality")
        frame["_quality"] = (pd.to_numeric(latest, errors="coerce") if latest is not None
                             else np.nan)
    has_fb = frame["_quality"].notna()
    counts.no_feedback = int((~has_fb).sum())
    frame = frame[has_fb]

    status = _col(frame, "status")
    if status is not None:
        numeric = pd.to_numeric(status, errors="coerce")
        ok = (status.isna() | numeric.between(200, 299)
              | status.astype(str).str.lower().isin(_OK_STATUS))
        counts.failed = int((~ok).sum())
        frame = frame[ok]
    cache = _col(frame, "cache_hit")
    if cache is not None:
        hit = cache.fillna(False).astype(bool)
        counts.cache_hit = int(hit.sum())
        frame = frame[~hit]
    text = _col(frame, "conversation", "messages")
    if text is None:
        has_text = pd.Series(False, index=frame.index)
    else:
        has_text = text.notna() & (text.astype(str).str.strip() != "")
    counts.no_text = int((~has_text).sum())
    frame = frame[has_text]
    propensity = pd.to_numeric(_col(frame, "propensity"), errors="coerce") \
        if "propensity" in frame else pd.Series(np.nan, index=frame.index)
    good_p = (propensity > 0) & (propensity <= 1)
    counts.bad_propensity = int((~good_p).sum())
    frame, propensity = frame[good_p], propensity[good_p]

    served = _col(frame, "served_model", "model")
    chosen = _col(frame, "chosen_model")
    if served is None:
        raise DataError("outcome log export: no served_model column",
                        hint="the log must record which model answered each request")
    fallback = (chosen.astype(str) != served.astype(str)) if chosen is not None else \
        pd.Series(False, index=frame.index)
    raw_weight = 1.0 / propensity
    counts.clipped = int((raw_weight > max_weight).sum())
    counts.fallback = int(fallback.sum())
    counts.used = len(frame)

    out = pd.DataFrame({
        "prompt_id": frame["request_id"].astype(str),
        "messages": text.loc[frame.index].astype(str) if text is not None else [],
        "model": served.astype(str),
        "quality": frame["_quality"].astype(float).clip(0, 1),
        "input_tokens": _float_col(frame, "input_tokens", "prompt_tokens"),
        "output_tokens": _float_col(frame, "output_tokens", "completion_tokens"),
        "cost_usd": _float_col(frame, "cost_usd"),
        "propensity": propensity.astype(float),
        "weight": raw_weight.clip(upper=max_weight).astype(float),
        "timestamp": frame["_ts"],
        "quality_bar": _float_col(frame, "quality_bar"),
        # The gate judges the utility rule only when traffic used it.
        "utility_lambda": _float_col(frame, "utility_lambda"),
        "fallback": fallback.astype(bool),
    })
    if "tokens" in frame and out["output_tokens"].isna().all():
        out["output_tokens"] = pd.to_numeric(frame["tokens"], errors="coerce")
    return out.sort_values("timestamp", kind="stable").reset_index(drop=True), counts


def _float_col(frame: pd.DataFrame, *names: str) -> pd.Series:
    col = _col(frame, *names)
    if col is None:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(col, errors="coerce").astype(float)


def split_recent(rows: pd.DataFrame, holdout_frac: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(older rows to train on, most recent rows held out for the gate), by time."""
    if not 0 <= holdout_frac < 1:
        raise ValueError(f"holdout_frac must be in [0, 1), got {holdout_frac!r}")
    n_hold = int(math.floor(len(rows) * holdout_frac))
    if n_hold == 0:
        return rows, rows.iloc[0:0]
    return rows.iloc[:-n_hold], rows.iloc[-n_hold:]


def load_log(url: str, *, since: timedelta | None = None,
             now: datetime | None = None) -> pd.DataFrame:
    """The outcome log at `url` (SQLite path/URL or PostgreSQL URL), joined with feedback."""
    from router.outcome_log import open_outcome_log

    lower = None
    if since is not None:
        lower = (now or datetime.now(UTC)) - since
    return open_outcome_log(url).export_dataframe(since=lower)


def canonical_rows(rows: pd.DataFrame, catalog: Any) -> pd.DataFrame:
    """Fill missing cost from tokens x prices so logged rows look like loaded outcome rows."""
    rows = rows.copy()
    from router.catalog import estimate_tokens
    from router.conversation import parse_conversation

    # The canonical `messages` is the JSON list of chat messages, whatever the log stored.
    convs = [parse_conversation(m, where=f"logged request {rid}")
             for rid, m in zip(rows["prompt_id"], rows["messages"], strict=True)]
    rows["messages"] = [json.dumps(c.to_messages(), ensure_ascii=False) for c in convs]

    missing_in = rows["input_tokens"].isna()
    if missing_in.any():
        rows.loc[missing_in, "input_tokens"] = [
            float(estimate_tokens(c.text))
            for c, missing in zip(convs, missing_in, strict=True) if missing]
    missing_cost = rows["cost_usd"].isna()
    if missing_cost.any() and catalog is not None:
        rows.loc[missing_cost, "cost_usd"] = [
            catalog[m].cost_usd(i, 0.0 if math.isnan(o) else o)
            for m, i, o in zip(rows.loc[missing_cost, "model"],
                               rows.loc[missing_cost, "input_tokens"],
                               rows.loc[missing_cost, "output_tokens"], strict=True)]
    return rows


def retrain(
    *,
    registry: Registry,
    log_url: str | None = None,
    requests: pd.DataFrame | None = None,
    feedback: pd.DataFrame | None = None,
    since: timedelta | None = None,
    base: Sequence[str | Path] = (),
    eval_data: str | Path | pd.DataFrame | None = None,
    catalog: Any = None,
    tolerance: float = 0.01,
    holdout_frac: float = 0.2,
    max_weight: float = DEFAULT_MAX_WEIGHT,
    min_rows: int = 50,
    min_logged_rows: int = 200,
    seed: int = 0,
    now: datetime | None = None,
    fit: Callable[[pd.DataFrame, Any, int], Any] | None = None,
    dask: Any = None,
    dask_options: dict[str, Any] | None = None,
    echo: Callable[[str], None] = print,
) -> RetrainResult:
    """One retrain: log -> rows -> challenger -> gate -> registry (promote if it passes).

    Pass `log_url` (read through `router.outcome_log`) or the exported
    `requests` / `feedback` frames. `fit(table, catalog, seed)` returns a fitted
    model with `.predict` and `.save(dir)` (default: `QualityModel().fit`, or
    with `dask`, a `dask.distributed.Client`, the same on its cluster:
    `training.distributed.fit_distributed` given `dask_options`), so tests can
    inject a deliberately bad trainer.
    """
    from router.predictor import QualityModel
    from training.data import load_outcomes, load_priced_outcomes
    from training.gate import run_gate

    if catalog is None:
        from router.catalog import load_catalog

        catalog = load_catalog()
    if requests is None and log_url is None:
        if not base:
            raise DataError("nothing to train on: no --log and no --base",
                            hint="pass --log sqlite:///outcomes.db and/or --base FILE")
        # Base tables alone (e.g. a registry's first version): no log to read.
        rows, counts = pd.DataFrame(), RowCounts()
        echo("log: none (base tables only)")
    else:
        if requests is None:
            requests, feedback = load_log(log_url, since=since, now=now), None
        rows, counts = build_training_rows(requests, feedback, since=since, now=now,
                                           max_weight=max_weight)
        echo(f"log: {counts.format()}")
    if len(rows):
        rows = canonical_rows(rows, catalog)
    train_rows, recent = split_recent(rows, holdout_frac if len(rows) >= min_rows else 0.0)
    parts = [train_rows] if len(train_rows) else []
    if base:
        # A base table may hold models the catalog lacks: their prices are learned
        # from their rows' cost_usd, as `router train` does.
        priced = load_priced_outcomes(list(base), catalog=catalog)
        base_table, catalog = priced.table, priced.catalog
        echo(f"base: {len(base_table)} rows from {len(base)} table(s)")
        parts.append(base_table)
    if not parts:
        raise DataError(f"no usable training rows ({counts.format()})",
                        hint="wait for feedback to accumulate, widen --since, or add --base")
    table = pd.concat(parts, ignore_index=True, sort=False)
    if len(table) < min_rows:
        raise DataError(f"only {len(table)} training rows (fewer than {min_rows})",
                        hint="widen --since, add --base tables, or lower --min-rows")
    eval_table = None
    if eval_data is not None:
        eval_table = eval_data if isinstance(eval_data, pd.DataFrame) else \
            load_outcomes([eval_data], catalog=catalog)

    echo(f"training the challenger on {len(table)} rows "
         f"({len(train_rows)} logged, {len(table) - len(train_rows)} base)")
    if fit is None and dask is not None:
        from training.distributed import fit_distributed

        def fit(t: pd.DataFrame, cat: Any, s: int) -> Any:
            return fit_distributed(t, client=dask, catalog=cat, seed=s, holdout_frac=0.1,
                                   **(dask_options or {}))
    elif fit is None:
        def fit(t: pd.DataFrame, cat: Any, s: int) -> Any:
            # 10% of prompts held out so the version's meta.json carries log loss / AUC.
            return QualityModel().fit(t, catalog=cat, seed=s, holdout_frac=0.1, progress=True)
    challenger = fit(table, catalog, seed)

    champion, champion_id = None, registry.current_version()
    if champion_id is not None:
        champion = QualityModel.load(registry.current())
    recent_ok = recent[~recent["fallback"]] if len(recent) else None
    version_id = new_version_id(now)
    report = run_gate(challenger, champion, recent=recent_ok, eval_table=eval_table,
                      tolerance=tolerance, min_logged_rows=min_logged_rows,
                      champion_id=champion_id, challenger_id=version_id)
    echo(report.format())

    staging = Path(tempfile.mkdtemp(prefix="router-retrain-"))
    try:
        artifact = staging / "artifact"
        challenger.save(artifact)
        extra: dict[str, Any] = {
            "gate": json.loads(json.dumps(report.to_dict(), default=_jsonable)),
            "retrain": {"log_rows": counts.to_dict(), "train_rows": len(table),
                        "logged_train_rows": len(train_rows), "holdout_rows": len(recent),
                        "since": str(since) if since else None, "base": [str(b) for b in base],
                        "max_weight": max_weight, "tolerance": tolerance},
        }
        registry.add(artifact, version_id=version_id, move=True, extra_meta=extra)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if report.passed:
        registry.promote(version_id, reason=report.reason)
        echo(f"promoted {version_id}")
    else:
        echo(f"kept {champion_id}; {version_id} registered but not promoted")
    return RetrainResult(version_id=version_id, promoted=report.passed, counts=counts,
                         gate=report, train_rows=len(table), holdout_rows=len(recent))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def export_log_partitions(log_url: str, directory: str | os.PathLike[str], *,
                          catalog: Catalog, since: Any = None,
                          rows_per_partition: int = 100_000) -> list[Path]:
    """The outcome log's training rows (see `training.retrain`) as Parquet partitions."""
    from training.distributed import export_partitions

    rows, counts = build_training_rows(load_log(log_url, since=since), since=since)
    log.info("log export: %s", counts.format())
    if not len(rows):
        raise DataError(f"{log_url}: no usable logged rows ({counts.format()})")
    return export_partitions(canonical_rows(rows, catalog), directory,
                             rows_per_partition=rows_per_partition)
