"""The outcome log: every routed request and every piece of feedback, batched off the request path.

Two backends behind one interface (`OutcomeLog`):

- `SQLiteOutcomeLog(path)`: the default, a single file, no set-up. WAL mode so the
  report command and the retraining job can read while the router writes.
- `PostgresOutcomeLog(url)`: for several router replicas writing one log.

`open_outcome_log(url_or_path)` picks one: `postgresql://...` / `postgres://...`
-> PostgreSQL; `sqlite:///relative.db`, `sqlite:////absolute.db` (SQLAlchemy's
convention) or a plain path -> SQLite; any other scheme is a `ConfigError`.

How writes work, and why
------------------------
`log(record)` is called on the request path, so it never awaits and never does
I/O: it turns the record into a row (microseconds), appends it to an in-memory
queue under a lock held only for the append, and returns. One background writer
thread per log drains the queue and writes **one transaction per batch**
(`executemany`), when `batch_size` rows (default 256) are waiting or
`flush_interval_s` (default 0.2 s) after the first waiting row, whichever comes
first. A thread (not an asyncio task) does the I/O because both sqlite3 and the
sync psycopg driver block; the event loop never waits on the disk or the network.

Feedback (`add_feedback`) goes through the same queue, so it is always written
after the request it refers to. It first checks that the request id is known:
ids still in the queue (or in the batch being written) count as known, then the
database is asked. Unknown ids return False (the app answers 404).

Back-pressure: the queue is bounded (`max_queue`, default 100,000 rows). When it is
full, `log()` **drops the record, returns False, increments `dropped`** and logs a
warning (at most one every 10 s). We drop rather than block because blocking
`log()` would stall every request in the event loop behind a slow database; the
`dropped` counter is exported as a metric so the loss is never silent. Feedback
is never dropped for a full queue (it is rare and precious): it may exceed
`max_queue`.

Write failures: an operational error (database locked, connection lost, server
restarting) keeps the batch and retries with backoff (0.1 s doubling to 5 s);
meanwhile new rows queue up to `max_queue`. Any other error (a row the database
rejects) writes the batch row by row, drops only the rows that fail, counts them
in `dropped` and logs them.

What a crash can lose
---------------------
- `await close()` (graceful shutdown) writes **everything** queued before it returns
  (it waits up to `close_timeout_s`, default 30 s, for an unreachable database; rows
  still unwritten then are counted in `dropped` and logged as an error).
- A crash (SIGKILL, power loss of the process, `os._exit`) loses the rows not yet
  committed: the queue plus the batch in flight. While the writer keeps up, that is
  **at most `batch_size` records or the last `flush_interval_s` of traffic** (about
  0.2 s). If the database has been slow or down, the backlog can be larger, bounded
  by `max_queue`; `queue_size` shows it.
- SQLite runs with `synchronous=NORMAL` in WAL mode: a committed batch survives a
  process crash; an operating-system crash or power cut may lose the last commits.

Reading back
------------
`query_requests` and `query_joined` (async, for the app and the report command)
return dicts with JSON columns decoded. `export_dataframe` is synchronous and needs
neither the app nor `start()`: the retraining job calls
`open_outcome_log(url).export_dataframe(since=...)` and gets a pandas DataFrame,
one row per request, with `feedback_quality` (mean), `feedback_latest`,
`feedback_count`; `candidates`, `fallback_path` and `conversation` stay JSON text
there, like `messages` in the canonical outcome table.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import math
import queue
import re
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from router.errors import ConfigError, DataError, RouterError

__all__ = [
    "SCHEMA_VERSION",
    "RequestRecord",
    "FeedbackRecord",
    "OutcomeLog",
    "SQLiteOutcomeLog",
    "PostgresOutcomeLog",
    "open_outcome_log",
    "redact_url",
]

logger = logging.getLogger(__name__)

#: Version of the tables below; stored in `schema_version`. Bump it with a migration.
SCHEMA_VERSION = 1

FEEDBACK_SOURCES = frozenset({"score", "thumbs"})
ENDPOINTS = frozenset({"chat", "route"})

TimeBound = float | int | datetime | None


@dataclass(slots=True)
class RequestRecord:
    """One routed request, as the app logs it after the response is finished.

    `chosen_model` is the policy's decision, `served_model` the model that actually
    answered after fallbacks (they differ when the chosen model failed). `propensity`
    is the probability the policy chose `chosen_model` (1.0 without exploration): the
    off-policy estimators need it. `conversation` is JSON text of the messages, or
    None in privacy mode (then only `conversation_hash` identifies the prompt).
    """

    request_id: str
    ts: float = field(default_factory=time.time)
    client_key_id: str | None = None
    conversation_hash: str = ""
    conversation: str | None = None
    feature_schema_version: int | None = None
    model_version: str | None = None
    quality_bar: float | None = None
    utility_lambda: float | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    chosen_model: str | None = None
    served_model: str | None = None
    propensity: float = 1.0
    explored: bool = False
    fallback_path: list[dict[str, Any]] = field(default_factory=list)
    cache_hit: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    ttfb_ms: float | None = None
    latency_ms: float | None = None
    status: int = 200
    error: str | None = None
    endpoint: str = "chat"
    stream: bool = False


@dataclass(slots=True)
class FeedbackRecord:
    """A quality judgement of one request: a score in [0, 1] or a thumb (up=1, down=0)."""

    request_id: str
    quality: float
    source: str = "score"
    ts: float = field(default_factory=time.time)
    comment: str | None = None


# Column order of the `requests` table; rows are built in this order.
_REQUEST_COLUMNS: tuple[str, ...] = (
    "request_id", "ts", "client_key_id", "conversation_hash", "conversation",
    "feature_schema_version", "model_version", "quality_bar", "utility_lambda",
    "candidates", "chosen_model", "served_model", "propensity", "explored",
    "fallback_path", "cache_hit", "input_tokens", "output_tokens", "cost_usd",
    "ttfb_ms", "latency_ms", "status", "error", "endpoint", "stream",
)
_JSON_COLUMNS = ("candidates", "fallback_path")
_BOOL_COLUMNS = ("explored", "cache_hit", "stream")
_FEEDBACK_COLUMNS: tuple[str, ...] = ("request_id", "ts", "quality", "source", "comment")
_JOINED_EXTRA = ("feedback_quality", "feedback_latest", "feedback_count")

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, safe for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _epoch(value: TimeBound, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise DataError(f"{name}={value.isoformat()} has no time zone",
                            hint="pass an aware datetime (e.g. tzinfo=UTC) or epoch seconds")
        return value.timestamp()
    return float(value)


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays (the predictor's outputs) become plain numbers and lists.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_json_default)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _request_row(r: RequestRecord) -> tuple[Any, ...]:
    """The record as a row of plain Python values (numpy scalars converted here, so the
    writer never meets a value the database driver cannot bind)."""
    if not r.request_id:
        raise DataError("RequestRecord.request_id is empty", hint="give every request an id")
    return (
        str(r.request_id), float(r.ts), r.client_key_id, r.conversation_hash, r.conversation,
        _opt_int(r.feature_schema_version), r.model_version, _opt_float(r.quality_bar),
        _opt_float(r.utility_lambda), _dumps(r.candidates), r.chosen_model, r.served_model,
        float(r.propensity), bool(r.explored), _dumps(r.fallback_path), bool(r.cache_hit),
        _opt_int(r.input_tokens), _opt_int(r.output_tokens), _opt_float(r.cost_usd),
        _opt_float(r.ttfb_ms), _opt_float(r.latency_ms), int(r.status), r.error, r.endpoint,
        bool(r.stream),
    )


def _feedback_row(fb: FeedbackRecord) -> tuple[Any, ...]:
    q = float(fb.quality)
    if not (0.0 <= q <= 1.0) or math.isnan(q):
        raise DataError(f"feedback quality {fb.quality!r} for request {fb.request_id!r} "
                        "is outside [0, 1]", hint="send a score in [0, 1] or a thumb up/down")
    if fb.source not in FEEDBACK_SOURCES:
        raise DataError(f"feedback source {fb.source!r} is not one of {sorted(FEEDBACK_SOURCES)}",
                        hint="use 'score' or 'thumbs'")
    return (fb.request_id, float(fb.ts), q, fb.source, fb.comment)


def _decode(row: dict[str, Any], *, decode_json: bool) -> dict[str, Any]:
    for col in _BOOL_COLUMNS:
        if col in row and row[col] is not None:
            row[col] = bool(row[col])
    for col in _JSON_COLUMNS:
        value = row.get(col)
        if decode_json and isinstance(value, str):
            row[col] = json.loads(value)
        elif not decode_json and value is not None and not isinstance(value, str):
            row[col] = json.dumps(value, separators=(",", ":"))
    return row


class OutcomeLog(abc.ABC):
    """Batched, append-only log of requests and feedback. See the module docstring.

    Counters for metrics (read them any time, from any thread): `written`
    (request rows committed), `feedback_written`, `batches` (transactions
    committed), `dropped` (rows lost: full queue, rejected by the database, or
    unwritten at close), `write_errors` (failed write attempts), `queue_size`.
    """

    def __init__(self, *, batch_size: int = 256, flush_interval_s: float = 0.2,
                 max_queue: int = 100_000, close_timeout_s: float = 30.0) -> None:
        if batch_size < 1 or flush_interval_s <= 0 or max_queue < 1:
            raise ConfigError(
                f"outcome log batch_size={batch_size}, flush_interval_s={flush_interval_s}, "
                f"max_queue={max_queue}: all must be positive",
                hint="use e.g. batch_size=256, flush_interval_s=0.2, max_queue=100000")
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_queue = max_queue
        self.close_timeout_s = close_timeout_s
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
        self._last_drop_warning = -math.inf

    # -- public API -----------------------------------------------------------------

    @property
    def queue_size(self) -> int:
        """Rows waiting to be written (not counting the batch in flight)."""
        return len(self._queue)

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
        row = _request_row(record)
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
        for a quality outside [0, 1] or an unknown source.
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
                raise RouterError("the outcome log is closed; feedback was not recorded",
                                  hint="send feedback before the router shuts down")
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

        Waits up to `close_timeout_s` for an unreachable database; what is still
        unwritten then is counted in `dropped` and logged as an error.
        """
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, self.close_timeout_s)
            if thread.is_alive():
                with self._cond:
                    self._abandon = True
                    self._cond.notify_all()
                await asyncio.to_thread(thread.join, 10.0)
        with self._cond:
            if self._queue:
                # Never started, or abandoned: these rows will not be written.
                lost = len(self._queue)
                self.dropped += lost
                self._queue.clear()
                logger.error("outcome log closed with %d rows unwritten (%s)", lost,
                             self.describe())
            self._closed = True
        await asyncio.to_thread(self._close_connections)

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
        import pandas as pd  # deferred: the serving path never needs pandas

        rows = self._select(joined, since, until, None, False)
        columns = list(_REQUEST_COLUMNS) + (list(_JOINED_EXTRA) if joined else [])
        frame = pd.DataFrame(rows, columns=columns)
        for col in _BOOL_COLUMNS:
            frame[col] = frame[col].astype(bool)
        return frame

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
        now = time.monotonic()
        if now - self._last_drop_warning >= 10.0:
            self._last_drop_warning = now
            logger.warning("outcome log %s: dropping records (%s); %d dropped so far",
                           self.describe(), why, self.dropped)

    def _select(self, joined: bool, since: TimeBound, until: TimeBound, limit: int | None,
                decode_json: bool) -> list[dict[str, Any]]:
        p, rt, ft = self._placeholder, self._requests_table, self._feedback_table
        where, params = [], []
        lo, hi = _epoch(since, "since"), _epoch(until, "until")
        if lo is not None:
            where.append(f"r.ts >= {p}")
            params.append(lo)
        if hi is not None:
            where.append(f"r.ts < {p}")
            params.append(hi)
        cols = ", ".join(f"r.{c}" for c in _REQUEST_COLUMNS)
        if joined:
            cols += (
                ", agg.feedback_quality, "
                f"(SELECT f2.quality FROM {ft} f2 WHERE f2.request_id = r.request_id "
                "ORDER BY f2.ts DESC, f2.id DESC LIMIT 1) AS feedback_latest, "
                "COALESCE(agg.feedback_count, 0) AS feedback_count")
            source = (f"{rt} r LEFT JOIN (SELECT request_id, AVG(quality) AS feedback_quality, "
                      f"COUNT(*) AS feedback_count FROM {ft} GROUP BY request_id) agg "
                      "ON agg.request_id = r.request_id")
        else:
            source = f"{rt} r"
        sql = f"SELECT {cols} FROM {source}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.ts, r.request_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_decode(row, decode_json=decode_json) for row in self._read(sql, params)]

    def _run(self) -> None:
        """Writer thread: take a batch, write it in one transaction, repeat."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return  # closing and drained
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
                return True, (0, 0)
            except Exception as exc:  # noqa: BLE001 - classified below, never swallowed silently
                self.write_errors += 1
                if not self._is_transient(exc):
                    logger.error("outcome log %s rejected a batch (%s); writing it row by row",
                                 self.describe(), exc)
                    return self._write_rows_individually(requests, feedback)
                with self._cond:
                    if self._abandon:
                        logger.error("outcome log %s: giving up on %d rows at close: %s",
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
                except Exception as exc:  # noqa: BLE001
                    lost[i] += 1
                    logger.error("outcome log %s: dropped %s row for request %r: %s",
                                 self.describe(), "request" if i == 0 else "feedback",
                                 row[0], exc)
        return True, (lost[0], lost[1])

    def _reconnect(self) -> None:  # noqa: B027 - optional hook, SQLite needs none
        """Hook: re-open the writer connection after a transient failure."""


# -- SQLite -------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    client_key_id TEXT,
    conversation_hash TEXT NOT NULL,
    conversation TEXT,
    feature_schema_version INTEGER,
    model_version TEXT,
    quality_bar REAL,
    utility_lambda REAL,
    candidates TEXT NOT NULL,
    chosen_model TEXT,
    served_model TEXT,
    propensity REAL NOT NULL,
    explored INTEGER NOT NULL,
    fallback_path TEXT NOT NULL,
    cache_hit INTEGER NOT NULL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost_usd REAL,
    ttfb_ms REAL,
    latency_ms REAL,
    status INTEGER NOT NULL,
    error TEXT,
    endpoint TEXT NOT NULL,
    stream INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    quality REAL NOT NULL,
    source TEXT NOT NULL,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback (request_id);
"""


