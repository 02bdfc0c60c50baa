"""The outcome log keeps every record a user logged, batches its writes, and says what is wrong.

Every behavioural test runs on SQLite (tmp_path) and on the real PostgreSQL (marked
`postgres`, one throwaway schema per test, dropped afterwards).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from router.errors import ConfigError, DataError
from router.outcome_log import (
    SCHEMA_VERSION,
    FeedbackRecord,
    OutcomeLog,
    PostgresOutcomeLog,
    RequestRecord,
    SQLiteOutcomeLog,
    open_outcome_log,
    redact_url,
)

POSTGRES_URL = os.environ.get("ROUTER_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
REPO_ROOT = Path(__file__).resolve().parents[3]


def full_record(request_id: str = "req-1", ts: float = 1_700_000_000.25) -> RequestRecord:
    """A record with every field set to a non-default value."""
    return RequestRecord(
        request_id=request_id, ts=ts, client_key_id="k_3f2a", conversation_hash="ab" * 32,
        conversation='[{"role":"user","content":"Héllo, wörld"}]', feature_schema_version=3,
        model_version="v20250101-030000-1a2b3c", quality_bar=0.8, utility_lambda=12.5,
        candidates=[{"model": "small", "expected_quality": 0.71, "expected_cost_usd": 0.0001},
                    {"model": "large", "expected_quality": 0.93, "expected_cost_usd": 0.004}],
        chosen_model="large", served_model="small", propensity=0.9, explored=True,
        fallback_path=[{"model": "large", "status": 503, "error": "overloaded"},
                       {"model": "small", "status": 200, "error": None}],
        cache_hit=True, input_tokens=120, output_tokens=45, cost_usd=0.00123, ttfb_ms=210.5,
        latency_ms=980.25, status=200, error="upstream 503 on large", endpoint="route",
        stream=True)


def row_count(log: OutcomeLog) -> int:
    return len(log.export_dataframe(joined=False))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_log(backend: str, tmp_path: Path) -> Any:
    """Factory of unstarted logs on one store (same file / same schema), dropped afterwards."""
    schema = f"test_outcome_{uuid.uuid4().hex[:12]}"
    made: list[OutcomeLog] = []

    def make(**options: Any) -> OutcomeLog:
        if backend == "sqlite":
            log: OutcomeLog = SQLiteOutcomeLog(tmp_path / "outcomes.db", **options)
        else:
            log = PostgresOutcomeLog(POSTGRES_URL, schema=schema, **options)
        made.append(log)
        return log

    yield make
    for log in made:
        log._close_connections()
    if backend == "postgres":
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
async def log(make_log: Callable[..., OutcomeLog]) -> AsyncIterator[OutcomeLog]:
    log = make_log(flush_interval_s=0.05)
    await log.start()
    yield log
    await log.close()


async def test_every_field_round_trips(log: OutcomeLog) -> None:
    record = full_record()
    minimal = RequestRecord(request_id="req-2", ts=1_700_000_001.0, conversation_hash="cd")
    assert log.log(record) and log.log(minimal)
    await log.flush()

    rows = await log.query_requests()

    assert rows == [dataclasses.asdict(record), dataclasses.asdict(minimal)]
    assert log.written == 2 and log.dropped == 0


async def test_numpy_values_from_the_predictor_are_stored_as_plain_numbers(
        log: OutcomeLog) -> None:
    import numpy as np

    record = dataclasses.replace(
        full_record("np"), quality_bar=np.float32(0.75), cost_usd=np.float64(0.5),
        input_tokens=np.int64(12), propensity=np.float64(0.25),
        candidates=[{"model": "small", "expected_quality": np.float32(0.5),
                     "expected_cost_usd": np.float64(0.25)}])
    assert log.log(record)
    await log.flush()

    [row] = await log.query_requests()
    assert (row["quality_bar"], row["cost_usd"], row["input_tokens"]) == (0.75, 0.5, 12)
    assert row["candidates"] == [{"model": "small", "expected_quality": 0.5,
                                  "expected_cost_usd": 0.25}]
    assert log.dropped == 0


async def test_feedback_joins_mean_latest_and_count(log: OutcomeLog) -> None:
    log.log(full_record("a", ts=100.0))
    log.log(full_record("b", ts=200.0))
    assert await log.add_feedback(FeedbackRecord("a", 0.2, "score", ts=300.0))
    assert await log.add_feedback(FeedbackRecord("a", 1.0, "thumbs", ts=400.0, comment="nice"))
    await log.flush()

    joined = {row["request_id"]: row for row in await log.query_joined()}

    assert joined["a"]["feedback_quality"] == pytest.approx(0.6)
    assert joined["a"]["feedback_latest"] == 1.0
    assert joined["a"]["feedback_count"] == 2
    assert joined["b"]["feedback_quality"] is None and joined["b"]["feedback_count"] == 0
    frame = log.export_dataframe()
    assert list(frame["request_id"]) == ["a", "b"]
    assert frame.loc[0, "feedback_quality"] == pytest.approx(0.6)
    assert frame.loc[0, "candidates"].startswith('[{"model":"small"')  # JSON text for training


async def test_the_export_carries_each_requests_latencies_for_retraining(
        log: OutcomeLog) -> None:
    log.log(full_record("timed"))
    log.log(RequestRecord("untimed", ts=1_700_000_002.0, conversation_hash="ef"))
    await log.flush()

    frame = log.export_dataframe().set_index("request_id")
    assert frame.loc["timed", "ttfb_ms"] == 210.5 and frame.loc["timed", "latency_ms"] == 980.25
    assert frame.loc["untimed", ["ttfb_ms", "latency_ms"]].isna().all(), "unknown, not 0"


async def test_feedback_for_unknown_id_is_refused_and_not_written(log: OutcomeLog) -> None:
    log.log(full_record("known"))
    await log.flush()

    assert await log.add_feedback(FeedbackRecord("nope", 1.0)) is False
    assert await log.add_feedback(FeedbackRecord("known", 1.0)) is True
    await log.flush()

    rows = await log.query_joined()
    assert [(r["request_id"], r["feedback_count"]) for r in rows] == [("known", 1)]
    assert log.feedback_written == 1


async def test_request_still_in_the_queue_counts_as_known(
        make_log: Callable[..., OutcomeLog]) -> None:
    log = make_log(batch_size=1000, flush_interval_s=30.0)
    await log.start()
    log.log(full_record("queued"))
    assert log.queue_size == 1  # not written yet: the writer waits for more rows or 30 s

    assert await log.add_feedback(FeedbackRecord("queued", 0.5)) is True
    await log.close()

    [row] = log.export_dataframe().to_dict("records")
    assert row["request_id"] == "queued" and row["feedback_quality"] == 0.5


async def test_bad_feedback_is_rejected_with_the_value(log: OutcomeLog) -> None:
    log.log(full_record("r"))
    with pytest.raises(DataError, match=r"quality 1\.5 for request 'r' is outside \[0, 1\]"):
        await log.add_feedback(FeedbackRecord("r", 1.5))
    with pytest.raises(DataError, match="source 'stars'"):
        await log.add_feedback(FeedbackRecord("r", 0.5, source="stars"))
    await log.flush()
    assert (await log.query_joined())[0]["feedback_count"] == 0


async def test_feedback_with_a_nul_character_is_refused_not_dropped_after_acceptance(
        log: OutcomeLog) -> None:
    # PostgreSQL refuses NUL in text: accepted, the row was dropped at write time.
    log.log(full_record("req-nul"))
    await log.flush()
    for fb in (FeedbackRecord("req-nul", 0.5, comment="good\x00answer"),
               FeedbackRecord("req-nul\x00", 0.5)):
        with pytest.raises(DataError, match="contains a NUL character"):
            await log.add_feedback(fb)
    assert await log.add_feedback(FeedbackRecord("req-nul", 0.5, comment="good answer"))
    await log.flush()
    assert log.dropped == 0
    [row] = await log.query_joined()
    assert row["feedback_count"] == 1


async def test_rows_are_written_in_batches_not_one_by_one(
        make_log: Callable[..., OutcomeLog], monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log(batch_size=256, flush_interval_s=30.0)
    transactions: list[int] = []
    real_write = log._write

    def counting_write(requests: Any, feedback: Any) -> None:
        transactions.append(len(requests) + len(feedback))
        real_write(requests, feedback)

    monkeypatch.setattr(log, "_write", counting_write)
    for i in range(1000):
        log.log(full_record(f"r{i}", ts=float(i)))  # queued before start: one backlog
    await log.start()
    await log.close()

    assert transactions == [256, 256, 256, 232]
    assert log.batches == 4 and log.written == 1000
    assert row_count(log) == 1000


async def test_a_batch_of_odd_size_round_trips_row_for_row(
        make_log: Callable[..., OutcomeLog]) -> None:
    # 299 rows in one transaction: SQLite writes them as multi-row INSERTs of
    # 256 + 32 + 8 + 2 + 1; every row must land with its own values, in order.
    log = make_log(batch_size=512, flush_interval_s=30.0)
    records = [dataclasses.replace(full_record(f"r{i:03d}", ts=float(i)), output_tokens=i,
                                   served_model=f"m{i % 7}") for i in range(299)]
    for record in records:
        log.log(record)
    await log.start()
    await log.close()

    rows = await log.query_requests()
    assert log.batches == 1 and log.written == 299
    assert rows == [dataclasses.asdict(r) for r in records]


async def test_a_partial_batch_is_written_after_the_flush_interval(
        make_log: Callable[..., OutcomeLog]) -> None:
    log = make_log(batch_size=1000, flush_interval_s=0.05)
    await log.start()
    for i in range(3):
        log.log(full_record(f"r{i}"))

    for _ in range(100):  # no flush() call: the timer alone must write them
        if log.written == 3:
            break
        await asyncio.sleep(0.02)

    assert log.written == 3 and log.batches == 1
    assert row_count(log) == 3
    await log.close()


async def test_graceful_close_persists_every_record(make_log: Callable[..., OutcomeLog]) -> None:
    writer = make_log(batch_size=100, flush_interval_s=10.0)
    await writer.start()
    for i in range(5000):
        writer.log(full_record(f"r{i}", ts=float(i)))
    assert writer.queue_size > 0  # close() starts with rows still queued
    await writer.close()

    reader = make_log()
    assert row_count(reader) == 5000
    assert writer.dropped == 0
    assert writer.log(full_record("late")) is False and writer.dropped == 1  # counted, not lost


@pytest.mark.slow
def test_a_crash_loses_at_most_the_unflushed_batch(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    script = textwrap.dedent(f"""
        import asyncio, os, time
        from router.outcome_log import SQLiteOutcomeLog, RequestRecord

        async def main():
            log = SQLiteOutcomeLog({str(db)!r}, batch_size=64, flush_interval_s=0.05)
            await log.start()
            for i in range(300):
                log.log(RequestRecord(request_id=f"old{{i}}", conversation_hash="h"))
            await asyncio.sleep(0.5)   # ten flush intervals: all of these are committed
            for i in range(50):
                log.log(RequestRecord(request_id=f"new{{i}}", conversation_hash="h"))
            os._exit(0)                # crash: no close(), no flush

        asyncio.run(main())
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO_ROOT, timeout=60)

    ids = {row[0] for row in sqlite3.connect(db).execute("SELECT request_id FROM requests")}
    assert {f"old{i}" for i in range(300)} <= ids  # older than the flush interval: kept
    assert len(ids) >= 300 and len(ids - {f"old{i}" for i in range(300)}) <= 50


