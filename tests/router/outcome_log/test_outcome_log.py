"""The outcome log keeps every record a user logged, joins feedback, and reads it back.

Every behavioural test runs on SQLite (tmp_path) and on the real PostgreSQL (marked
`postgres`, one throwaway schema per test, dropped afterwards); the fixtures are in
conftest.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from router.errors import ConfigError, DataError
from router.outcome_log import (
    SCHEMA_VERSION,
    FeedbackRecord,
    OutcomeLog,
    RequestRecord,
    SQLiteOutcomeLog,
)
from tests.router.outcome_log.stores import POSTGRES_URL, full_record, row_count


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
