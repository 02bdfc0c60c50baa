"""The output file of `router collect`, used as its own checkpoint.

Resumable, and why it is safe
-----------------------------
The output is a JSONL file used as its own checkpoint: each finished pair is
appended as one line the moment it completes (flushed at once, `fsync`-ed every
`FSYNC_EVERY` rows and at the end), so a killed run loses at most the pairs that
were in flight. A rerun with the same `--out` reads the file, skips every pair it
holds and appends the rest. A line torn by a kill mid-write (the last line, with
no newline) is cut off on resume. Pairs whose call failed are kept as `status:
"error"` rows (they count in the error rate) and are only retried with
`retry_errors=True`; the file is then compacted so the newest row per pair wins.
Rows that could not be graded (judge reply unparseable, no label) keep quality
NaN and a `grade_error`; `graded_rows(table)` gives the rows `router train` can use.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.errors import ConfigError, DataError
from training.collect_prompts import PromptItem
from training.graders import Grader

__all__ = [
    "FSYNC_EVERY",
    "OUTPUT_COLUMNS",
    "Appender",
    "Resumed",
    "compact",
    "graded_rows",
    "read_lines",
    "read_results",
    "resume",
]

log = logging.getLogger(__name__)

FSYNC_EVERY = 16
_FSYNC_INTERVAL_S = 1.0

OUTPUT_COLUMNS = ("prompt_id", "messages", "model", "quality", "input_tokens", "output_tokens",
                  "cost_usd", "latency_ms", "ttfb_ms", "attempts", "status", "error", "grader",
                  "grade_error", "answer", "reference", "tokens_estimated", "timestamp")


def read_lines(out: Path, *, repair: bool) -> list[dict[str, Any]]:
    """Rows of an existing output file; a torn last line is cut off when `repair`."""
    if not out.exists():
        return []
    data = out.read_bytes()
    rows: list[dict[str, Any]] = []
    offset = 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        is_last = number == len(lines)
        start = offset
        offset += len(line) + 1
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
        except ValueError:
            if is_last:  # written without its newline: the run died mid-write
                if repair:
                    log.warning("%s: dropping an incomplete last line (interrupted run)", out)
                    with out.open("r+b") as handle:
                        handle.truncate(start)
                break
            raise DataError(f"{out}, line {number}: not a JSON object",
                            hint="this file is not a `router collect` output; pass a new "
                                 "--out") from None
        if not {"prompt_id", "model", "status"} <= row.keys():
            raise DataError(f"{out}, line {number}: not a `router collect` row (needs "
                            "prompt_id, model, status)", hint="pass a new --out file")
        rows.append(row)
    return rows


def read_results(out: str | os.PathLike[str]) -> pd.DataFrame:
    """The output file as a table, the newest row per (prompt_id, model)."""
    rows = read_lines(Path(out), repair=False)
    if not rows:
        return pd.DataFrame(columns=list(OUTPUT_COLUMNS))
    table = pd.DataFrame(rows)
    table = table.drop_duplicates(["prompt_id", "model"], keep="last").reset_index(drop=True)
    for column in ("quality", "input_tokens", "output_tokens", "cost_usd", "latency_ms",
                   "ttfb_ms"):
        if column in table.columns:
            table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
    return table


def graded_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows with a quality: what `training.data.load_outcomes` accepts."""
    return table[table["quality"].notna()].reset_index(drop=True)


def compact(out: Path) -> None:
    """Rewrite `out` with the newest row per pair (atomically: temp file + rename)."""
    rows = read_lines(out, repair=False)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (str(row["prompt_id"]), str(row["model"]))
        latest.pop(key, None)  # keep first-completion order of the survivors
        latest[key] = row
    if len(latest) == len(rows):
        return
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in latest.values():
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, out)


class Appender:
    """Appends rows as JSON lines; flushed per row, fsync-ed per batch and at close."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")
        self._unsynced = 0
        self._last_sync = time.monotonic()

    def write(self, row: dict[str, Any]) -> None:
        self._handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False,
                                      default=_json_default) + "\n")
        # In the OS after flush(): survives a killed process; fsync covers a crashed host.
        self._handle.flush()
        self._unsynced += 1
        now = time.monotonic()
        if self._unsynced >= FSYNC_EVERY or now - self._last_sync >= _FSYNC_INTERVAL_S:
            self.sync()

    def sync(self) -> None:
        if self._unsynced:
            os.fsync(self._handle.fileno())
            self._unsynced = 0
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._handle.closed:
            self.sync()
            self._handle.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@dataclass
class Resumed:
    """What an earlier run left in the output file, and the pairs still to run.

    `rows` are every row in file order (the spend counts each of them); `latest`
    is the newest row per (prompt_id, model); `pending` the pairs this run makes,
    in prompt-then-model order; `skipped` the pairs already done.
    """

    rows: list[dict[str, Any]]
    latest: dict[tuple[str, str], dict[str, Any]]
    pending: list[tuple[PromptItem, str]]
    skipped: int


def resume(out: Path, prompts: Sequence[PromptItem], models: Sequence[str], grader: Grader,
           *, retry_errors: bool) -> Resumed:
    """Read `out` (cutting a torn last line), check it fits this run, list what is left."""
    existing = read_lines(out, repair=True)
    _check_existing(existing, prompts, grader, out)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in existing:
        latest[(str(row["prompt_id"]), str(row["model"]))] = row
    pending: list[tuple[PromptItem, str]] = []
    skipped = 0
    for item in prompts:
        for model in models:
            row = latest.get((item.prompt_id, model))
            if row is not None and not (retry_errors and row.get("status") == "error"):
                skipped += 1
                continue
            pending.append((item, model))
    return Resumed(rows=existing, latest=latest, pending=pending, skipped=skipped)


def _check_existing(rows: list[dict[str, Any]], items: Sequence[PromptItem], grader: Grader,
                    out: Path) -> None:
    """Refuse to mix a different grader or changed prompts into one table."""
    by_id = {item.prompt_id: item for item in items}
    for row in rows:
        if row.get("grader") not in (None, grader.spec):
            raise ConfigError(f"{out} was graded with {row['grader']!r}; this run uses "
                              f"{grader.spec!r}",
                              hint="use a new --out for another grader, so one table never "
                                   "mixes two kinds of quality")
        item = by_id.get(str(row["prompt_id"]))
        if item is not None and row.get("messages") not in (None, item.messages_json):
            raise DataError(f"{out}: prompt_id {row['prompt_id']!r} has different messages "
                            "there than in the prompts file",
                            hint="the prompts changed since the first run; use a new --out")