async def test_concurrent_writers_lose_nothing(make_log: Callable[..., OutcomeLog]) -> None:
    # Two logs on one store are two replicas; threads and tasks call log() at once.
    replicas = [make_log(batch_size=50, flush_interval_s=0.02) for _ in range(2)]
    for replica in replicas:
        await replica.start()

    def worker(replica: OutcomeLog, name: str) -> None:
        for i in range(500):
            replica.log(full_record(f"{name}-{i}"))

    threads = [threading.Thread(target=worker, args=(replicas[i % 2], f"t{i}")) for i in range(6)]
    for thread in threads:
        thread.start()

    async def task(name: str) -> None:
        for i in range(500):
            replicas[0].log(full_record(f"{name}-{i}"))
            if i % 100 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(task(f"a{i}") for i in range(2)))
    for thread in threads:
        await asyncio.to_thread(thread.join)
    for replica in replicas:
        await replica.close()

    frame = replicas[0].export_dataframe(joined=False)
    assert len(frame) == 4000 and frame["request_id"].is_unique
    assert sum(r.dropped for r in replicas) == 0


async def test_full_queue_drops_and_counts(make_log: Callable[..., OutcomeLog]) -> None:
    log = make_log(max_queue=10)
    accepted = [log.log(full_record(f"r{i}")) for i in range(15)]  # writer not started yet

    assert accepted == [True] * 10 + [False] * 5
    assert log.dropped == 5
    await log.start()
    await log.close()
    assert row_count(log) == 10


