"""Replicas share live latency through the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import os
import uuid

import pytest
import redis

from router.live_latency import LiveLatency, SharedLiveLatency

REDIS_URL = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MODELS = ["gpt-4o", "glm-4-plus"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.redis
async def test_a_slowdown_seen_by_one_replica_is_adopted_by_the_other() -> None:
    prefix = f"test:latency:{uuid.uuid4().hex[:8]}:"
    clock = Clock()
    one, two = LiveLatency(window_s=10.0, clock=clock), LiveLatency(window_s=10.0, clock=clock)
    shared = [SharedLiveLatency(live, REDIS_URL, MODELS, prefix=prefix, interval_s=3600,
                                ttl_s=5.0) for live in (one, two)]
    for s in shared:
        await s.start()
    try:
        for value in [1000.0] * 60 + [3000.0] * 20:  # only replica one sees gpt-4o slow
            clock.now += 0.1
            one.observe("gpt-4o", value)
        assert one.factor("gpt-4o") > 2.5 and two.factor("gpt-4o") == 1.0
        await shared[0].sync_once()  # publishes
        await shared[1].sync_once()  # reads and adopts
        assert two.factor("gpt-4o") == pytest.approx(one.factor("gpt-4o"))
        assert two.factor("glm-4-plus") == 1.0 and shared[1].adopted == 1
        # Its own factor is not echoed back as "another replica's".
        await shared[0].sync_once()
        assert shared[0].adopted == 0
        # Replica one recovers: the next round publishes 1, and two stops adopting it.
        for _ in range(200):
            clock.now += 0.1
            one.observe("gpt-4o", 1000.0)
        assert one.factor("gpt-4o") == 1.0
        await shared[0].sync_once()
        await shared[1].sync_once()
        clock.now += 5.1  # what two adopted earlier expires
        assert two.factor("gpt-4o") == 1.0
        ttl = redis.Redis.from_url(REDIS_URL).pttl(prefix + "gpt-4o")
        assert 0 < ttl <= 10_000  # a replica that stops leaves nothing for long
    finally:
        for s in shared:
            await s.close()
        redis.Redis.from_url(REDIS_URL).delete(*(prefix + m for m in MODELS))


@pytest.mark.redis
async def test_unreachable_redis_is_a_warning_and_costs_no_observation(
        caplog: pytest.LogCaptureFixture) -> None:
    live = LiveLatency()
    shared = SharedLiveLatency(live, "redis://127.0.0.1:1/0", MODELS, interval_s=3600)
    await shared.start()
    try:
        assert "does not answer" in caplog.text
        ok, reason = shared.health()
        assert not ok and "Redis unreachable" in reason
        live.observe("gpt-4o", 100.0)  # the tracker works on without it
        assert live.snapshot()["gpt-4o"]["samples"] == 1 and shared.errors == 1
    finally:
        await shared.close()
