"""Fixtures of the upstream client's tests: `make_client` (an `UpstreamClient` over a
scripted `Upstream`, with `sleeps` recording its backoff) and `private_ca`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trustme

from router.upstream import UpstreamClient
from tests.router.upstream.mock_upstream import CATALOG, Upstream


@pytest.fixture
def private_ca() -> trustme.CA:
    """A throw-away certificate authority (trustme, in the test extra)."""
    return trustme.CA()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(sleeps: list[float]) -> Callable[..., UpstreamClient]:
    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def make(upstream: Upstream, **kwargs: Any) -> UpstreamClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
        kwargs.setdefault("sleep", fake_sleep)
        return UpstreamClient(kwargs.pop("catalog", CATALOG), http=http, **kwargs)

    return make