async def test_log_does_not_block_while_the_database_is_locked(tmp_path: Path) -> None:
    log = SQLiteOutcomeLog(tmp_path / "locked.db", flush_interval_s=0.01)
    await log.start()
    blocker = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        assert all(log.log(full_record(f"r{i}")) for i in range(100))  # returns at once
        await asyncio.sleep(0.1)
        assert log.written == 0
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    await log.close()
    assert log.written == 100 and row_count(log) == 100


async def test_time_window_filters(log: OutcomeLog) -> None:
    for i in range(10):
        log.log(full_record(f"r{i}", ts=1000.0 + i))
    await log.flush()

    rows = await log.query_requests(since=1003, until=1006)
    assert [r["request_id"] for r in rows] == ["r3", "r4", "r5"]
    assert len(await log.query_requests(limit=4)) == 4
    assert list(log.export_dataframe(since=1008)["request_id"]) == ["r8", "r9"]


async def test_duplicate_request_id_keeps_the_first_and_the_rest_of_the_batch(
        log: OutcomeLog) -> None:
    log.log(full_record("dup", ts=1.0))
    log.log(dataclasses.replace(full_record("dup", ts=2.0), served_model="other"))
    log.log(full_record("next", ts=3.0))
    await log.flush()

    rows = await log.query_requests()
    assert [(r["request_id"], r["served_model"]) for r in rows] == [("dup", "small"),
                                                                    ("next", "small")]


