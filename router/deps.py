"""What endpoints depend on: the app's context and the calling client's key.

Everything long-lived (settings, catalog, service, upstream client, cache,
outcome log, metrics) lives on one `AppContext` at `app.state.ctx`, built by
`create_app` and its lifespan. Endpoints reach it through the `Ctx` alias and the
client key through `ClientKey`, so a signature reads like types and tests can
swap either with `app.dependency_overrides`; the routing endpoints, which skip
FastAPI's injection, read the key through `caller_key`, which honours an
override of `client_key` the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import random
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from router.catalog import Catalog
from router.metrics import Metrics
from router.service import RoutingService
from router.settings import Settings, check_key, key_id

__all__ = [
    "ApiError",
    "AppContext",
    "Ctx",
    "ClientKey",
    "get_ctx",
    "client_key",
    "caller_key",
    "authenticate",
    "new_request_id",
]


class ApiError(Exception):
    """An HTTP error with OpenAI's error body; raised by endpoints and dependencies."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


@dataclass
class AppContext:
    """The app's long-lived parts. `service` is swapped whole by hot reload."""

    settings: Settings
    catalog: Catalog
    metrics: Metrics
    key_digests: tuple[bytes, ...]
    service: RoutingService | None = None
    upstream: Any = None
    store: Any = None
    cache: Any = None
    semantic: Any = None
    cooldown_sync: Any = None
    #: Per-model slowdown seen in this replica's upstream calls (`router.live_latency`).
    live_latency: Any = None
    latency_sync: Any = None
    rng: random.Random = field(default_factory=random.Random)
    cache_namespace: str = ""
    log_started: bool = False
    #: /v1/route's metric children, by chosen model ("" holds the duration histogram).
    route_counters: dict[str, Any] = field(default_factory=dict, repr=False)
    #: The tasks sending a chat stream now (`router.api._streams` adds and removes them).
    streams: set[asyncio.Task[Any]] = field(default_factory=set, repr=False)
    #: True once `cut_streams` ran: a stream ending now was cut by the server.
    shutting_down: bool = False

    def cut_streams(self) -> int:
        """End every running stream: the server is stopping and its grace period is
        nearly over. Each stream then sends an SSE error event, ends cleanly and is
        logged as 503 (`router.api._streams`), instead of being cut without a word by
        the server's own cancellation moments later. Returns how many were cut."""
        self.shutting_down = True
        tasks = list(self.streams)
        for task in tasks:
            task.cancel()
        return len(tasks)

    def cost_usd(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """What `model` charged for these tokens at catalog prices (0 for a model the
        catalog does not know)."""
        spec = self.catalog.models.get(model)
        return spec.cost_usd(prompt_tokens, completion_tokens) if spec is not None else 0.0

    def require_service(self) -> RoutingService:
        service = self.service
        if service is None:
            raise ApiError(503, "no quality model is loaded yet, so the router cannot route; "
                           "pass-through to a catalog model still works",
                           type="service_unavailable", code="model_not_loaded")
        return service


# Dependencies are `async def` although they never await: FastAPI runs a plain
# `def` dependency in its thread pool, and two thread hops per request (plus the
# GIL hand-offs they cause) cost more than the whole routing decision.
async def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def new_request_id() -> str:
    """`req_` + 32 random hex digits (as many as a uuid4; a third of its cost)."""
    return "req_" + os.urandom(16).hex()


async def client_key(request: Request) -> str | None:
    """The caller's key id (for the log), or None when auth is off.

    Accepts `Authorization: Bearer <key>` or `x-api-key: <key>`; 401 in OpenAI's
    shape when a key is required and missing or wrong. The key itself is never
    logged or echoed.
    """
    ctx: AppContext = request.app.state.ctx
    if not ctx.key_digests:
        return None
    headers = request.headers
    return authenticate(ctx, headers.get("x-api-key"), headers.get("authorization"))


async def caller_key(request: Request) -> str | None:
    """`client_key`, or what the app's `dependency_overrides` put in its place.

    For endpoints that resolve their one dependency themselves (the routing
    endpoints, `router.api._lean`): an override is honoured there exactly as in a
    FastAPI-injected endpoint, so a test that swaps the key check runs the
    production path. The override is called with the `Request` when it takes a
    parameter, else with none, and awaited when it returns an awaitable.
    """
    override = request.app.dependency_overrides.get(client_key)
    if override is None:
        return await client_key(request)
    result = override(request) if inspect.signature(override).parameters else override()
    return await result if inspect.isawaitable(result) else result


def authenticate(ctx: AppContext, api_key: str | None, authorization: str | None) -> str | None:
    """`client_key` on the two header values (None when absent); raises the same 401s."""
    if not ctx.key_digests:
        return None
    presented = api_key
    if presented is None:
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            presented = value.strip()
    if not presented:
        raise ApiError(401, "missing API key: send `Authorization: Bearer <key>` or "
                       "`x-api-key: <key>`", code="missing_api_key",
                       headers={"www-authenticate": "Bearer"})
    digest = check_key(presented, ctx.key_digests)
    if digest is None:
        raise ApiError(401, "invalid API key", code="invalid_api_key",
                       headers={"www-authenticate": "Bearer"})
    return key_id(digest)


Ctx = Annotated[AppContext, Depends(get_ctx)]
ClientKey = Annotated[str | None, Depends(client_key)]
