"""Replicas share open circuit breakers through the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

import pytest
import redis

from router.errors import ConfigError
from router.upstream import Cooldowns, SharedCooldowns
from tests.router import app_fixtures
from tests.router.tcp_proxy import TcpProxy

router_factory = app_fixtures.router_factory

REDIS_URL = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_adopting_an_opening_skips_the_model_until_it_ends() -> None:
    clock = Clock()
    breakers = Cooldowns(3, 30.0, clock=clock)
    states: list[str] = []
    breakers.on_state_change = lambda model, state: states.append(state)
    assert breakers.adopt("m", 10.0)
    assert not breakers.is_available("m") and states == ["open"]
    clock.now += 0.2
    assert not breakers.adopt("m", 9.8)  # the same opening, read again: no change
    assert not breakers.adopt("m", 2.0)  # a shorter one does not shorten ours
    assert states == ["open"]
    clock.now += 10.0
    assert breakers.state("m") == "half_open" and breakers.acquire("m")
    breakers.record_success("m")
    assert breakers.state("m") == "closed"
    assert not breakers.adopt("m", 0.0) and not breakers.adopt("m", -5.0)


@pytest.mark.redis
async def test_an_opening_on_one_replica_is_adopted_by_the_other() -> None:
    prefix = f"test:breaker:{uuid.uuid4().hex[:8]}:"
    one, two = Cooldowns(2, 30.0), Cooldowns(2, 30.0)
    shared = [SharedCooldowns(c, REDIS_URL, ["gpt-4o", "glm-4-plus"], prefix=prefix,
                              interval_s=3600) for c in (one, two)]
    for s in shared:
        await s.start()
    try:
        one.record_failure("gpt-4o")
        one.record_failure("gpt-4o")  # the threshold: open here, published
        for task in list(shared[0]._pending):
            await task
        assert shared[0].published == 1
        ttl = redis.Redis.from_url(REDIS_URL).pttl(prefix + "gpt-4o")
        assert 28_000 < ttl <= 30_000  # the key lives as long as the opening
        assert two.is_available("gpt-4o")
        await shared[1].poll_once()
        assert not two.is_available("gpt-4o") and two.is_available("glm-4-plus")
        assert shared[1].adopted == 1
        await shared[0].poll_once()  # its own opening, read back: nothing new
        assert shared[0].adopted == 0
    finally:
        for s in shared:
            await s.close()
        redis.Redis.from_url(REDIS_URL).delete(prefix + "gpt-4o")


@pytest.mark.redis
async def test_redis_failing_later_costs_no_request_only_the_sharing() -> None:
    breakers = Cooldowns(1, 30.0)
    shared = SharedCooldowns(breakers, REDIS_URL, ["gpt-4o"],
                             prefix=f"test:breaker:{uuid.uuid4().hex[:8]}:", interval_s=3600)
    await shared.start()
    try:
        await shared._client.aclose()
        shared._client = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0",
                                                      socket_connect_timeout=0.2)
        breakers.record_failure("gpt-4o")  # publishing fails in the background
        for task in list(shared._pending):
            await task
        await shared.poll_once()
        assert shared.errors == 2 and not breakers.is_available("gpt-4o")
    finally:
        await shared.close()


@pytest.mark.redis
async def test_unreachable_redis_at_start_is_a_warning_and_sharing_resumes_once_back(
        caplog: pytest.LogCaptureFixture) -> None:
    # Sharing is optional: Redis down at start-up must not keep a replica down.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    breakers = Cooldowns(1, 30.0)
    shared = SharedCooldowns(breakers, f"redis://:hunter2@127.0.0.1:{port}/0", ["gpt-4o"],
                             prefix=f"test:breaker:{uuid.uuid4().hex[:8]}:", interval_s=3600)
    await shared.start()
    proxy = TcpProxy()
    try:
        assert f"redis://:***@127.0.0.1:{port}/0 does not answer" in caplog.text
        assert "hunter2" not in caplog.text and "ROUTER_COOLDOWN_SYNC_URL" in caplog.text
        assert not shared.health()[0]
        breakers.record_failure("gpt-4o")  # the local breaker works without Redis
        assert not breakers.is_available("gpt-4o")
        await proxy.start(port)  # Redis is back: the next poll shares again
        await shared.poll_once()
        assert shared.health() == (True, None)
    finally:
        await shared.close()
        if proxy.server is not None:
            await proxy.cut()
    with pytest.raises(ConfigError, match="not a valid Redis URL"):
        await SharedCooldowns(Cooldowns(), "redis://localhost:notaport", []).start()


@pytest.mark.redis
def test_replica_skips_a_model_another_replica_found_failing(
        router_factory: Any, fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    store = redis.Redis.from_url(REDIS_URL)
    store.delete("router:breaker:gpt-4o")
    control.configure("gpt-4o", fail_status=503)
    options = {"cooldown_sync_url": REDIS_URL, "max_retries": 0, "cooldown_failures": 2,
               "cooldown_s": 30.0}
    one, two = router_factory(**options), router_factory(**options)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    try:
        for _ in range(2):  # replica one finds gpt-4o failing and opens its breaker
            assert one.client.post("/v1/chat/completions", json=body).headers[
                "x-router-model"] == "claude-3-sonnet"
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and \
                'router_cooldowns_total{model="gpt-4o"} 1.0' not in two.client.get(
                    "/metrics").text:
            time.sleep(0.1)
        control.requests.clear()
        # Replica two never saw gpt-4o fail, yet does not try it.
        assert two.client.post("/v1/chat/completions", json=body).headers[
            "x-router-model"] == "claude-3-sonnet"
        assert [q["model"] for q in control.requests] == ["claude-3-sonnet"]
    finally:
        store.delete("router:breaker:gpt-4o")
