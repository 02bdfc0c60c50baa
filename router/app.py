"""The FastAPI app factory: `create_app(settings, *, store=, cache=, upstream=, model=)`.

Nothing is built at import. `create_app` loads the catalog and prepares the
context; the lifespan builds whatever was not injected (the one shared
`httpx.AsyncClient` with pool limits and timeouts and the `UpstreamClient` over
it, the outcome log, the cache, the quality model) and on shutdown closes them,
flushing the outcome log so a graceful stop loses nothing. Tests inject their
own parts; anything injected is also left for the caller to close.

The endpoints, their error handlers and the body limit come from
`router.api.install_api`: one front door, every request through the same
middleware. Hot reload (`router.reload`) runs as a task of the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from router.api import install_api
from router.catalog import load_catalog
from router.deps import AppContext
from router.live_latency import LiveLatency, SharedLiveLatency
from router.metrics import Metrics
from router.reload import Reloader, model_source
from router.service import RoutingService
from router.settings import Settings

__all__ = ["create_app", "freeze_heap"]

log = logging.getLogger(__name__)



def _attach_hooks(ctx: AppContext, upstream: Any) -> None:
    """Metrics hooks on the upstream client, unless the injector set its own."""
    metrics = ctx.metrics

    live = ctx.live_latency

    def on_attempt(attempt: Any) -> None:
        metrics.upstream_attempts.labels(attempt.model, attempt.error or "ok").inc()
        if attempt.error is None:
            metrics.upstream_latency.labels(attempt.model).observe(attempt.latency_s)
        # A timeout is a slow answer too: it feeds the live latency, not the histogram.
        if live is not None and attempt.error in (None, "timeout"):
            live.observe(attempt.model, attempt.latency_s * 1000.0)

    def on_state(model: str, state: str) -> None:
        if state == "open":
            metrics.cooldowns.labels(model).inc()

    if getattr(upstream, "on_attempt", None) is None:
        upstream.on_attempt = on_attempt
    cooldowns = getattr(upstream, "cooldowns", None)
    if cooldowns is not None and getattr(cooldowns, "on_state_change", None) is None:
        cooldowns.on_state_change = on_state


def freeze_heap() -> None:
    """Collect once, then move every live object out of the cyclic collector's reach.

    Why: a serving process holds a large, long-lived heap (the quality model,
    pandas, scikit-learn, LightGBM's Python side). Objects that requests keep for
    a while (a stream lives about a second) get promoted to the oldest
    generation, which triggers full collections, and each one walked that whole
    heap while the event loop stood still: under 100 concurrent streams the
    router's p50 overhead was +22 ms with the collector as is and +1.7 ms with it
    off (bench/serve.py). Frozen objects are still freed by reference counting
    when nothing refers to them; only reference cycles among them are kept.
    """
    gc.collect()
    gc.freeze()


def create_app(settings: Settings, *, store: Any = None, cache: Any = None,
               upstream: Any = None, model: Any = None, reload: bool | None = None) -> FastAPI:
    """The router app. Injected parts are used as they are and not closed by the app.

    `model` is a loaded `QualityModel` (or a `RoutingService`). `reload` (default:
    only when no model is injected) polls the settings' model source for new
    versions; `router serve` pre-loads the model (so a corrupt one is a one-line
    error before the socket opens) and passes `reload=True`.
    Raises `ConfigError` for a bad catalog.
    """
    ctx = _context(settings)
    if model is not None:
        _use_model(ctx, model)
    app = FastAPI(title="cost-aware LLM router", version="1",
                  lifespan=_lifespan(ctx, reload=model is None if reload is None else reload),
                  docs_url="/docs", redoc_url=None)
    ctx.store = store
    ctx.cache = cache
    ctx.upstream = upstream
    app.state.ctx = ctx
    install_api(app, max_body_bytes=settings.max_body_bytes)
    return app


def _context(settings: Settings) -> AppContext:
    """The app's context: catalog, metrics, the exploration draws, the cache namespace."""
    catalog = load_catalog(settings.catalog)
    return AppContext(settings=settings, catalog=catalog, metrics=Metrics(),
                      key_digests=settings.api_key_digests,
                      rng=random.Random(settings.exploration_seed),
                      cache_namespace=hashlib.sha256(
                          json.dumps(catalog.to_dict(), sort_keys=True).encode()
                      ).hexdigest()[:12],
                      live_latency=LiveLatency())


def _use_model(ctx: AppContext, model: Any) -> None:
    """Serve an injected model (a `QualityModel`, or a pre-loaded `RoutingService`)."""
    settings, catalog, metrics = ctx.settings, ctx.catalog, ctx.metrics
    service = model if isinstance(model, RoutingService) else RoutingService.build(
        model, catalog, default_bar=settings.default_quality_bar,
        exploration=settings.exploration, proxy_all=settings.upstream_base_url is not None,
        decision_cache_size=settings.decision_cache_size,
        default_max_latency_ms=settings.max_latency_ms, live_latency=ctx.live_latency)
    if service.live_latency is None:  # pre-loaded by `router serve`: give it this app's
        service = dataclasses.replace(service, live_latency=ctx.live_latency)
    ctx.service = service
    metrics.set_model_version(service.version)


def _lifespan(ctx: AppContext, *, reload: bool
              ) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up builds what was not injected, in order; shutdown closes it in reverse."""
    settings = ctx.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if not settings.auth_enabled:
                log.warning("no client API keys configured (ROUTER_API_KEYS): every caller is "
                            "accepted; set keys before exposing the router")
            await _open_upstream(ctx, stack)
            await _share_with_replicas(ctx, stack)
            await _open_outcome_log(ctx, stack)
            await _open_cache(ctx, stack)
            task = await _start_reloader(app, ctx) if reload else None
            if settings.gc_freeze:
                freeze_heap()
            try:
                yield
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if ctx.store is not None:
                    ctx.metrics.sync_log_dropped(int(getattr(ctx.store, "dropped", 0)))

    return lifespan


async def _open_upstream(ctx: AppContext, stack: contextlib.AsyncExitStack) -> None:
    """The one shared HTTP client and the `UpstreamClient` over it, unless injected;
    the metrics hooks either way."""
    settings, catalog = ctx.settings, ctx.catalog
    if ctx.upstream is None:
        from router.upstream import Cooldowns, UpstreamClient, build_http_client

        http = build_http_client(
            transport=settings.upstream_transport,
            max_connections=settings.upstream_max_connections,
            max_keepalive=settings.upstream_max_keepalive,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            read_timeout_s=settings.upstream_read_timeout_s)
        stack.push_async_callback(http.aclose)

        gateway_key = settings.upstream_api_key
        ctx.upstream = UpstreamClient(
            catalog, http=http, base_url_override=settings.upstream_base_url,
            override_api_key=gateway_key.get_secret_value() if gateway_key else None,
            max_retries=settings.max_retries, backoff_s=settings.backoff_s,
            max_retry_after_s=settings.max_retry_after_s,
            cooldown=Cooldowns(settings.cooldown_failures, settings.cooldown_s))
    _attach_hooks(ctx, ctx.upstream)


async def _share_with_replicas(ctx: AppContext, stack: contextlib.AsyncExitStack) -> None:
    """Open breakers and live latency shared through Redis, when configured."""
    settings, catalog = ctx.settings, ctx.catalog
    cooldowns = getattr(ctx.upstream, "cooldowns", None)
    if settings.cooldown_sync_url and cooldowns is not None:
        from router.upstream import SharedCooldowns

        shared = SharedCooldowns(cooldowns, settings.cooldown_sync_url,
                                 list(catalog.names))
        await shared.start()
        stack.push_async_callback(shared.close)
        ctx.cooldown_sync = shared
    if settings.cooldown_sync_url:  # the same Redis shares live latency
        ctx.latency_sync = SharedLiveLatency(ctx.live_latency, settings.cooldown_sync_url,
                                             list(catalog.names))
        await ctx.latency_sync.start()
        stack.push_async_callback(ctx.latency_sync.close)


async def _open_outcome_log(ctx: AppContext, stack: contextlib.AsyncExitStack) -> None:
    settings = ctx.settings
    if ctx.store is None:
        from router.outcome_log import open_outcome_log

        ctx.store = open_outcome_log(
            settings.log_url, batch_size=settings.log_batch_size,
            flush_interval_s=settings.log_flush_interval_s)
        await ctx.store.start()
        stack.push_async_callback(ctx.store.close)
    else:
        await ctx.store.start()  # idempotent: an injected log may be started already
    ctx.log_started = True


async def _open_cache(ctx: AppContext, stack: contextlib.AsyncExitStack) -> None:
    settings = ctx.settings
    if ctx.cache is None and settings.cache_ttl_s > 0:
        from router.cache import open_cache

        ctx.cache = open_cache(settings.cache_url, ttl_s=settings.cache_ttl_s)
        await ctx.cache.start()
        stack.push_async_callback(ctx.cache.close)
    if ctx.cache is not None and settings.semantic_cache:
        from router.cache import SemanticCache

        ctx.semantic = SemanticCache(ctx.cache, namespace=ctx.cache_namespace)


async def _start_reloader(app: FastAPI, ctx: AppContext) -> asyncio.Task[None] | None:
    """Hot reload: the first model if none was injected, then a poll every
    `reload_interval_s` (the task, or None when the interval is 0)."""
    settings = ctx.settings
    reloader = Reloader(ctx, model_source(settings), settings.reload_interval_s)
    app.state.reloader = reloader
    if ctx.service is None:
        await reloader.load_initial()
    else:
        reloader.current_key = await asyncio.to_thread(reloader.key_of_served)
    if settings.reload_interval_s > 0:
        return asyncio.create_task(reloader.run(), name="model-reloader")
    return None