def _check_version(found: Sequence[Any], where: str) -> bool:
    """True when the schema_version row must be inserted; raise on a foreign version."""
    if not found:
        return True
    version = int(found[0])
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"outcome log {where} has schema version {version}; this router writes "
            f"version {SCHEMA_VERSION}",
            hint="point the router at a new log, or upgrade the router that reads it")
    return False


class SQLiteOutcomeLog(OutcomeLog):
    """The default backend: one SQLite file in WAL mode, written by one thread."""

    def __init__(self, path: str | Path, **options: Any) -> None:
        super().__init__(**options)
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def describe(self) -> str:
        return str(self.path)

    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False,
                                   isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the outcome log at {self.path}: {exc}",
                              hint="check the path is a writable file location "
                                   "(ROUTER_LOG_URL)") from exc

    def _open_writer(self) -> None:
        conn = self._connect()
        try:
            conn.executescript(_SQLITE_SCHEMA)  # idempotent; executescript commits itself
            conn.execute("BEGIN IMMEDIATE")  # serialise the version check across processes
            row = conn.execute("SELECT version FROM schema_version LIMIT 1").fetchone()
            if _check_version(row or (), str(self.path)):
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ConfigError(f"{self.path} is not a usable outcome log: {exc}",
                              hint="point ROUTER_LOG_URL at a new file") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _write(self, requests: Sequence[tuple[Any, ...]],
               feedback: Sequence[tuple[Any, ...]]) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            if requests:
                conn.executemany(_SQLITE_INSERT_REQUEST, requests)
            if feedback:
                conn.executemany(_SQLITE_INSERT_FEEDBACK, feedback)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        if not self.path.is_file():
            raise ConfigError(f"no outcome log at {self.path}",
                              hint="start the router once to create it, or fix the path")
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10.0)
        try:
            conn.row_factory = sqlite3.Row
            yield conn
        finally:
            conn.close()

    def _request_exists(self, request_id: str) -> bool:
        with self._reader() as conn:
            return conn.execute("SELECT 1 FROM requests WHERE request_id = ?",
                                (request_id,)).fetchone() is not None

    def _read(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        with self._reader() as conn:
            return [dict(row) for row in conn.execute(sql, params)]

    def _close_connections(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_SQLITE_INSERT_REQUEST = (
    f"INSERT OR IGNORE INTO requests ({', '.join(_REQUEST_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_REQUEST_COLUMNS))})")
_SQLITE_INSERT_FEEDBACK = (
    f"INSERT INTO feedback ({', '.join(_FEEDBACK_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_FEEDBACK_COLUMNS))})")


# -- PostgreSQL ---------------------------------------------------------------------------

_PG_TYPES = {
    "request_id": "TEXT PRIMARY KEY", "ts": "DOUBLE PRECISION NOT NULL",
    "client_key_id": "TEXT", "conversation_hash": "TEXT NOT NULL", "conversation": "TEXT",
    "feature_schema_version": "INTEGER", "model_version": "TEXT",
    "quality_bar": "DOUBLE PRECISION", "utility_lambda": "DOUBLE PRECISION",
    "candidates": "JSONB NOT NULL", "chosen_model": "TEXT", "served_model": "TEXT",
    "propensity": "DOUBLE PRECISION NOT NULL", "explored": "BOOLEAN NOT NULL",
    "fallback_path": "JSONB NOT NULL", "cache_hit": "BOOLEAN NOT NULL",
    "input_tokens": "INTEGER", "output_tokens": "INTEGER", "cost_usd": "DOUBLE PRECISION",
    "ttfb_ms": "DOUBLE PRECISION", "latency_ms": "DOUBLE PRECISION",
    "status": "INTEGER NOT NULL", "error": "TEXT", "endpoint": "TEXT NOT NULL",
    "stream": "BOOLEAN NOT NULL",
}
# Any 64-bit constant: serialises schema creation across replicas starting together.
_PG_SCHEMA_LOCK = 0x726F757465725F31


class PostgresOutcomeLog(OutcomeLog):
    """PostgreSQL backend, for several replicas sharing one log.

    `schema` (optional) puts the tables in that PostgreSQL schema, created if
    absent; tests use a unique one per run. Writes use one sync psycopg 3
    connection owned by the writer thread (`executemany`, which psycopg pipelines:
    one round trip per batch, not per row); reads use short-lived connections from
    a small pool in worker threads.
    """

    _placeholder = "%s"

    def __init__(self, url: str, *, schema: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        if schema is not None and not _IDENT_RE.match(schema):
            raise ConfigError(f"outcome log schema name {schema!r} is not a plain identifier",
                              hint="use letters, digits and underscores")
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.schema = schema
        prefix = f'"{schema}".' if schema else ""
        self._requests_table = f"{prefix}requests"
        self._feedback_table = f"{prefix}feedback"
        self._version_table = f"{prefix}schema_version"
        self._conn: Any = None
        self._readers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        cols = ", ".join(_REQUEST_COLUMNS)
        values = ", ".join("%s::jsonb" if c in _JSON_COLUMNS else "%s" for c in _REQUEST_COLUMNS)
        self._insert_request = (f"INSERT INTO {self._requests_table} ({cols}) VALUES ({values}) "
                                "ON CONFLICT (request_id) DO NOTHING")
        self._insert_feedback = (f"INSERT INTO {self._feedback_table} "
                                 f"({', '.join(_FEEDBACK_COLUMNS)}) VALUES (%s, %s, %s, %s, %s)")

    def describe(self) -> str:
        where = redact_url(self.url)
        return f"{where} (schema {self.schema})" if self.schema else where

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.url, connect_timeout=5)
        except (psycopg.Error, ValueError) as exc:
            raise ConfigError(
                f"cannot connect to the outcome log at {redact_url(self.url)}: "
                f"{str(exc).strip() or type(exc).__name__}",
                hint="check host, port, database and user in the URL (ROUTER_LOG_URL) "
                     "and that PostgreSQL is running") from exc

    def _open_writer(self) -> None:
        import psycopg

        conn = self._connect()
        t = self._requests_table
        ddl = [f"CREATE SCHEMA IF NOT EXISTS \"{self.schema}\"" if self.schema else None,
               f"CREATE TABLE IF NOT EXISTS {self._version_table} (version INTEGER NOT NULL)",
               f"CREATE TABLE IF NOT EXISTS {t} ("
               + ", ".join(f"{c} {_PG_TYPES[c]}" for c in _REQUEST_COLUMNS) + ")",
               f"CREATE INDEX IF NOT EXISTS requests_ts ON {t} (ts)",
               f"CREATE TABLE IF NOT EXISTS {self._feedback_table} ("
               "id BIGSERIAL PRIMARY KEY, request_id TEXT NOT NULL, "
               "ts DOUBLE PRECISION NOT NULL, quality DOUBLE PRECISION NOT NULL, "
               "source TEXT NOT NULL, comment TEXT)",
               f"CREATE INDEX IF NOT EXISTS feedback_request ON {self._feedback_table} "
               "(request_id)"]
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
                for stmt in ddl:
                    if stmt:
                        conn.execute(stmt)
                row = conn.execute(f"SELECT version FROM {self._version_table} LIMIT 1").fetchone()
                if _check_version(row or (), self.describe()):
                    conn.execute(f"INSERT INTO {self._version_table} VALUES (%s)",
                                 (SCHEMA_VERSION,))
        except psycopg.Error as exc:
            conn.close()
            raise ConfigError(f"cannot create the outcome log tables at {self.describe()}: "
                              f"{exc}", hint="the user in the URL needs CREATE rights") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _reconnect(self) -> None:  # noqa: B027 - optional hook, SQLite needs none
        if self._conn is None or self._conn.closed or self._conn.broken:
            with contextlib.suppress(Exception):
                if self._conn is not None:
                    self._conn.close()
            self._conn = self._connect()

    def _write(self, requests: Sequence[tuple[Any, ...]],
               feedback: Sequence[tuple[Any, ...]]) -> None:
        conn = self._conn
        with conn.transaction(), conn.cursor() as cur:
            if requests:
                cur.executemany(self._insert_request, requests)
            if feedback:
                cur.executemany(self._insert_feedback, feedback)

    def _is_transient(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.OperationalError | ConfigError) or (
            self._conn is not None and (self._conn.closed or self._conn.broken))

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Any]:
        from psycopg.rows import dict_row

        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = self._connect()
        ok = False
        try:
            conn.row_factory = dict_row
            yield conn
            ok = True
        finally:
            if ok and not conn.closed and not conn.broken and self._readers.qsize() < 4:
                conn.rollback()
                self._readers.put(conn)
            else:
                conn.close()

    def _request_exists(self, request_id: str) -> bool:
        with self._reader() as conn:
            return conn.execute(f"SELECT 1 FROM {self._requests_table} WHERE request_id = %s",
                                (request_id,)).fetchone() is not None

    def _read(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        import psycopg

        try:
            with self._reader() as conn:
                rows = conn.execute(sql, params).fetchall()
        except psycopg.errors.UndefinedTable as exc:
            raise ConfigError(f"no outcome log tables at {self.describe()}",
                              hint="start the router once against this database to "
                                   "create them, or fix the URL/schema") from exc
        for row in rows:
            # AVG over DOUBLE PRECISION is float already; COUNT is int. Keep plain types.
            if row.get("feedback_quality") is not None:
                row["feedback_quality"] = float(row["feedback_quality"])
        return rows

    def _close_connections(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                break


def open_outcome_log(url_or_path: str | Path, **options: Any) -> OutcomeLog:
    """Build (not start) the log named by `url_or_path`; see the module docstring.

    `options` go to the backend (`batch_size`, `flush_interval_s`, `max_queue`,
    `close_timeout_s`; `schema` for PostgreSQL). No I/O happens here: `await
    log.start()` connects and raises `ConfigError` if it cannot.
    """
    if isinstance(url_or_path, Path):
        return SQLiteOutcomeLog(url_or_path, **options)
    text = str(url_or_path).strip()
    if not text:
        raise ConfigError("the outcome log URL is empty",
                          hint="set ROUTER_LOG_URL to a file path or postgresql://... URL")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        options.pop("path", None)
        return PostgresOutcomeLog(text, **options)
    if scheme == "sqlite":
        path = text[len("sqlite:///"):] if text.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"outcome log URL {text!r} names no file",
                              hint="use sqlite:///relative.db or sqlite:////absolute/path.db")
        return SQLiteOutcomeLog(path, **options)
    if scheme:
        raise ConfigError(f"outcome log URL {redact_url(text)!r} has an unsupported scheme "
                          f"{scheme!r}",
                          hint="use a file path, sqlite:///file.db or postgresql://user@host/db")
    return SQLiteOutcomeLog(text, **options)
