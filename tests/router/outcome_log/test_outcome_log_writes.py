"""The outcome log batches its writes off the request path and loses nothing it promised:
batches, flushes, graceful close, a crash, concurrent replicas, a full queue, a locked or
restarted database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from router.outcome_log import (
    OutcomeLog,
    PostgresOutcomeLog,
)
from tests.router.outcome_log.stores import POSTGRES_URL, REPO_ROOT, full_record, row_count


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
