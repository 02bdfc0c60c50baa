"""Cooldowns: the per-model circuit breaker as the chain sees it."""

from __future__ import annotations

import pytest

from router.upstream import (
    Cooldowns,
    UpstreamClientError,
)
from tests.router.upstream.mock_upstream import (
    BODY,
    Clock,
    Upstream,
    err,
    ok,
    summary,
)

# ---------------------------------------------------------------- cooldowns


async def test_cooldown_opens_after_n_failures_and_recovers_after_the_period(make_client):
    clock = Clock()
    changes: list[tuple[str, str]] = []
    cooldowns = Cooldowns(failure_threshold=2, cooldown_s=30, clock=clock,
                          on_state_change=lambda m, s: changes.append((m, s)))
    upstream = Upstream(small=[err(503), err(503), ok("small")])
    client = make_client(upstream, cooldown=cooldowns, clock=clock, max_retries=0)

    for _ in range(2):
        assert (await client.complete(BODY, ["small", "mid"])).model == "mid"
    assert cooldowns.state("small") == "open"
    assert changes == [("small", "open")]

    upstream.calls.clear()
    result = await client.complete(BODY, ["small", "mid"])
    assert result.model == "mid"
    assert upstream.calls == ["mid"]  # small was not even called
    assert summary(result.attempts)[0] == ("small", None, "cooldown")

    clock.now += 30  # period over: one trial request is let through, and it succeeds
    assert cooldowns.state("small") == "half_open"
    result = await client.complete(BODY, ["small", "mid"])
    assert result.model == "small"
    assert cooldowns.state("small") == "closed"
    assert changes == [("small", "open"), ("small", "half_open"), ("small", "closed")]


async def test_failed_trial_reopens_the_breaker(make_client):
    clock = Clock()
    cooldowns = Cooldowns(failure_threshold=1, cooldown_s=10, clock=clock)
    upstream = Upstream(small=err(503))
    client = make_client(upstream, cooldown=cooldowns, clock=clock, max_retries=0)
    await client.complete(BODY, ["small", "mid"])
    clock.now += 10
    result = await client.complete(BODY, ["small", "mid"])
    assert summary(result.attempts)[0] == ("small", 503, "server_error")
    assert cooldowns.state("small") == "open"
    clock.now += 5
    assert cooldowns.state("small") == "open"


def test_half_open_lets_exactly_one_trial_through():
    clock = Clock()
    cooldowns = Cooldowns(failure_threshold=1, cooldown_s=10, clock=clock)
    cooldowns.record_failure("small")
    clock.now += 10
    assert cooldowns.acquire("small") is True
    assert cooldowns.acquire("small") is False  # the trial is in flight
    cooldowns.release("small")  # the trial was cancelled: let another one try
    assert cooldowns.acquire("small") is True


async def test_when_every_model_cools_the_chain_is_tried_anyway(make_client):
    clock = Clock()
    cooldowns = Cooldowns(failure_threshold=1, cooldown_s=60, clock=clock)
    cooldowns.record_failure("small")
    cooldowns.record_failure("mid")
    upstream = Upstream()
    result = await make_client(upstream, cooldown=cooldowns, clock=clock).complete(
        BODY, ["small", "mid"])
    assert result.model == "small"
    assert cooldowns.state("small") == "closed"


async def test_client_errors_and_context_errors_do_not_count_towards_cooldown(make_client):
    cooldowns = Cooldowns(failure_threshold=1)
    upstream = Upstream(small=err(400, "bad"), mid=err(400, "too long: 5000 tokens",
                                                       code="context_length_exceeded"))
    client = make_client(upstream, cooldown=cooldowns)
    with pytest.raises(UpstreamClientError):
        await client.complete(BODY, ["small"])
    await client.complete(BODY, ["mid", "big"])
    assert cooldowns.open_models() == []


def test_cooldowns_refuse_bad_settings():
    with pytest.raises(Exception, match="failure_threshold must be >= 1"):
        Cooldowns(failure_threshold=0)
