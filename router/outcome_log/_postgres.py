"""The PostgreSQL outcome-log backend, for several router replicas sharing one log.

psycopg is imported only inside methods, so SQLite-only deployments never need
it. Re-exported by `router.outcome_log._open`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from router.errors import ConfigError
from router.outcome_log._records import (
    _FEEDBACK_COLUMNS,
    _IDENT_RE,
    _JSON_COLUMNS,
    _REQUEST_COLUMNS,
    SCHEMA_VERSION,
    _check_version,
    redact_url,
)
from router.outcome_log._writer import OutcomeLog, OutcomeLogUnavailable
from router.throttle import Throttle

__all__ = ["PostgresOutcomeLog"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

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

    Reads survive a server restart: a pooled connection the server dropped fails
    its next query, so the pool is emptied (its other connections died too) and
    the query runs once more on a fresh connection. While the server is down a
    read raises `OutcomeLogUnavailable`, whose message names no host, port, user
    or database (it reaches clients); the details are logged here.
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
        self._read_warnings = Throttle()
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

    def _with_reader(self, work: Callable[[Any], T], *, offline: bool = False) -> T:
        """`work(conn)` on a pooled (or new) reader connection; see the class docstring.

        `offline` (exports, reports): an unreachable server is a `ConfigError`
        naming the URL (password hidden), for the operator running the command.
        """
        import psycopg
        from psycopg.rows import dict_row

        for attempt in (1, 2):
            try:
                conn, pooled = self._readers.get_nowait(), True
            except queue.Empty:
                try:
                    conn, pooled = self._connect(), False
                except ConfigError as exc:
                    if offline:
                        raise
                    raise self._unavailable(exc) from None
            try:
                conn.row_factory = dict_row
                result = work(conn)
            except psycopg.OperationalError as exc:
                conn.close()
                if pooled and attempt == 1:
                    self._drain_readers()  # the server restarted: every pooled one is dead
                    continue
                if offline:
                    raise ConfigError(f"cannot read the outcome log at {self.describe()}: "
                                      f"{str(exc).strip() or type(exc).__name__}",
                                      hint="check that PostgreSQL is running") from exc
                raise self._unavailable(exc) from None
            except BaseException:
                conn.close()
                raise
            if not conn.closed and not conn.broken and self._readers.qsize() < 4:
                conn.rollback()
                self._readers.put(conn)
            else:
                conn.close()
            return result
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _unavailable(self, exc: BaseException) -> OutcomeLogUnavailable:
        if self._read_warnings.ready():
            logger.warning("outcome log %s cannot be read: %s", self.describe(),
                           str(exc).strip() or type(exc).__name__)
        return OutcomeLogUnavailable("the outcome log's database is unavailable",
                                     hint="retry in a few seconds")

    def _drain_readers(self) -> None:
        while True:
            try:
                conn = self._readers.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()

    def _request_exists(self, request_id: str) -> bool:
        return self._with_reader(lambda conn: conn.execute(
            f"SELECT 1 FROM {self._requests_table} WHERE request_id = %s",
            (request_id,)).fetchone() is not None)

    def _read(self, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        import psycopg

        try:
            rows = self._with_reader(lambda conn: conn.execute(sql, params).fetchall(),
                                     offline=True)
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
        self._drain_readers()
