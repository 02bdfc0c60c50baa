"""Fixtures for router tests: a real fake upstream on a loopback socket.

`fake_upstream_server` gives `(base_url, control)`: `base_url` ends in `/v1` like a
catalog `base_url` (pass it as `base_url_override`), and `control` is the server's
`FakeUpstreamState` (`control.configure(model, fail_status=503)`,
`control.configure(None, latency_ms=50)`, `control.requests`, ...), reset before
each test. The server is shared by the session (starting uvicorn costs time) and
knows the repository catalog, so prompts over a model's window get
`context_length_exceeded`. For other start-up options use `fake_upstream_factory`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from router.cache import RedisCache
from router.catalog import DEFAULT_CATALOG_PATH, load_catalog
from router.fake import FakeUpstreamState, create_fake_upstream, serve_in_thread

__all__ = ["run_fake_upstream"]


@contextmanager
def run_fake_upstream(**options: Any) -> Iterator[tuple[str, FakeUpstreamState]]:
    """Serve `create_fake_upstream(**options)` with uvicorn in a thread on a free port."""
    app = create_fake_upstream(**options)
    with serve_in_thread(app, lifespan="off", log_level="critical",
                         name="fake-upstream") as url:
        yield f"{url}/v1", app.state.fake


@pytest.fixture(scope="session")
def _shared_fake_upstream() -> Iterator[tuple[str, FakeUpstreamState]]:
    with run_fake_upstream(catalog=load_catalog(DEFAULT_CATALOG_PATH)) as server:
        yield server


@pytest.fixture
def fake_upstream_server(
    _shared_fake_upstream: tuple[str, FakeUpstreamState],
) -> tuple[str, FakeUpstreamState]:
    """`(base_url, control)` of a running fake upstream, in its start-up state."""
    base_url, control = _shared_fake_upstream
    control.reset()
    return base_url, control


@pytest.fixture
def fake_upstream_factory() -> Iterator[Callable[..., tuple[str, FakeUpstreamState]]]:
    """Start fake upstreams with custom options (`create_fake_upstream` keywords);
    each is stopped at the end of the test."""
    running: list[Any] = []

    def start(**options: Any) -> tuple[str, FakeUpstreamState]:
        manager = run_fake_upstream(**options)
        server = manager.__enter__()
        running.append(manager)
        return server

    yield start
    for manager in reversed(running):
        manager.__exit__(None, None, None)


REDIS_URL = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis_cache() -> AsyncIterator[RedisCache]:
    """A `RedisCache` on the test Redis under a key prefix of its own, emptied after."""
    prefix = f"test:router-cache:{uuid.uuid4().hex}:"
    cache = RedisCache(REDIS_URL, ttl_s=60, prefix=prefix)
    await cache.start()
    yield cache
    keys = [k async for k in cache._client.scan_iter(match=prefix + "*")]
    if keys:
        await cache._client.delete(*keys)
    await cache.close()
