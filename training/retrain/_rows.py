"""Logged requests -> canonical training rows: the window, feedback, skips, weights."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.catalog import Catalog
from router.errors import DataError
from training.retrain._settings import DEFAULT_MAX_WEIGHT

__all__ = ["RowCounts", "build_training_rows", "canonical_rows", "export_log_partitions",
           "load_log", "split_recent"]

log = logging.getLogger(__name__)

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


def _timestamps(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return pd.to_datetime(values, unit="s", utc=True)
    return pd.to_datetime(values, utc=True, format="mixed")


def _col(frame: pd.DataFrame, *names: str) -> pd.Series | None:
    for name in names:
        if name in frame:
            return frame[name]
    return None


def _float_col(frame: pd.DataFrame, *names: str) -> pd.Series:
    col = _col(frame, *names)
    if col is None:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(col, errors="coerce").astype(float)


def _keep(frame: pd.DataFrame, keep: pd.Series, counts: RowCounts, reason: str) -> pd.DataFrame:
    """`frame[keep]`, the dropped rows counted under `reason`."""
    setattr(counts, reason, int((~keep).sum()))
    return frame[keep]


def _in_window(frame: pd.DataFrame, counts: RowCounts, since: timedelta | None,
               now: datetime | None) -> pd.DataFrame:
    frame = frame.copy()
    frame["_ts"] = _timestamps(frame["ts"])
    if since is None:
        return frame
    return _keep(frame, frame["_ts"] >= pd.Timestamp((now or datetime.now(UTC)) - since),
                 counts, "outside_window")


def _with_feedback(frame: pd.DataFrame, feedback: pd.DataFrame | None) -> pd.DataFrame:
    """`frame` with `_quality`: the latest feedback per request (NaN without any)."""
    if feedback is not None and len(feedback):
        if "quality" not in feedback:
            raise DataError("outcome log feedback: missing column 'quality'")
        fb = feedback.copy()
        fb["_fts"] = _timestamps(fb["ts"]) if "ts" in fb else pd.Timestamp(0, tz="UTC")
        fb = fb.sort_values("_fts").drop_duplicates("request_id", keep="last")
        fb = fb[["request_id", "quality"]].rename(columns={"quality": "_quality"})
        return frame.merge(fb, on="request_id", how="left")
    latest = _col(frame, "feedback_latest", "feedback_quality", "quality")
    frame["_quality"] = pd.to_numeric(latest, errors="coerce") if latest is not None else np.nan
    return frame


def _usable(frame: pd.DataFrame, counts: RowCounts) -> pd.DataFrame:
    """Rows with feedback, a successful call, text, a valid propensity, not from cache."""
    frame = _keep(frame, frame["_quality"].notna(), counts, "no_feedback")
    status = _col(frame, "status")
    if status is not None:
        numeric = pd.to_numeric(status, errors="coerce")
        frame = _keep(frame, status.isna() | numeric.between(200, 299)
                      | status.astype(str).str.lower().isin(_OK_STATUS), counts, "failed")
    cache = _col(frame, "cache_hit")
    if cache is not None:
        frame = _keep(frame, ~cache.fillna(False).astype(bool), counts, "cache_hit")
    text = _col(frame, "conversation", "messages")
    has_text = (pd.Series(False, index=frame.index) if text is None
                else text.notna() & (text.astype(str).str.strip() != ""))
    frame = _keep(frame, has_text, counts, "no_text")
    frame = frame.assign(_propensity=_float_col(frame, "propensity"))
    return _keep(frame, (frame["_propensity"] > 0) & (frame["_propensity"] <= 1), counts,
                 "bad_propensity")


def _rows_of(frame: pd.DataFrame, counts: RowCounts, max_weight: float) -> pd.DataFrame:
    """The canonical columns of the usable requests, one row each, oldest first."""
    served, chosen = _col(frame, "served_model", "model"), _col(frame, "chosen_model")
    if served is None:
        raise DataError("outcome log export: no served_model column",
                        hint="the log must record which model answered each request")
    text = _col(frame, "conversation", "messages")
    fallback = (chosen.astype(str) != served.astype(str)) if chosen is not None else \
        pd.Series(False, index=frame.index)
    raw_weight = 1.0 / frame["_propensity"]
    counts.clipped = int((raw_weight > max_weight).sum())
    counts.fallback = int(fallback.sum())
    counts.used = len(frame)
    out = pd.DataFrame({
        "prompt_id": frame["request_id"].astype(str),
        "messages": text.astype(str) if text is not None else [],
        "model": served.astype(str),
        "quality": frame["_quality"].astype(float).clip(0, 1),
        "input_tokens": _float_col(frame, "input_tokens", "prompt_tokens"),
        "output_tokens": _float_col(frame, "output_tokens", "completion_tokens"),
        "cost_usd": _float_col(frame, "cost_usd"),
        # The log's time to first byte from the provider is the table's ttft_ms.
        "latency_ms": _float_col(frame, "latency_ms"),
        "ttft_ms": _float_col(frame, "ttft_ms", "ttfb_ms"),
        "propensity": frame["_propensity"],
        "weight": raw_weight.clip(upper=max_weight).astype(float),
        "timestamp": frame["_ts"],
        "quality_bar": _float_col(frame, "quality_bar"),
        # The gate judges the utility rule only when traffic used it.
        "utility_lambda": _float_col(frame, "utility_lambda"),
        "fallback": fallback.astype(bool),
    })
    if "tokens" in frame and out["output_tokens"].isna().all():
        out["output_tokens"] = pd.to_numeric(frame["tokens"], errors="coerce")
    return out.sort_values("timestamp", kind="stable").reset_index(drop=True)


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
    `input_tokens`, `output_tokens`, `cost_usd`, `latency_ms`, `ttft_ms`,
    `propensity`, `weight`, `timestamp`, `quality_bar`, `utility_lambda`,
    `fallback`) sorted by time, and the counts of what was skipped.
    """
    for col in ("request_id", "ts"):
        if col not in requests:
            raise DataError(f"outcome log export: missing column {col!r}",
                            hint="export with OutcomeLog.export_dataframe()")
    counts = RowCounts(requests=len(requests))
    frame = _in_window(requests, counts, since, now)
    frame = _usable(_with_feedback(frame, feedback), counts)
    return _rows_of(frame, counts, max_weight), counts


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
    """Fill missing cost from tokens x prices so logged rows look like loaded outcome rows.

    The other columns, the latencies among them, are kept as they are.
    """
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
