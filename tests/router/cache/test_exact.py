"""The cache answers only deterministic repeats, expires, survives Redis outages, and never
answers a different question from a near-duplicate."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from typing import Any

import pytest

from router.cache import (
    CachedResponse,
    CacheHit,
    MemoryCache,
    RedisCache,
    SemanticCache,
    cache_key,
    open_cache,
    should_use_cache,
)
from router.errors import ConfigError
from tests.router.conftest import REDIS_URL
from tests.router.tcp_proxy import TcpProxy


def chat(content: str = "What is the capital of France?", **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "router", "temperature": 0,
                            "messages": [{"role": "user", "content": content}]}
    body.update(params)
    return body


ANSWER = CachedResponse(body=b'{"id":"chatcmpl-1","choices":[{"message":{"content":"Paris"}}]}',
                        served_model="small-model", created=1.5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- keys -----------------------------------------------------------------------------------


def test_key_ignores_json_formatting_key_order_and_transport_fields() -> None:
    compact = json.loads('{"model":"router","temperature":0,"messages":'
                         '[{"role":"user","content":"hi"}],"max_tokens":50}')
    spaced = json.loads('{ "max_tokens" : 50,\n  "messages": [ {"content": "hi", "role": "user"} ],'
                        '\n  "temperature": 0.0, "model": "router", "stream": true,'
                        ' "user": "alice", "n": 1, "top_p": 1.0 }')
    assert cache_key(compact) == cache_key(spaced)
    assert re.fullmatch(r"[0-9a-f]{64}", cache_key(compact) or "")


@pytest.mark.parametrize("change", [
    {"messages": [{"role": "user", "content": "hi!"}]},
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
    {"model": "router:0.9"},
    {"max_tokens": 51},
    {"seed": 7},
    {"response_format": {"type": "json_object"}},
    {"tools": [{"type": "function", "function": {"name": "f"}}]},
])
def test_anything_that_changes_the_answer_changes_the_key(change: dict[str, Any]) -> None:
    base = {"model": "router", "temperature": 0, "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}]}
    assert cache_key({**base, **change}) != cache_key(base)


def test_namespace_separates_key_spaces() -> None:
    assert cache_key(chat(), namespace="catalog-a") != cache_key(chat(), namespace="catalog-b")


@pytest.mark.parametrize("params", [{"temperature": 0.7}, {"temperature": None}, {"n": 2},
                                    {"temperature": "0"}, {"temperature": True}])
def test_sampled_requests_are_not_cached(params: dict[str, Any]) -> None:
    body = chat(**params)
    assert cache_key(body) is None
    assert should_use_cache(body, {}) is False


def test_absent_temperature_is_not_cached() -> None:
    body = chat()
    del body["temperature"]  # providers then sample at temperature 1
    assert cache_key(body) is None


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, True),
    (None, True),
    ({"Cache-Control": "no-cache"}, False),
    ({"cache-control": "max-age=0, No-Store"}, False),
    ({"Pragma": "no-cache"}, False),
    ({"Cache-Control": "max-age=60"}, True),
])
def test_no_cache_headers_bypass_the_cache(headers: dict[str, str] | None,
                                           expected: bool) -> None:
    assert should_use_cache(chat(), headers) is expected


# -- memory backend ---------------------------------------------------------------------------


async def test_memory_hit_replays_the_exact_bytes_and_counts() -> None:
    cache = MemoryCache(max_entries=10, ttl_s=60)
    key = cache_key(chat()) or ""

    assert await cache.get(key) is None
    await cache.set(key, ANSWER)
    assert await cache.get(key) == ANSWER
    assert (cache.hits, cache.misses) == (1, 1)


async def test_memory_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    cache = MemoryCache(max_entries=10, ttl_s=10, clock=clock)
    await cache.set("k", ANSWER)

    clock.now = 9.9
    assert await cache.get("k") == ANSWER
    clock.now = 10.0
    assert await cache.get("k") is None
    assert len(cache) == 0


async def test_memory_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(max_entries=2, ttl_s=60)
    await cache.set("a", ANSWER)
    await cache.set("b", ANSWER)
    await cache.get("a")
    await cache.set("c", ANSWER)

    assert await cache.get("b") is None
    assert await cache.get("a") == ANSWER and await cache.get("c") == ANSWER


def test_bad_memory_options_are_named() -> None:
    with pytest.raises(ConfigError, match="max_entries=0"):
        MemoryCache(max_entries=0)
    with pytest.raises(ConfigError, match="ttl_s=0"):
        MemoryCache(ttl_s=0)


def test_open_cache_picks_the_backend() -> None:
    assert isinstance(open_cache(None), MemoryCache)
    assert isinstance(open_cache(""), MemoryCache)
    redis_cache = open_cache("redis://cache.internal:6379/1", ttl_s=5, prefix="p:")
    assert isinstance(redis_cache, RedisCache) and redis_cache.prefix == "p:"
    with pytest.raises(ConfigError) as err:
        open_cache("memcached://admin:hunter2@cache:11211")
    assert "memcached://admin:***@cache:11211" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_cached_response_serialises_losslessly() -> None:
    raw = CachedResponse(body=b'{"a":"\\n line\\n"}\n\x00tail', served_model="m\u00e9", created=3.0)
    assert CachedResponse.from_bytes(raw.to_bytes()) == raw


# -- Redis backend ----------------------------------------------------------------------------




@pytest.mark.redis
async def test_redis_hit_miss_and_sharing_between_replicas(redis_cache: RedisCache) -> None:
    key = cache_key(chat()) or ""
    assert await redis_cache.get(key) is None
    await redis_cache.set(key, ANSWER)

    replica = RedisCache(REDIS_URL, ttl_s=60, prefix=redis_cache.prefix)
    await replica.start()
    try:
        assert await replica.get(key) == ANSWER
    finally:
        await replica.close()
    assert (redis_cache.hits, redis_cache.misses, redis_cache.errors) == (0, 1, 0)


@pytest.mark.redis
async def test_redis_entries_expire_after_the_ttl(redis_cache: RedisCache) -> None:
    short = RedisCache(REDIS_URL, ttl_s=0.2, prefix=redis_cache.prefix)
    await short.start()
    try:
        await short.set("k", ANSWER)
        assert await short.get("k") == ANSWER
        await asyncio.sleep(0.35)
        assert await short.get("k") is None
    finally:
        await short.close()


@pytest.mark.redis
async def test_unreachable_redis_starts_without_the_cache_and_uses_it_once_back(
        caplog: pytest.LogCaptureFixture) -> None:
    # The cache is optional: Redis down at start-up must not keep a replica down.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    cache = open_cache(f"redis://:hunter2@127.0.0.1:{port}/0", ttl_s=60,
                       prefix=f"test:{uuid.uuid4().hex[:8]}:")
    assert isinstance(cache, RedisCache)
    await cache.start()
    proxy = TcpProxy()
    try:
        assert f"redis://:***@127.0.0.1:{port}/0 does not answer" in caplog.text
        assert "hunter2" not in caplog.text and "ROUTER_CACHE_URL" in caplog.text
        ok, problem = cache.health()
        assert not ok and problem is not None and "requests skip the cache" in problem
        assert await cache.get("k") is None  # a miss, not an error
        await proxy.start(port)  # Redis is back
        await cache.set("k", ANSWER)
        assert await cache.get("k") == ANSWER and cache.health() == (True, None)
    finally:
        await cache.close()
        if proxy.server is not None:
            await proxy.cut()


async def test_malformed_redis_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="redis://localhost:notaport"):
        await RedisCache("redis://localhost:notaport").start()


@pytest.mark.redis
async def test_redis_down_at_request_time_is_a_miss_not_an_error(
        redis_cache: RedisCache) -> None:
    proxy = TcpProxy()
    port = await proxy.start()
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", ttl_s=60, prefix=redis_cache.prefix)
    await cache.start()
    semantic = SemanticCache(cache)
    try:
        await semantic.store(chat(), ANSWER)
        assert await semantic.lookup(chat()) == CacheHit(ANSWER, "exact")

        await proxy.cut()  # Redis "goes down" between two requests

        assert await semantic.lookup(chat()) is None
        assert await semantic.lookup(chat("what is the capital of france")) is None
        await semantic.store(chat("another"), ANSWER)  # a failed store is skipped quietly
        assert cache.errors >= 3
    finally:
        await cache.close()


# -- semantic near-duplicates (the adversarial suite is tests/router/cache/test_semantic.py) --


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryCache(max_entries=100, ttl_s=60)
    return request.getfixturevalue("redis_cache")


async def test_semantic_hits_say_how_they_were_found(backend: Any) -> None:
    cache = SemanticCache(backend)
    await cache.store(chat("What is the capital of France?"), ANSWER)

    assert await cache.lookup(chat("What is the capital of France?")) == CacheHit(ANSWER,
                                                                                  "exact")
    assert await cache.lookup(chat("  hi, what is the CAPITAL of france")) == CacheHit(
        ANSWER, "semantic")
    assert await cache.lookup(chat("What is the capital of Spain?")) is None
    assert (cache.exact_hits, cache.semantic_hits, cache.misses) == (1, 1, 1)


async def test_one_typo_in_a_long_word_is_tolerated(backend: Any) -> None:
    cache = SemanticCache(backend)
    await cache.store(chat("Summarise the quarterly report for the sales team"), ANSWER)

    hit = await cache.lookup(chat("Summarise the quartely report for the sales team"))
    assert hit is not None and hit.kind == "semantic"
    # Two typos, or one in a short word, are another question as far as the cache knows.
    assert await cache.lookup(chat("Summarise the quartely reprot for the sales team")) is None
    assert await cache.lookup(chat("Summarise the quarterly report for the sale team")) is None


async def test_semantic_scope_requires_identical_history_model_and_params() -> None:
    cache = SemanticCache(MemoryCache())
    await cache.store(chat("What is the capital of France?"), ANSWER)
    variant = "what is the capital of france"

    with_system = chat(variant)
    with_system["messages"].insert(0, {"role": "system", "content": "Answer in Spanish."})
    assert await cache.lookup(with_system) is None
    assert await cache.lookup(chat(variant, model="router:0.95")) is None
    assert await cache.lookup(chat(variant, max_tokens=5)) is None
    assert await cache.lookup(chat(variant)) == CacheHit(ANSWER, "semantic")


async def test_semantic_cache_never_stores_sampled_requests() -> None:
    backend = MemoryCache()
    cache = SemanticCache(backend)
    await cache.store(chat(temperature=0.7), ANSWER)
    assert len(backend) == 0
    assert await cache.lookup(chat(temperature=0.7)) is None


async def test_semantic_entries_expire_with_the_cache() -> None:
    clock = FakeClock()
    cache = SemanticCache(MemoryCache(ttl_s=10, clock=clock))
    await cache.store(chat(), ANSWER)
    clock.now = 9.0
    assert await cache.lookup(chat("what is the capital of france")) is not None
    clock.now = 10.5
    assert await cache.lookup(chat("what is the capital of france")) is None


async def test_lookup_cost_does_not_grow_with_the_entries_cached() -> None:
    backend = MemoryCache(max_entries=5000, ttl_s=60)
    cache = SemanticCache(backend)
    for i in range(2000):
        await cache.store(chat(f"Summarise ticket {i} for the support queue"), ANSWER)
    reads: list[int] = []
    index_get = backend.index_get

    async def counting(names: Any) -> list[bytes | None]:
        reads.append(len(names))
        return await index_get(names)

    backend.index_get = counting  # type: ignore[method-assign]
    assert await cache.lookup(chat("summarise ticket 1234 for the support queue.")) is not None
    assert await cache.lookup(chat("summarise ticket 99999 for the support queue")) is None
    # One read each: the whole message, and one slot per word a typo may change
    # (summarise, ticket, support, queue).
    assert reads == [5, 5]


@pytest.mark.redis
async def test_semantic_hits_are_shared_through_redis(redis_cache: RedisCache) -> None:
    replica = RedisCache(REDIS_URL, ttl_s=60, prefix=redis_cache.prefix)
    await replica.start()
    try:
        await SemanticCache(redis_cache).store(chat("Explain the refund policy"), ANSWER)
        assert await SemanticCache(replica).lookup(chat("Hello! explain the refund policy")
                                                   ) == CacheHit(ANSWER, "semantic")
    finally:
        await replica.close()
