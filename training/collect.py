"""The evaluation harness behind `router collect`: every prompt through every candidate.

A team's history holds the outcomes of the model it used; to route, it must learn
how the other candidates do on its own prompts. `collect` runs each prompt through
each model at temperature 0 with the same messages (and the same optional system
prompt), through the same `UpstreamClient` as the service (retries, `Retry-After`
and rate-limit handling come from it; `chain=[model]`, never a fallback, since
each candidate is what is measured), grades the answer (`training.graders`) and
writes one row per (prompt, model) of the canonical outcome table.

The jobs are split into modules, each with its own why:

- `training.collect_prompts`: the prompts file (`PromptItem`, `load_prompts`).
- `training.collect_journal`: the output file as its own checkpoint, which is
  what makes a run resumable and safe to kill (`read_results`, `graded_rows`).
- `training.collect_budget`: the cost cap (`max_cost_usd`) and how each call is
  estimated before it is made.
- `training.collect_compare`: the per-model comparison table.
- here: the run itself, one (prompt, model) pair at a time under a concurrency
  limit. Every name this module exported before the split is still importable
  from here.

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

import pandas as pd

from router.catalog import Catalog
from router.errors import ConfigError, DataError
from training.collect_budget import DEFAULT_OUTPUT_TOKENS, CostCap, row_cost_usd
from training.collect_compare import comparison_table, format_comparison
from training.collect_journal import (
    FSYNC_EVERY,
    OUTPUT_COLUMNS,
    Appender,
    compact,
    graded_rows,
    read_results,
    resume,
)
from training.collect_prompts import PromptItem, load_prompts
from training.graders import Grade, GradeInput, Grader

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "FSYNC_EVERY",
    "OUTPUT_COLUMNS",
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


def _clean(value: Any) -> Any:
    """NaN -> None so the JSON line is valid JSON (null)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _answer_text(response: dict[str, Any]) -> str:
    try:
        content = response["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


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

    out = Path(out)
    _check_run(prompts, models, grader, out, catalog, concurrency, max_cost_usd)
    resumed = resume(out, prompts, models, grader, retry_errors=retry_errors)
    cap = CostCap.resume(resumed.rows, resumed.latest.values(), catalog=catalog,
                         grader=grader, max_cost_usd=max_cost_usd, max_tokens=max_tokens)
    pending = resumed.pending
    result = CollectResult(out=out, pairs_total=len(prompts) * len(models),
                           skipped=resumed.skipped, spent_usd=cap.spent_usd,
                           max_cost_usd=max_cost_usd)
    base_body: dict[str, Any] = {"temperature": 0}
    if max_tokens:
        base_body["max_tokens"] = max_tokens
    bar = tqdm(total=len(pending), unit="pair", desc="collect",
               disable=(not sys.stderr.isatty()) if progress is None else not progress)
    run = _Run(client=client, catalog=catalog, grader=grader, base_body=base_body,
               appender=Appender(out), sem=asyncio.Semaphore(concurrency), cap=cap,
               result=result, bar=bar, on_row=on_row)
    await run.all(pending)
    result.remaining = len(pending) - result.completed
    result.spent_usd = cap.spent_usd
    if retry_errors:
        compact(out)
    result.table = read_results(out)
    return result


def _check_run(prompts: Sequence[PromptItem], models: Sequence[str], grader: Grader,
               out: Path, catalog: Catalog, concurrency: int,
               max_cost_usd: float | None) -> None:
    """Refuse a run that cannot work before anything is called or written."""
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


@dataclass
class _Run:
    """One run's pairs in flight: call, grade, append, count, within the cost cap."""

    client: Any
    catalog: Catalog
    grader: Grader
    base_body: dict[str, Any]
    appender: Appender
    sem: asyncio.Semaphore
    cap: CostCap
    result: CollectResult
    bar: Any
    on_row: Callable[[dict[str, Any]], None] | None
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    failures: list[BaseException] = field(default_factory=list)

    async def all(self, pending: Sequence[tuple[PromptItem, str]]) -> None:
        """Start each pending pair when a slot is free and the cap allows; then wait."""
        try:
            for item, model in pending:
                await self.sem.acquire()
                if self.failures:
                    self.sem.release()
                    break
                cost = await self._affordable(item, model)
                if cost is None:
                    self.sem.release()
                    self.result.stopped_at_cap = True
                    break
                self.cap.reserve(cost)
                task = asyncio.create_task(self._run_and_record(item, model, cost))
                self.in_flight = {t for t in self.in_flight if not t.done()} | {task}
            if self.in_flight:
                await asyncio.gather(*self.in_flight)
        finally:
            await self._close()
        if self.failures:
            raise self.failures[0]

    async def _affordable(self, item: PromptItem, model: str) -> float | None:
        """The pair's estimated cost, or None when it would pass the cap."""
        cost = self.cap.estimate(item, model)
        while self.cap.over_cap(cost) and any(not t.done() for t in self.in_flight):
            # Calls in flight may cost less than reserved: wait before giving up.
            await asyncio.wait([t for t in self.in_flight if not t.done()],
                               return_when=asyncio.FIRST_COMPLETED)
            cost = self.cap.estimate(item, model)
        return None if self.cap.over_cap(cost) else cost

    async def _close(self) -> None:
        pending_tasks = [t for t in self.in_flight if not t.done()]
        for task in pending_tasks:
            task.cancel()
        if pending_tasks:
            # Let cancelled calls unwind (release the semaphore) before the file closes.
            await asyncio.gather(*pending_tasks, return_exceptions=True)
        self.bar.close()
        self.appender.close()

    async def _run_and_record(self, item: PromptItem, model: str, reserved: float) -> None:
        try:
            row = await self._run_pair(item, model)
            cost = row_cost_usd(row)
            self.appender.write(row)
            self.cap.spend(cost)
            result = self.result
            result.spent_this_run_usd += cost
            result.completed += 1
            result.errors += row["status"] == "error"
            result.grade_errors += row["grade_error"] is not None
            self.cap.observe_output(model, row["output_tokens"])
            self.bar.update(1)
            if self.on_row is not None:
                self.on_row(row)
        except Exception as exc:  # a bug, not a provider failure: stop the run
            self.failures.append(exc)
        finally:
            self.cap.release(reserved)
            self.sem.release()

    async def _run_pair(self, item: PromptItem, model: str) -> dict[str, Any]:
        """One call and its grade, as an output row (a failed call is a row too)."""
        from router.upstream import UpstreamError

        body = {**self.base_body, "messages": list(item.messages)}
        started = time.monotonic()
        row: dict[str, Any] = {
            "prompt_id": item.prompt_id, "messages": item.messages_json, "model": model,
            "quality": None, "input_tokens": None, "output_tokens": None, "cost_usd": 0.0,
            "latency_ms": None, "ttfb_ms": None, "attempts": None, "status": "ok",
            "error": None, "grader": self.grader.spec, "grade_error": None, "answer": None,
            "reference": item.reference, "tokens_estimated": None,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        try:
            answer = await self.client.complete(body, chain=[model])
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
            cost_usd=self.catalog[model].cost_usd(usage.prompt_tokens,
                                                  usage.completion_tokens),
            latency_ms=latency_ms, ttfb_ms=answer.ttfb_s * 1000,
            attempts=len(answer.attempts), answer=text, tokens_estimated=usage.estimated,
        )
        grade: Grade = await self.grader.grade(GradeInput(item.prompt_id, model,
                                                          item.messages, text,
                                                          item.reference))
        row.update({k: _clean(v) for k, v in grade.columns.items()})
        row["quality"] = _clean(grade.quality)
        row["grade_error"] = grade.error
        return row