async def test_log_from_a_newer_router_is_refused(make_log: Callable[..., OutcomeLog],
                                                 backend: str) -> None:
    first = make_log()
    await first.start()
    await first.close()
    if backend == "sqlite":
        with sqlite3.connect(first.path) as conn:  # type: ignore[attr-defined]
            conn.execute("UPDATE schema_version SET version = 99")
    else:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'UPDATE "{first.schema}".schema_version SET version = 99')  # type: ignore[attr-defined]

    with pytest.raises(ConfigError, match=f"schema version 99; this router writes version "
                                          f"{SCHEMA_VERSION}"):
        await make_log().start()


# -- URLs and bad input --------------------------------------------------------------------


def test_open_picks_the_backend_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_outcome_log(tmp_path / "a.db"), SQLiteOutcomeLog)
    assert open_outcome_log(str(tmp_path / "a.db")).path == tmp_path / "a.db"
    assert open_outcome_log("sqlite:///rel/out.db").path == Path("rel/out.db")
    assert open_outcome_log(f"sqlite:///{tmp_path}/b.db").path == tmp_path / "b.db"
    pg = open_outcome_log("postgresql://u@db.internal/router", batch_size=10)
    assert isinstance(pg, PostgresOutcomeLog) and pg.batch_size == 10
    assert isinstance(open_outcome_log("postgres://u@h/db"), PostgresOutcomeLog)


def test_unknown_scheme_names_the_url_without_password() -> None:
    with pytest.raises(ConfigError) as err:
        open_outcome_log("mysql://admin:hunter2@db/router")
    assert "mysql://admin:***@db/router" in str(err.value) and "hunter2" not in str(err.value)
    assert "postgresql://" in (err.value.hint or "")


async def test_unreachable_postgres_names_the_url_without_password() -> None:
    log = open_outcome_log("postgresql://bob:hunter2@127.0.0.1:1/nowhere")
    with pytest.raises(ConfigError) as err:
        await log.start()
    message = str(err.value)
    assert "postgresql://bob:***@127.0.0.1:1/nowhere" in message
    assert "hunter2" not in message


@pytest.mark.postgres
async def test_missing_postgres_database_is_a_config_error() -> None:
    base = POSTGRES_URL.rsplit("/", 1)[0]
    with pytest.raises(ConfigError, match="no_such_db_router"):
        await open_outcome_log(f"{base}/no_such_db_router_test").start()


async def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"my precious notes, not a database" * 100)
    with pytest.raises(ConfigError, match=str(path)):
        await SQLiteOutcomeLog(path).start()
    assert path.read_bytes() == b"my precious notes, not a database" * 100


def test_export_from_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"no outcome log at {tmp_path / 'none.db'}"):
        SQLiteOutcomeLog(tmp_path / "none.db").export_dataframe()


def test_bad_batching_options_are_named() -> None:
    with pytest.raises(ConfigError, match="batch_size=0"):
        SQLiteOutcomeLog("x.db", batch_size=0)


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("postgresql://u:p%40ss@h:5432/db?sslmode=require") == \
        "postgresql://u:***@h:5432/db?sslmode=require"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.fixture
def pg_schema() -> Any:
    import psycopg

    schema = f"test_outcome_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.postgres
async def test_postgres_connection_killed_mid_run_is_retried_without_loss(
        pg_schema: str) -> None:
    import psycopg

    log = PostgresOutcomeLog(POSTGRES_URL, schema=pg_schema, batch_size=50,
                             flush_interval_s=0.02)
    await log.start()
    for i in range(100):
        log.log(full_record(f"before-{i}"))
    await log.flush()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (log._conn.info.backend_pid,))
    for i in range(100):
        log.log(full_record(f"after-{i}"))
    await log.close()

    assert log.write_errors >= 1 and log.dropped == 0
    assert row_count(log) == 200
    log._close_connections()
