"""The evaluation harness behind `router collect`: every prompt through every candidate.

A team's history holds the outcomes of the model it used; to route, it must learn
how the other candidates do on its own prompts. `collect` runs each prompt through
each model at temperature 0 with the same messages (and the same optional system
prompt), through the same `UpstreamClient` as the service (retries, `Retry-After`
and rate-limit handling come from it; `chain=[model]`, never a fallback, since
each candidate is what is measured), grades the answer (`training.graders`) and
writes one row per (prompt, model) of the canonical outcome table.

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

The cost cap
------------
`max_cost_usd` caps the total spend recorded in `--out` (earlier runs included,
judge calls included). Before each call the pair's cost is estimated (its input
tokens, the largest output seen from that model so far, or `max_tokens`, or
`DEFAULT_OUTPUT_TOKENS`, at catalog prices, plus the judge's estimate) and the
call is made only if spent + in-flight estimates + this estimate stays within
the cap; when it would not, the run waits for calls in flight and, if it still
would not fit, stops starting new calls and reports how many pairs remain.
Estimates can be low, so the cap can be overshot by at most the error of the
estimates of the calls in flight.

Output columns: `prompt_id`, `messages` (JSON text as sent), `model`, `quality`,
`input_tokens`, `output_tokens` (from the provider's `usage`; `tokens_estimated`
is true when it sent none), `cost_usd` (tokens x catalog prices), `latency_ms`
(the whole call, retries included), `ttfb_ms`, `attempts`, `status` ("ok" or
"error"), `error`, `grader`, `grade_error`, `answer`, `reference`, `timestamp`,
and the grader's own columns (`judge_model`, `judge_raw`, `judge_cost_usd`;
`extracted`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.catalog import Catalog
from router.conversation import Conversation, parse_conversation
from router.errors import ConfigError, DataError
from training.graders import Grade, GradeInput, Grader

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "FSYNC_EVERY",
    "PromptItem",
    "CollectResult",
    "load_prompts",
    "collect",
    "read_results",
    "graded_rows",
    "comparison_table",
    "format_comparison",
]

log = logging.getLogger(__name__)

DEFAULT_OUTPUT_TOKENS = 256
FSYNC_EVERY = 16
_FSYNC_INTERVAL_S = 1.0

OUTPUT_COLUMNS = ("prompt_id", "messages", "model", "quality", "input_tokens", "output_tokens",
                  "cost_usd", "latency_ms", "ttfb_ms", "attempts", "status", "error", "grader",
                  "grade_error", "answer", "reference", "tokens_estimated", "timestamp")


@dataclass(frozen=True)
class PromptItem:
    """One prompt as it will be sent: `messages` include the system prompt, if any."""

    prompt_id: str
    messages: tuple[dict[str, str], ...]
    reference: str | None
    input_tokens: int

    @property
    def messages_json(self) -> str:
        return json.dumps(list(self.messages), ensure_ascii=False)


@dataclass
class CollectResult:
    """What one `collect` run did. Totals over the whole `out` file are in `table`."""

    out: Path
    pairs_total: int
    skipped: int = 0
    completed: int = 0
    errors: int = 0
    grade_errors: int = 0
    remaining: int = 0
    spent_usd: float = 0.0
    spent_this_run_usd: float = 0.0
    stopped_at_cap: bool = False
    max_cost_usd: float | None = None
    table: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("table")
        data["out"] = str(self.out)
        return data


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def load_prompts(path: str | os.PathLike[str], *, system_prompt: str | None = None
                 ) -> list[PromptItem]:
    """Read a prompts file (CSV, CSV.gz, JSONL, Parquet): `prompt_id`, `prompt` or
    `messages` (JSON list of chat messages), optional `reference`.

    `system_prompt` is put first in every conversation that has no system
    message of its own, so every model sees the same instructions.
    """
    from training.data import read_table

    path = Path(path)
    raw = read_table(path)
    raw.columns = [str(c).strip() for c in raw.columns]
    if len(raw) == 0:
        raise DataError(f"{path}: no prompts", hint="the file needs a header and one row "
                                                    "per prompt")
    missing = [c for c in ("prompt_id",) if c not in raw.columns]
    if "prompt" not in raw.columns and "messages" not in raw.columns:
        missing.append("prompt (or messages)")
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the file has "
                        f"{', '.join(raw.columns)}",
                        hint="columns: prompt_id, prompt (or messages), optional reference")
    items: list[PromptItem] = []
    seen: dict[str, int] = {}
    records = raw.to_dict("records")
    for row_no, record in enumerate(records, start=1):
        where = f"{path}, row {row_no}"
        pid_raw = record.get("prompt_id")
        pid = "" if _is_missing(pid_raw) else str(pid_raw).strip()
        if not pid:
            raise DataError(f"{where}: prompt_id is empty", hint="every prompt needs an id")
        if pid in seen:
            raise DataError(f"{where}: prompt_id {pid!r} already used in row {seen[pid]}",
                            hint="give every prompt its own id")
        seen[pid] = row_no
        value = record.get("messages")
        if not _is_missing(value):
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: messages is not valid JSON ({exc.msg})",
                                    hint='messages must be a JSON list of {"role": ..., '
                                         '"content": ...} objects') from None
            conv = parse_conversation(value, where=f"{where}: messages")
        else:
            prompt = record.get("prompt")
            if _is_missing(prompt) or not str(prompt).strip():
                raise DataError(f"{where}: prompt is empty",
                                hint="every row needs the prompt text (or a messages list)")
            conv = Conversation.from_prompt(str(prompt))
        messages = conv.to_messages()
        if system_prompt and not conv.system:
            messages = [{"role": "system", "content": system_prompt}, *messages]
            conv = parse_conversation(messages, where=where)
        reference = record.get("reference")
        reference = None if _is_missing(reference) else str(reference)
        items.append(PromptItem(pid, tuple(messages), reference, conv.input_tokens))
    return items


# --------------------------------------------------------------------------- the output file


def _read_lines(out: Path, *, repair: bool) -> list[dict[str, Any]]:
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
    rows = _read_lines(Path(out), repair=False)
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


def _compact(out: Path) -> None:
    """Rewrite `out` with the newest row per pair (atomically: temp file + rename)."""
    rows = _read_lines(out, repair=False)
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


class _Appender:
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


def _clean(value: Any) -> Any:
    """NaN -> None so the JSON line is valid JSON (null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --------------------------------------------------------------------------- the run


def _answer_text(response: dict[str, Any]) -> str:
    try:
        content = response["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


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


async def collect(
    prompts: Sequence[PromptItem],
    models: Sequence[str],
    grader: Grader,
    out: str | os.PathLike[str],
    *,
    client: Any,
    catalog: Catalog,
    concurrency: int = 4,
    max_cost_usd: float | None = None,
    max_tokens: int | None = None,
    retry_errors: bool = False,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    progress: bool | None = None,
) -> CollectResult:
    """Run every (prompt, model) pair not yet in `out`; see the module docstring.

    `client` is a `router.upstream.UpstreamClient`. `on_row` is called with each
    row after it is written (tests use it to interrupt a run). Returns the run's
    counts plus the whole output as `result.table` (newest row per pair).
    """
    from tqdm import tqdm

    from router.upstream import UpstreamError

    out = Path(out)
    if not out.name.endswith(".jsonl"):
        raise ConfigError(f"--out {out}: the output must be a .jsonl file",
                          hint="JSONL can be appended to as pairs finish, which is what makes "
                               "the run resumable; e.g. --out outcomes.jsonl")
    if concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
    if max_cost_usd is not None and not max_cost_usd >= 0:
        raise ConfigError(f"--max-cost-usd must be >= 0, got {max_cost_usd}")
    if not models:
        raise ConfigError("no models to collect", hint="pass --models a,b,c")
    for model in models:
        catalog[model]  # ConfigError naming the known models
    if grader.needs_reference:
        lacking = [p.prompt_id for p in prompts if p.reference is None]
        if lacking:
            raise DataError(f"grader {grader.spec!r} needs a reference answer, but prompt(s) "
                            f"{', '.join(map(repr, lacking[:5]))} have none",
                            hint="add a `reference` column, or use --grader judge:MODEL or "
                                 "labels:FILE")

    existing = _read_lines(out, repair=True)
    _check_existing(existing, prompts, grader, out)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in existing:
        latest[(str(row["prompt_id"]), str(row["model"]))] = row
    spent = sum(float(r.get("cost_usd") or 0) + float(r.get("judge_cost_usd") or 0)
                for r in existing)
    max_out: dict[str, float] = {}
    for (_, model), row in latest.items():
        if row.get("output_tokens") is not None:
            max_out[model] = max(max_out.get(model, 0.0), float(row["output_tokens"]))

    pending: list[tuple[PromptItem, str]] = []
    skipped = 0
    for item in prompts:
        for model in models:
            row = latest.get((item.prompt_id, model))
            if row is not None and not (retry_errors and row.get("status") == "error"):
                skipped += 1
                continue
            pending.append((item, model))

    result = CollectResult(out=out, pairs_total=len(prompts) * len(models), skipped=skipped,
                           spent_usd=spent, max_cost_usd=max_cost_usd)
    state = {"spent": spent, "reserved": 0.0}

    def estimate(item: PromptItem, model: str) -> float:
        spec = catalog[model]
        out_tokens = max_out.get(model) or max_tokens or DEFAULT_OUTPUT_TOKENS
        return (spec.cost_usd(item.input_tokens, out_tokens)
                + grader.estimate_cost_usd(int(item.input_tokens + out_tokens)))

    base_body: dict[str, Any] = {"temperature": 0}
    if max_tokens:
        base_body["max_tokens"] = max_tokens

    async def run_pair(item: PromptItem, model: str) -> dict[str, Any]:
        body = {**base_body, "messages": list(item.messages)}
        started = time.monotonic()
        row: dict[str, Any] = {
            "prompt_id": item.prompt_id, "messages": item.messages_json, "model": model,
            "quality": None, "input_tokens": None, "output_tokens": None, "cost_usd": 0.0,
            "latency_ms": None, "ttfb_ms": None, "attempts": None, "status": "ok",
            "error": None, "grader": grader.spec, "grade_error": None, "answer": None,
            "reference": item.reference, "tokens_estimated": None,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        try:
            answer = await client.complete(body, chain=[model])
        except UpstreamError as exc:
            row.update(status="error", error=exc.message,
                       latency_ms=(time.monotonic() - started) * 1000,
                       attempts=len(exc.attempts) or 1)
            return row
        latency_ms = (time.monotonic() - started) * 1000
        usage = answer.usage
        text = _answer_text(answer.response)
        row.update(
            input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
            cost_usd=catalog[model].cost_usd(usage.prompt_tokens, usage.completion_tokens),
            latency_ms=latency_ms, ttfb_ms=answer.ttfb_s * 1000,
            attempts=len(answer.attempts), answer=text, tokens_estimated=usage.estimated,
        )
        grade: Grade = await grader.grade(GradeInput(item.prompt_id, model, item.messages,
                                                     text, item.reference))
        row.update({k: _clean(v) for k, v in grade.columns.items()})
        row["quality"] = _clean(grade.quality)
        row["grade_error"] = grade.error
        return row

    appender = _Appender(out)
    sem = asyncio.Semaphore(concurrency)
    in_flight: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []
    bar = tqdm(total=len(pending), unit="pair", desc="collect",
               disable=(not sys.stderr.isatty()) if progress is None else not progress)

    async def run_and_record(item: PromptItem, model: str, reserved: float) -> None:
        try:
            row = await run_pair(item, model)
            cost = float(row["cost_usd"] or 0) + float(row.get("judge_cost_usd") or 0)
            appender.write(row)
            state["spent"] += cost
            result.spent_this_run_usd += cost
            result.completed += 1
            result.errors += row["status"] == "error"
            result.grade_errors += row["grade_error"] is not None
            if row["output_tokens"] is not None:
                max_out[model] = max(max_out.get(model, 0.0), float(row["output_tokens"]))
            bar.update(1)
            if on_row is not None:
                on_row(row)
        except Exception as exc:  # a bug, not a provider failure: stop the run
            failures.append(exc)
        finally:
            state["reserved"] -= reserved
            sem.release()

    def over_cap(cost: float) -> bool:
        return max_cost_usd is not None and (
            state["spent"] + state["reserved"] + cost > max_cost_usd + 1e-12)

    try:
        for item, model in pending:
            await sem.acquire()
            if failures:
                sem.release()
                break
            cost = estimate(item, model)
            while over_cap(cost) and any(not t.done() for t in in_flight):
                # Calls in flight may cost less than reserved: wait before giving up.
                await asyncio.wait([t for t in in_flight if not t.done()],
                                   return_when=asyncio.FIRST_COMPLETED)
                cost = estimate(item, model)
            if over_cap(cost):
                sem.release()
                result.stopped_at_cap = True
                break
            state["reserved"] += cost
            task = asyncio.create_task(run_and_record(item, model, cost))
            in_flight = {t for t in in_flight if not t.done()} | {task}
        if in_flight:
            await asyncio.gather(*in_flight)
    finally:
        pending_tasks = [t for t in in_flight if not t.done()]
        for task in pending_tasks:
            task.cancel()
        if pending_tasks:
            # Let cancelled calls unwind (release the semaphore) before the file closes.
            await asyncio.gather(*pending_tasks, return_exceptions=True)
        bar.close()
        appender.close()
    if failures:
        raise failures[0]
    result.remaining = len(pending) - result.completed
    result.spent_usd = state["spent"]
    if retry_errors:
        _compact(out)
    result.table = read_results(out)
    return result


# --------------------------------------------------------------------------- the comparison


def comparison_table(table: pd.DataFrame, models: Sequence[str] | None = None
                     ) -> list[dict[str, Any]]:
    """Per model: mean quality, cost per request, p50/p99 latency, tokens, error rate.

    Quality is the mean over graded rows; cost, latency and tokens over rows whose
    call succeeded; `error_rate` is failed calls / pairs; `grade_errors` counts
    answers that could not be graded.
    """
    names = list(models) if models is not None else list(dict.fromkeys(table["model"]))
    rows: list[dict[str, Any]] = []
    for model in names:
        part = table[table["model"] == model]
        ok = part[part["status"] == "ok"]
        graded = part["quality"].dropna()
        latency = ok["latency_ms"].dropna().to_numpy(dtype="float64")

        def mean(values: pd.Series) -> float | None:
            values = values.dropna()
            return float(values.mean()) if len(values) else None

        rows.append({
            "model": model,
            "pairs": int(len(part)),
            "graded": int(len(graded)),
            "mean_quality": float(graded.mean()) if len(graded) else None,
            "cost_per_request_usd": mean(ok["cost_usd"]),
            "total_cost_usd": float(part["cost_usd"].fillna(0).sum()),
            "p50_latency_ms": float(np.percentile(latency, 50)) if len(latency) else None,
            "p99_latency_ms": float(np.percentile(latency, 99)) if len(latency) else None,
            "mean_input_tokens": mean(ok["input_tokens"]),
            "mean_output_tokens": mean(ok["output_tokens"]),
            "error_rate": float((part["status"] == "error").mean()) if len(part) else None,
            "grade_errors": int(part["grade_error"].notna().sum())
            if "grade_error" in part.columns else 0,
        })
    return rows


def format_comparison(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as an aligned text table (blank where there is no value)."""
    header = ("model", "pairs", "quality", "cost/req $", "p50 ms", "p99 ms", "tok in",
              "tok out", "errors", "ungraded")

    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [header]
    for r in rows:
        lines.append((
            r["model"], str(r["pairs"]), fmt(r["mean_quality"], ".3f"),
            fmt(r["cost_per_request_usd"], ".6f"), fmt(r["p50_latency_ms"], ".0f"),
            fmt(r["p99_latency_ms"], ".0f"), fmt(r["mean_input_tokens"], ".0f"),
            fmt(r["mean_output_tokens"], ".0f"),
            "-" if r["error_rate"] is None else f"{100 * r['error_rate']:.1f}%",
            str(r["grade_errors"]),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
        for line in lines)
