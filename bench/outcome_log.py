"""Outcome-log write throughput: the batched log vs one INSERT + COMMIT per record.

Prints, for SQLite and PostgreSQL, records/s from the first `log()` to the end of
`close()` (everything durable), the cost of one `log()` call on the request path,
and a baseline measured in the same run: a naive writer committing each record in
its own transaction. Target: >= 5,000 records/s for the batched log.

    python bench/outcome_log.py                      # both backends
    python bench/outcome_log.py --n 100000 --no-postgres
    ROUTER_TEST_POSTGRES_URL=postgresql://... python bench/outcome_log.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

from router.outcome_log import (
    OutcomeLog,
    PostgresOutcomeLog,
    RequestRecord,
    SQLiteOutcomeLog,
    request_row,
)

TARGET = 5_000


def record(i: int) -> RequestRecord:
    return RequestRecord(
        request_id=f"bench-{i}", conversation_hash=f"{i:064x}",
        conversation='[{"role":"user","content":"Summarise the attached report in 3 bullets."}]',
        feature_schema_version=1, model_version="v1", quality_bar=0.8,
        candidates=[{"model": m, "expected_quality": 0.7, "expected_cost_usd": 0.001}
                    for m in ("small", "medium", "large")],
        chosen_model="small", served_model="small",
        fallback_path=[{"model": "small", "status": 200, "error": None}],
        input_tokens=120, output_tokens=60, cost_usd=0.0002, ttfb_ms=150.0, latency_ms=900.0)


async def batched(log: OutcomeLog, records: list[RequestRecord]) -> tuple[float, float]:
    """(records/s until durable, microseconds per log() call)."""
    await log.start()
    start = time.perf_counter()
    for r in records:
        log.log(r)
    enqueue_s = time.perf_counter() - start
    await log.close()
    total_s = time.perf_counter() - start
    assert log.written == len(records) and log.dropped == 0, (log.written, log.dropped)
    return len(records) / total_s, enqueue_s / len(records) * 1e6


def naive_sqlite(path: Path, records: list[RequestRecord]) -> float:
    seed = SQLiteOutcomeLog(path)
    asyncio.run(seed.start())
    asyncio.run(seed.close())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = f"INSERT INTO requests VALUES ({', '.join('?' * 25)})"
    start = time.perf_counter()
    for r in records:
        conn.execute("BEGIN")
        conn.execute(sql, request_row(r))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(records) / elapsed


def naive_postgres(url: str, schema: str, records: list[RequestRecord]) -> float:
    import psycopg

    log = PostgresOutcomeLog(url, schema=schema)
    with psycopg.connect(url, autocommit=True) as conn:  # autocommit: one commit per INSERT
        start = time.perf_counter()
        for r in records:
            conn.execute(log._insert_request, request_row(r))
        return len(records) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="records for the batched log")
    parser.add_argument("--n-naive", type=int, default=2_000, help="records for the baseline")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "ROUTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    records = [record(i) for i in range(args.n)]
    naive_records = [record(i) for i in range(args.n_naive)]
    print(f"outcome log write throughput ({args.n} records batched, {args.n_naive} naive; "
          f"target >= {TARGET:,} records/s)")
    print(f"{'backend':<11} {'batched rec/s':>14} {'log() us':>9} {'naive rec/s':>12} "
          f"{'speed-up':>9}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        rate, per_call = asyncio.run(batched(SQLiteOutcomeLog(Path(tmp) / "b.db"), records))
        base = naive_sqlite(Path(tmp) / "n.db", naive_records)
        results.append(("sqlite", rate, per_call, base))
    if not args.no_postgres:
        import psycopg

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        try:
            rate, per_call = asyncio.run(batched(
                PostgresOutcomeLog(args.postgres_url, schema=schema), records))
            base = naive_postgres(args.postgres_url, schema, naive_records)
            results.append(("postgresql", rate, per_call, base))
        finally:
            with psycopg.connect(args.postgres_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    ok = True
    for name, rate, per_call, base in results:
        ok &= rate >= TARGET
        print(f"{name:<11} {rate:>14,.0f} {per_call:>9.1f} {base:>12,.0f} {rate / base:>8.1f}x"
              f"  {'ok' if rate >= TARGET else 'BELOW TARGET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
