"""The router while a dependency is down: the outcome log's database, Redis.

What a user would notice: readiness follows the model, not the log (a shared
database down must not take every replica out of service, and requests still
succeed); feedback survives a PostgreSQL restart and is a clear 503 while it is
down, naming no connection details; nothing accepted is lost silently; and an
optional Redis that is down at start-up is a warning, not a replica that will
not start. PostgreSQL outages use a private server (`private_postgres`), never
the shared one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from router.outcome_log import SQLiteOutcomeLog, open_outcome_log
from tests.router import app_fixtures, private_postgres
from tests.router.app_fixtures import wait_for, wait_until_ready
from tests.router.tcp_proxy import TcpProxy

# Fixtures (pytest finds them as module attributes).
router_factory = app_fixtures.router_factory
tiny_artifact = app_fixtures.tiny_artifact
private_postgres = private_postgres.private_postgres  # noqa: F811 - the fixture, by design


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def count_rows(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


@contextmanager
def redis_back_on(port: int) -> Iterator[None]:
    """Redis reachable on `port` (a proxy to the real one) for the block."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy = TcpProxy()
    asyncio.run_coroutine_threadsafe(proxy.start(port), loop).result(5)
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(proxy.cut(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_readiness_follows_the_model_and_reports_a_full_log_queue_as_degraded(
        router_factory: Any, tmp_path: Path) -> None:
    # A log whose writer is far behind: 3 rows fill its queue.
    store = SQLiteOutcomeLog(tmp_path / "slow.db", max_queue=3, batch_size=1000,
                             flush_interval_s=60)
    server = router_factory(store=store)
    c = server.client
    try:
        assert c.get("/readyz").json()["degraded"] == {}
        for i in range(5):  # requests succeed: the last two rows are dropped and counted
            assert c.post("/v1/route", json={"messages": f"hi {i}"}).status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "ready"
        assert r.json()["checks"] == {"model_loaded": True, "can_route": True}
        assert "queue full (3 rows)" in r.json()["degraded"]["outcome_log"]
        metrics = c.get("/metrics").text
        assert 'router_dependency_up{dependency="outcome_log"} 0.0' in metrics
        assert "router_log_dropped_total 2.0" in metrics
    finally:
        asyncio.run(store.close())


def test_a_nul_character_in_feedback_is_a_400_naming_the_field_on_sqlite(
        router_factory: Any) -> None:
    server = router_factory()
    check_nul_feedback(server)
    rows = open_outcome_log(server.ctx.settings.log_url).export_dataframe()
    assert rows["feedback_count"].tolist() == [1]


def check_nul_feedback(server: Any) -> None:
    c = server.client
    request_id = c.post("/v1/route", json={"messages": "hi"}).json()["request_id"]
    r = c.post("/v1/feedback", json={"request_id": request_id, "quality": 0.5,
                                     "comment": "good\u0000answer"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "comment", r.text
    assert "NUL character" in r.json()["error"]["message"]
    r = c.post("/v1/feedback", json={"request_id": request_id + "\u0000", "thumbs": "up"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "request_id", r.text
    # A lone surrogate (a JSON escape no database can store) is refused the same way.
    raw = f'{{"request_id": "{request_id}", "thumbs": "up", "comment": "x\\ud800y"}}'
    r = c.post("/v1/feedback", content=raw.encode(),
               headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "comment", r.text
    assert "lone surrogate" in r.json()["error"]["message"]
    assert c.post("/v1/feedback", json={"request_id": request_id, "quality": 0.5,
                                        "comment": "good answer"}).status_code == 202
    server.flush_log()
    assert server.ctx.store.dropped == 0


@pytest.mark.redis
def test_a_replica_starts_while_the_redis_cache_is_down_and_uses_it_once_back(
        router_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens here yet
    server = router_factory(cache_url=f"redis://127.0.0.1:{port}/0")
    c = server.client
    assert f"the Redis cache at redis://127.0.0.1:{port}/0 does not answer" in caplog.text
    r = c.get("/readyz")
    assert r.status_code == 200 and "requests skip the cache" in r.json()["degraded"]["cache"]
    assert 'router_dependency_up{dependency="cache"} 0.0' in c.get("/metrics").text
    body = {"model": "router", "temperature": 0,
            "messages": [{"role": "user", "content": f"cache me {uuid.uuid4().hex}"}]}
    assert c.post("/v1/chat/completions", json=body).status_code == 200  # served without it
    with redis_back_on(port):
        assert c.post("/v1/chat/completions", json=body).status_code == 200  # stored now
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and r.headers.get("x-router-cache") is not None
        assert c.get("/readyz").json()["degraded"] == {}
        assert 'router_dependency_up{dependency="cache"} 1.0' in c.get("/metrics").text


@pytest.mark.postgres
@pytest.mark.slow
def test_a_nul_character_in_feedback_is_a_400_naming_the_field_on_postgres(
        router_factory: Any, private_postgres: Any) -> None:
    before = count_rows(private_postgres.url, "feedback") if _has_tables(
        private_postgres.url) else 0
    server = router_factory(log_url=private_postgres.url)
    check_nul_feedback(server)
    assert count_rows(private_postgres.url, "feedback") == before + 1


def _has_tables(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass('feedback')").fetchone() != (None,)


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_restart_and_outage_feedback_readiness_and_nothing_lost(
        router_factory: Any, private_postgres: Any, caplog: pytest.LogCaptureFixture) -> None:
    pg = private_postgres
    if _has_tables(pg.url):  # a fresh log: counts below are this test's
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("DROP TABLE requests, feedback, schema_version")
    server = router_factory(log_url=pg.url)
    c = server.client
    ids = [c.post("/v1/route", json={"messages": f"hi {i}"}).json()["request_id"]
           for i in range(6)]
    server.flush_log()

    def feedback(request_id: str) -> int:
        with httpx.Client(base_url=server.url, timeout=30) as own:
            return own.post("/v1/feedback", json={"request_id": request_id,
                                                  "thumbs": "up"}).status_code

    with ThreadPoolExecutor(6) as pool:  # concurrent reads: several pooled connections
        assert list(pool.map(feedback, ids)) == [202] * 6
    pg.restart()  # every pooled reader connection is now dead (AdminShutdown)
    assert [feedback(i) for i in ids] == [202] * 6  # was one 500 per pooled connection

    pg.stop()
    try:
        r = c.post("/v1/feedback", json={"request_id": ids[0], "quality": 0.5})
        assert r.status_code == 503 and r.headers["retry-after"], r.text
        message = r.json()["error"]["message"]
        assert "unavailable" in message
        for detail in ("127.0.0.1", str(pg.port), "postgres"):  # host, port, user, database
            assert detail not in message
        assert f"127.0.0.1:{pg.port}" in caplog.text  # said in the server log instead
        # Requests still succeed and the replica stays ready; the log is reported degraded.
        assert c.post("/v1/route", json={"messages": "while down"}).status_code == 200
        assert wait_for(lambda: "outcome_log" in c.get("/readyz").json()["degraded"])
        r = c.get("/readyz")
        assert r.status_code == 200 and "writes failing" in r.json()["degraded"]["outcome_log"]
        assert 'router_dependency_up{dependency="outcome_log"} 0.0' in c.get("/metrics").text
    finally:
        pg.start()
    assert wait_for(lambda: c.get("/readyz").json()["degraded"] == {}, timeout=20)
    server.flush_log()
    assert count_rows(pg.url, "requests") == 7 and count_rows(pg.url, "feedback") == 12
    assert server.ctx.store.dropped == 0


@pytest.mark.postgres
@pytest.mark.slow
def test_sigterm_while_postgres_is_down_stops_in_seconds_and_says_what_is_lost(
        tiny_artifact: Path, private_postgres: Any) -> None:
    pg = private_postgres
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.cli", "serve", "--model", str(tiny_artifact),
         "--port", str(port), "--fake-upstream", "--log-url", pg.url,
         # Redis down at start-up too: the optional cache must not stop the replica.
         "--cache-url", f"redis://127.0.0.1:{free_port()}/0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc)
        pg.stop()
        for i in range(3):
            r = httpx.post(f"{url}/v1/route", json={"messages": f"lost {i}"}, timeout=10)
            assert r.status_code == 200
        assert wait_for(lambda: "outcome_log" in httpx.get(f"{url}/readyz").json()["degraded"])
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output: Any = proc.communicate(timeout=30)[0]
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        pg.start()
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert took < 15, f"shutdown took {took:.1f} s with the database down\n{output}"
    assert "closed with 3 rows unwritten and lost (3 requests, 0 feedback, logged between" \
        in output, output
    assert "database unreachable for" in output
