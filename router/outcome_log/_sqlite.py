"""The SQLite outcome-log backend: one file in WAL mode, written by one thread.

The default (no set-up): WAL lets the report command and the retraining job read
while the router writes; `synchronous=NORMAL` means a committed batch survives a
process crash. Re-exported by `router.outcome_log._open`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from router.errors import ConfigError
from router.outcome_log._records import (
    _FEEDBACK_COLUMNS,
    _REQUEST_COLUMNS,
    SCHEMA_VERSION,
    _check_version,
)
from router.outcome_log._writer import OutcomeLog, OutcomeLogUnavailable

__all__ = ["SQLiteOutcomeLog"]

logger = logging.getLogger(__name__)

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
            start = 0
            while start < len(requests):
                # One multi-row INSERT per power-of-two slice: `executemany` steps
                # once per row, and every step releases the GIL and takes it back,
                # so a batch forced a GIL hand-off per row onto the event loop
                # thread (a stall of up to the switch interval under load). At most
                # 9 statement shapes, so SQLite's statement cache keeps them all.
                size = min(_MAX_ROWS_PER_INSERT, 1 << ((len(requests) - start).bit_length() - 1))
                conn.execute(_insert_requests_sql(size),
                             [value for row in requests[start:start + size] for value in row])
                start += size
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
        try:
            with self._reader() as conn:
                return conn.execute("SELECT 1 FROM requests WHERE request_id = ?",
                                    (request_id,)).fetchone() is not None
        except (sqlite3.OperationalError, ConfigError) as exc:  # locked past the timeout, gone
            logger.warning("outcome log %s cannot be read: %s", self.path, exc)
            raise OutcomeLogUnavailable("the outcome log's database is unavailable",
                                        hint="retry in a few seconds") from None

    def _read(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        with self._reader() as conn:
            return [dict(row) for row in conn.execute(sql, params)]

    def _close_connections(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_MAX_ROWS_PER_INSERT = 256  # x 25 columns, well under SQLite's 32,766 bound parameters


@functools.cache
def _insert_requests_sql(rows: int) -> str:
    values = "(" + ", ".join("?" * len(_REQUEST_COLUMNS)) + ")"
    return (f"INSERT OR IGNORE INTO requests ({', '.join(_REQUEST_COLUMNS)}) "
            f"VALUES {', '.join([values] * rows)}")
_SQLITE_INSERT_FEEDBACK = (
    f"INSERT INTO feedback ({', '.join(_FEEDBACK_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_FEEDBACK_COLUMNS))})")
