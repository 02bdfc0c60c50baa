"""Fixtures of the outcome-log tests: each behavioural test runs on SQLite (tmp_path)
and on the real PostgreSQL (marked `postgres`, one throwaway schema per test,
dropped afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from router.outcome_log import OutcomeLog, PostgresOutcomeLog, SQLiteOutcomeLog
from tests.router.outcome_log.stores import POSTGRES_URL


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


@pytest.fixture
def pg_schema() -> Any:
    import psycopg

    schema = f"test_outcome_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
