"""`OutcomeLog`: the backend-independent half of the outcome log.

It owns the bounded in-memory queue, the one background writer thread that
writes a batch per transaction (retrying transient failures, isolating rejected
rows), flush and graceful close, and the read queries built once for both SQL
dialects. A backend (`router.outcome_log._sqlite`, `router.outcome_log._postgres`)
only implements the connection hooks at the bottom of the class. The full
contract (batching, back-pressure, what a crash can lose) is in the docstring of
`router.outcome_log._open`, which re-exports this class.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from router.errors import ConfigError, RouterError
from router.outcome_log._queries import requests_frame, select_requests
from router.outcome_log._records import (
    FeedbackRecord,
    RequestRecord,
    TimeBound,
    _decode,
    _feedback_row,
    request_row,
)
from router.throttle import Throttle

__all__ = ["OutcomeLog", "OutcomeLogUnavailable"]

logger = logging.getLogger(__name__)


class OutcomeLogUnavailable(RouterError):
    """The log's database cannot answer now (down, restarting, locked, or the log is
    closing). The message names no connection details: it may reach a client (the
    app answers 503); the backend logs the details server-side."""


class OutcomeLog(abc.ABC):
    """Batched, append-only log of requests and feedback. See the module docstring.

    Counters for metrics (read them any time, from any thread): `written`
    (request rows committed), `feedback_written`, `batches` (transactions
    committed), `dropped` (rows lost: full queue, rejected by the database, or
    unwritten at close), `write_errors` (failed write attempts), `queue_size`,
    `failing_since` (wall-clock time of the first failed write of the current
    run of failures, None while writes succeed); `health()` sums them up.

    `close_timeout_s` bounds the wait at close for a database that is slow but
    answering; `close_unreachable_timeout_s` (default 5 s) the wait for one whose
    writes are failing, so a stop while the database is down does not hang.
    """

    def __init__(self, *, batch_size: int = 256, flush_interval_s: float = 0.2,
                 max_queue: int = 100_000, close_timeout_s: float = 30.0,
                 close_unreachable_timeout_s: float = 5.0) -> None:
        if batch_size < 1 or flush_interval_s <= 0 or max_queue < 1:
            raise ConfigError(
                f"outcome log batch_size={batch_size}, flush_interval_s={flush_interval_s}, "
                f"max_queue={max_queue}: all must be positive",
                hint="use e.g. batch_size=256, flush_interval_s=0.2, max_queue=100000")
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_queue = max_queue
        self.close_timeout_s = close_timeout_s
        self.close_unreachable_timeout_s = min(close_unreachable_timeout_s, close_timeout_s)
        self.failing_since: float | None = None
        self.written = 0
        self.feedback_written = 0
        self.batches = 0
        self.dropped = 0
        self.write_errors = 0
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._pending_ids: Counter[str] = Counter()
        self._enqueued_seq = 0  # rows ever enqueued
        self._done_seq = 0  # rows ever finished (written or dropped), in queue order
        self._flush_target = 0
        self._thread: threading.Thread | None = None
        self._closing = False
        self._closed = False
        self._abandon = False
        self._abandoned: list[tuple[str, tuple[Any, ...]]] = []  # batches given up at close
        self._drop_warnings = Throttle()

    # -- public API -----------------------------------------------------------------

    @property
    def queue_size(self) -> int:
        """Rows waiting to be written (not counting the batch in flight)."""
        return len(self._queue)

    def health(self) -> tuple[bool, str | None]:
        """(True, None) while rows are being written; else (False, what is wrong).

        For readiness bodies and metrics: no connection details, which the
        writer logs itself.
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            return False, "the writer is not running: new rows are not written"
        queued = len(self._queue)
        if self.failing_since is not None:
            return False, (f"writes failing for {time.time() - self.failing_since:.0f} s; "
                           f"{queued} rows queued, written once the database is back")
        if queued >= self.max_queue:
            return False, f"queue full ({queued} rows): new rows are dropped"
        return True, None

    async def start(self) -> None:
        """Check the database (schema created if absent) and start the writer thread.

        Raises `ConfigError` naming the URL or path when the store cannot be used.
        """
        if self._thread is not None:
            return
        await asyncio.to_thread(self._open_writer)
        self._thread = threading.Thread(target=self._run, name=f"{type(self).__name__}-writer",
                                        daemon=True)
        self._thread.start()

    def log(self, record: RequestRecord) -> bool:
        """Queue `record` for writing; never blocks on I/O. False if it was dropped.

        Safe to call from the event loop or any thread. Records logged before
        `start()` wait in the queue; records logged after `close()` are dropped
        (and counted).
        """
        row = request_row(record)
        with self._cond:
            if self._closing or len(self._queue) >= self.max_queue:
                self.dropped += 1
                self._warn_drop("closed" if self._closing else "queue full")
                return False
            self._append("r", row, record.request_id)
        return True

    async def add_feedback(self, fb: FeedbackRecord) -> bool:
        """Queue feedback for a known request; False when `fb.request_id` is unknown.

        A request still waiting in the queue counts as known. Raises `DataError`
        for a quality outside [0, 1], an unknown source or a NUL character, and
        `OutcomeLogUnavailable` when the database cannot be asked (down,
        restarting) or the log is closing.
        """
        row = _feedback_row(fb)
        with self._cond:
            known = self._pending_ids[fb.request_id] > 0
        if not known:
            known = await asyncio.to_thread(self._request_exists, fb.request_id)
        if not known:
            return False
        with self._cond:
            if self._closing:
                raise OutcomeLogUnavailable("the outcome log is closed; feedback was not "
                                            "recorded",
                                            hint="the router is shutting down; send it to "
                                                 "another replica")
            self._append("f", row, None)
        return True

    async def flush(self) -> None:
        """Return once every row queued before this call is written (or dropped)."""
        await asyncio.to_thread(self.flush_sync)

    def flush_sync(self, timeout: float | None = None) -> bool:
        """Blocking `flush` for threads and scripts; False if `timeout` ran out."""
        with self._cond:
            target = self._enqueued_seq
            if self._done_seq >= target:
                return True
            if self._thread is None or not self._thread.is_alive():
                raise RouterError(f"{len(self._queue)} outcome rows are queued but the log's "
                                  "writer is not running", hint="call `await log.start()` first")
            self._flush_target = max(self._flush_target, target)
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done_seq >= target, timeout)

    async def close(self) -> None:
        """Write everything queued, stop the writer, release connections.

        Waits up to `close_timeout_s` while the database takes writes, but only
        `close_unreachable_timeout_s` while its writes are failing (down): a stop
        then costs seconds, not half a minute. What is still unwritten is
        counted in `dropped` and logged as one error saying how many requests
        and feedback rows were lost, from when, and why.
        """
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
        await self._stop_writer()
        with self._cond:
            self._count_lost()
            self._closed = True
        await asyncio.to_thread(self._close_connections)

    async def _stop_writer(self) -> None:
        """Let the writer drain within its time limit, then make it give up."""
        thread = self._thread
        if thread is None:
            return
        started = time.monotonic()
        while thread.is_alive():
            waited = time.monotonic() - started
            limit = (self.close_unreachable_timeout_s if self.failing_since is not None
                     else self.close_timeout_s)
            if waited >= limit:
                break
            await asyncio.to_thread(thread.join, min(0.1, limit - waited))
        if thread.is_alive():
            with self._cond:
                self._abandon = True
                self._cond.notify_all()
            await asyncio.to_thread(thread.join, 10.0)

    def _count_lost(self) -> None:
        """Count what is still unwritten as dropped and say it in one error line."""
        left = list(self._queue)
        self._queue.clear()
        self.dropped += len(left)
        # Never started, or abandoned: these rows (and the batch given up) are lost.
        lost_rows = self._abandoned + left
        if not lost_rows:
            return
        kinds = Counter(kind for kind, _ in lost_rows)
        times = sorted(float(row[1]) for _, row in lost_rows)
        when = (f", logged between {time.strftime('%H:%M:%S', time.localtime(times[0]))}"
                f" and {time.strftime('%H:%M:%S', time.localtime(times[-1]))}")
        why = (f"database unreachable for {time.time() - self.failing_since:.0f} s"
               if self.failing_since is not None else "writer not running")
        logger.error("outcome log %s closed with %d rows unwritten and lost (%d "
                     "requests, %d feedback%s): %s", self.describe(), len(lost_rows),
                     kinds["r"], kinds["f"], when, why)

    async def query_requests(self, since: TimeBound = None, until: TimeBound = None,
                             limit: int | None = None) -> list[dict[str, Any]]:
        """Requests with `since <= ts < until`, oldest first, JSON columns decoded."""
        return await asyncio.to_thread(self._select, False, since, until, limit, True)

    async def query_joined(self, since: TimeBound = None,
                           until: TimeBound = None) -> list[dict[str, Any]]:
        """Requests left-joined with feedback: `feedback_quality` (mean of all feedback),
        `feedback_latest` (the most recent one), `feedback_count` (0 when none)."""
        return await asyncio.to_thread(self._select, True, since, until, None, True)

    def export_dataframe(self, since: TimeBound = None, until: TimeBound = None,
                         *, joined: bool = True) -> Any:
        """Synchronous read for offline jobs: a pandas DataFrame, one row per request.

        Needs no `start()` and no event loop. With `joined` (default) it has the
        feedback columns of `query_joined`. JSON columns stay JSON text.
        """
        return requests_frame(self._select(joined, since, until, None, False), joined=joined)

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the log lives, safe to print (no password)."""

    # -- backend hooks ----------------------------------------------------------------

    @abc.abstractmethod
    def _open_writer(self) -> None:
        """Connect, create the schema if absent; raise ConfigError when impossible."""

    @abc.abstractmethod
    def _write(self, requests: Sequence[tuple[Any, ...]],
               feedback: Sequence[tuple[Any, ...]]) -> None:
        """Write both lists in ONE transaction (the batching contract)."""

    @abc.abstractmethod
    def _is_transient(self, exc: BaseException) -> bool:
        """True for errors worth retrying the same batch (locked, connection lost)."""

    @abc.abstractmethod
    def _request_exists(self, request_id: str) -> bool: ...

    @abc.abstractmethod
    def _read(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def _close_connections(self) -> None: ...

    _placeholder = "?"
    _requests_table = "requests"
    _feedback_table = "feedback"

    # -- internals ----------------------------------------------------------------------

    def _append(self, kind: str, row: tuple[Any, ...], request_id: str | None) -> None:
        self._queue.append((kind, row))
        self._enqueued_seq += 1
        if request_id is not None:
            self._pending_ids[request_id] += 1
        n = len(self._queue)
        if n == 1 or n >= self.batch_size:
            self._cond.notify_all()

    def _warn_drop(self, why: str) -> None:
        if self._drop_warnings.ready():
            logger.warning("outcome log %s: dropping records (%s); %d dropped so far",
                           self.describe(), why, self.dropped)

    def _select(self, joined: bool, since: TimeBound, until: TimeBound, limit: int | None,
                decode_json: bool) -> list[dict[str, Any]]:
        sql, params = select_requests(
            placeholder=self._placeholder, requests_table=self._requests_table,
            feedback_table=self._feedback_table, joined=joined, since=since, until=until,
            limit=limit)
        return [_decode(row, decode_json=decode_json) for row in self._read(sql, params)]

    def _run(self) -> None:
        """Writer thread: take a batch, write it in one transaction, repeat."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue or self._abandon:
                    return  # closing and drained, or given up: close() counts the rest
                deadline = time.monotonic() + self.flush_interval_s
                while (len(self._queue) < self.batch_size and not self._closing
                       and self._flush_target <= self._done_seq):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                n = min(self.batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
            self._write_batch(batch)

    def _write_batch(self, batch: list[tuple[str, tuple[Any, ...]]]) -> None:
        requests = [row for kind, row in batch if kind == "r"]
        feedback = [row for kind, row in batch if kind == "f"]
        written, lost = self._write_with_retry(requests, feedback)
        with self._cond:
            if written:
                self.batches += 1
                self.written += len(requests) - lost[0]
                self.feedback_written += len(feedback) - lost[1]
            self.dropped += lost[0] + lost[1]
            for row in requests:
                self._pending_ids[row[0]] -= 1
                if self._pending_ids[row[0]] <= 0:
                    del self._pending_ids[row[0]]
            self._done_seq += len(batch)
            self._cond.notify_all()

    def _write_with_retry(self, requests: list[tuple[Any, ...]],
                          feedback: list[tuple[Any, ...]]) -> tuple[bool, tuple[int, int]]:
        """Returns (anything committed, (request rows lost, feedback rows lost))."""
        delay = 0.1
        while True:
            try:
                self._write(requests, feedback)
                self.failing_since = None
                return True, (0, 0)
            except Exception as exc:  # noqa: BLE001 - classified below, never swallowed silently
                self.write_errors += 1
                if not self._is_transient(exc):
                    logger.error("outcome log %s rejected a batch (%s); writing it row by row",
                                 self.describe(), exc)
                    return self._write_rows_individually(requests, feedback)
                if self.failing_since is None:
                    self.failing_since = time.time()
                with self._cond:
                    if self._abandon:
                        self._abandoned += [("r", row) for row in requests]
                        self._abandoned += [("f", row) for row in feedback]
                        logger.info("outcome log %s: giving up on %d rows at close: %s",
                                    self.describe(), len(requests) + len(feedback), exc)
                        return False, (len(requests), len(feedback))
                logger.warning("outcome log %s: write failed (%s); retrying in %.1fs",
                               self.describe(), exc, delay)
                with self._cond:
                    self._cond.wait_for(lambda: self._abandon, delay)
                delay = min(delay * 2, 5.0)
                with contextlib.suppress(Exception):
                    self._reconnect()

    def _write_rows_individually(self, requests: list[tuple[Any, ...]],
                                 feedback: list[tuple[Any, ...]]
                                 ) -> tuple[bool, tuple[int, int]]:
        lost = [0, 0]
        for i, rows in enumerate((requests, feedback)):
            for row in rows:
                try:
                    self._write([row] if i == 0 else [], [row] if i == 1 else [])
                    self.failing_since = None
                except Exception as exc:  # noqa: BLE001
                    lost[i] += 1
                    logger.error("outcome log %s: dropped %s row for request %r: %s",
                                 self.describe(), "request" if i == 0 else "feedback",
                                 row[0], exc)
        return True, (lost[0], lost[1])

    def _reconnect(self) -> None:  # noqa: B027 - optional hook, SQLite needs none
        """Hook: re-open the writer connection after a transient failure."""
