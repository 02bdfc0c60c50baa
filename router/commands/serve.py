"""`router serve`: the router over HTTP (uvicorn), optionally with the fake upstream.

The model comes from `--model DIR`, else `--registry DIR` (its current version,
hot-reloaded on promote), else the repository's `models/` registry. Flags win
over `ROUTER_*` environment variables, which win over the `--config` TOML file
(see `router.settings`).

`--fake-upstream` mounts the simulated provider (`router.fake`) inside
the same process under `/_fake_upstream` and points every model at
`http://127.0.0.1:PORT/_fake_upstream/v1`, so the quickstart needs no provider
key and no second process. Never use it in production: answers are made up.

`--workers N` (`ROUTER_WORKERS`) serves the port from N processes
(`router.supervisor`): the settings are loaded, checked and pre-flighted once
here, then every worker builds the same app from them (same model source, hot
reload polled by each, its own pools and outcome-log writer) and serves it as
one process would; `/metrics` on any worker gives the totals of all.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

from router.cli import add_command
from router.errors import ConfigError, RouterError
from router.fake import bind_socket, graceful_server

__all__ = ["register", "run", "FAKE_UPSTREAM_PATH", "preflight", "WorkerSpec"]

log = logging.getLogger(__name__)

FAKE_UPSTREAM_PATH = "/_fake_upstream"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "serve",
        help="serve the router over HTTP (OpenAI-compatible)",
        description="Serve POST /v1/route, POST /v1/chat/completions (model `router`, "
                    "`router:0.8` or a catalog model), POST /v1/feedback, GET /v1/models, "
                    "/healthz, /readyz and /metrics. Every option can also be set as an "
                    "environment variable ROUTER_<OPTION> or in a TOML file (--config); "
                    "`python -m router.settings` prints them all.",
        examples=[
            "router serve --model models/demo --fake-upstream",
            "router serve --registry models --port 8000",
            "router serve --config router.toml --log-url postgresql://router@db/router",
            "router serve --model models/demo --upstream-base-url http://127.0.0.1:8100/v1",
            "router serve --registry models --workers 2",
        ],
        handler=run,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="DIR", help="a trained model folder to serve")
    source.add_argument("--registry", metavar="DIR",
                        help="a registry root; serves its current version, hot-reloads")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file ($ROUTER_CONFIG)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default 8000)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="processes serving the port (default 1); more than the cores "
                             "only adds memory")
    parser.add_argument("--catalog", metavar="FILE", help="catalog TOML")
    parser.add_argument("--upstream-base-url", metavar="URL",
                        help="send every model to this OpenAI-compatible base URL, with "
                             "$ROUTER_UPSTREAM_API_KEY as its key (never the providers' "
                             "keys); plain http only to loopback unless "
                             "ROUTER_UPSTREAM_ALLOW_HTTP=1")
    parser.add_argument("--log-url", metavar="URL",
                        help="outcome log: path, sqlite:///file.db or postgresql://...")
    parser.add_argument("--cache-url", metavar="URL",
                        help="redis://host:6379/0 to share the cache (default in-process)")
    parser.add_argument("--fake-upstream", action="store_true",
                        help=f"run the fake provider in this process under "
                             f"{FAKE_UPSTREAM_PATH} and route every model to it")
    parser.add_argument("--fake-latency-ms", type=float, default=0.0,
                        help="with --fake-upstream: its delay before each answer")


def _check_paths(args: argparse.Namespace) -> None:
    """A mistyped --model/--registry is named as the flag the user typed."""
    from pathlib import Path

    if args.model and not Path(args.model).is_dir():
        raise ConfigError(f"--model {args.model}: no such folder",
                          hint="pass the folder written by `router train --out DIR`, or "
                               "--registry DIR to serve a registry's current version")
    if args.registry and not Path(args.registry).is_dir():
        raise ConfigError(f"--registry {args.registry}: no such folder",
                          hint="pass a registry root (the folder holding versions/ and "
                               "CURRENT), e.g. the one `router quickstart` printed")


def preflight(settings: Any) -> None:
    """Open and close the outcome log once before serving, and check the Redis URLs.

    An unreachable PostgreSQL URL or a malformed Redis URL then stops `router
    serve` with the one-line `ConfigError` and its hint, instead of a uvicorn
    lifespan traceback. Redis itself is not contacted: the cache and the breaker
    sharing are optional, so a Redis that is down is a warning at start-up (the
    app starts without them and uses them once Redis is back), not a refusal.
    """
    import asyncio

    from router.cache import RedisCache, open_cache
    from router.outcome_log import open_outcome_log
    from router.redis_connect import redis_client

    async def check() -> None:
        store = open_outcome_log(settings.log_url, batch_size=settings.log_batch_size,
                                 flush_interval_s=settings.log_flush_interval_s)
        await store.start()
        await store.close()
        if settings.cache_url and settings.cache_ttl_s > 0 and isinstance(
                open_cache(settings.cache_url, ttl_s=settings.cache_ttl_s), RedisCache):
            await redis_client(settings.cache_url, setting="ROUTER_CACHE_URL").aclose()
        if settings.cooldown_sync_url:
            await redis_client(settings.cooldown_sync_url,
                               setting="ROUTER_COOLDOWN_SYNC_URL").aclose()

    asyncio.run(check())


def _missing_provider_keys(catalog: Any) -> list[str]:
    import os

    return sorted({spec.api_key_env for spec in catalog.models.values()
                   if spec.api_key_env and not os.environ.get(spec.api_key_env)})


def _upstream_for(args: argparse.Namespace, settings: Any, port: int) -> Any:
    """`settings` with every model sent to the in-process fake provider when asked;
    says once which keys go where."""
    from router.catalog import load_catalog

    if args.fake_upstream:
        local = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        return settings.model_copy(update={
            "upstream_base_url": f"http://{local}:{port}{FAKE_UPSTREAM_PATH}/v1"})
    if settings.upstream_base_url is None:
        missing = _missing_provider_keys(load_catalog(settings.catalog))
        if missing:
            log.warning("provider keys not set: %s; calls to those providers will fail. "
                        "For a local try-out use --fake-upstream", ", ".join(missing))
    else:
        log.info("every model goes to %s with %s; provider keys are never sent there",
                 settings.upstream_base_url,
                 "ROUTER_UPSTREAM_API_KEY" if settings.upstream_api_key else "no key")
    return settings


def _build(settings: Any, *, fake_upstream: bool, fake_latency_ms: float) -> Any:
    """The app for `settings`, with the fake provider mounted if asked."""
    from router.app import create_app
    from router.catalog import load_catalog
    from router.reload import load_initial_service

    service = load_initial_service(settings)
    if service is None:
        log.warning("the registry has no current version yet; routing answers 503 until one "
                    "is promoted")
    app = create_app(settings, model=service, reload=True)
    if fake_upstream:
        from router.fake import create_fake_upstream

        app.mount(FAKE_UPSTREAM_PATH, create_fake_upstream(
            catalog=load_catalog(settings.catalog), latency_ms=fake_latency_ms))
        log.warning("fake upstream mounted at %s: answers are simulated",
                    settings.upstream_base_url)
    return app


def _server(app: Any, settings: Any) -> Any:
    """The uvicorn server of one process (all of `router serve`, or one worker)."""
    import uvicorn

    # One log line per routed request comes from the router itself; uvicorn's
    # access log would double it and costs throughput.
    return graceful_server(
        uvicorn.Config(app, log_level="info", lifespan="on", access_log=False,
                       timeout_graceful_shutdown=settings.shutdown_grace_s),
        on_deadline=app.state.ctx.cut_streams)


@dataclass(frozen=True)
class WorkerSpec:
    """What a `--workers` process needs to build the app: the validated settings
    (as field values: a settings class made for a TOML file does not pickle) and
    the flags that are not settings."""

    settings: dict[str, Any]
    fake_upstream: bool
    fake_latency_ms: float
    debug: bool

    def load_settings(self) -> Any:
        from router.settings import Settings

        return Settings(**self.settings)


def _worker(spec: WorkerSpec, host: str, port: int, ready: Any) -> None:
    """One `--workers` process: build the app, listen on the port beside the other
    workers (`SO_REUSEPORT`), set `ready` once serving."""
    from router.cli import configure_logging, print_error
    from router.supervisor import STARTUP_FAILURE

    configure_logging(spec.debug)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = spec.load_settings()
        server = _server(_build(settings, fake_upstream=spec.fake_upstream,
                                fake_latency_ms=spec.fake_latency_ms), settings)
    except RouterError as exc:
        print_error(exc)
        sys.exit(STARTUP_FAILURE)
    done = threading.Event()

    def signal_ready() -> None:
        while not (server.started or done.wait(0.05)):
            pass
        if server.started:
            ready.set()

    threading.Thread(target=signal_ready, name="ready", daemon=True).start()
    sock = bind_socket(host, port, reuse_port=True)
    try:
        server.run(sockets=[sock])
    finally:
        done.set()
        sock.close()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _check_workers(args: argparse.Namespace) -> None:
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: at least 1 process is needed",
                          hint="--workers 1 (the default) serves from this process; N > 1 "
                               "runs N processes on the same port")


def _serve_workers(args: argparse.Namespace, settings: Any, port: int, url: str) -> int:
    """Run the workers; the caller's socket (bound with `SO_REUSEPORT`, never listening)
    keeps the port reserved while they come and go."""
    from router.supervisor import Supervisor, usable_cores

    cores = usable_cores()
    if settings.workers > cores:
        log.warning("%d workers on %d cores: the extra ones add memory, not throughput",
                    settings.workers, cores)
    spec = WorkerSpec(settings=settings.model_dump(), fake_upstream=args.fake_upstream,
                      fake_latency_ms=args.fake_latency_ms,
                      debug=bool(getattr(args, "debug", False)))
    supervisor = Supervisor(_worker, (spec, settings.host, port), workers=settings.workers,
                            # a worker's grace period, then its outcome log's last flush
                            stop_timeout_s=settings.shutdown_grace_s + 30.0)
    return supervisor.run(on_serving=lambda: print(
        f"router on {url} with {settings.workers} workers (Ctrl-C to stop)", flush=True))


def run(args: argparse.Namespace) -> int:
    from router.registry import Registry
    from router.settings import load_settings

    _check_paths(args)
    _check_workers(args)
    overrides = {"model_dir": args.model, "registry_dir": args.registry, "host": args.host,
                 "port": args.port, "catalog": args.catalog,
                 "upstream_base_url": args.upstream_base_url, "log_url": args.log_url,
                 "cache_url": args.cache_url, "workers": args.workers}
    settings = load_settings(args.config, **overrides)
    if settings.model_dir is None and settings.registry_dir is None:
        registry = Registry()
        if registry.current_version() is None:
            raise ConfigError(f"no model to serve: no --model and no current version in "
                              f"{registry.root}",
                              hint="train one (`router quickstart` or `router train --data "
                                   "FILE --out models/demo`) then `router serve --model "
                                   "models/demo`")
    # httpx logs every upstream call at INFO; the router's own line per request is enough.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if settings.workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError(f"--workers {settings.workers}: this system has no SO_REUSEPORT",
                          hint="run one worker per process and balance in front, or use "
                               "Linux")
    sock = bind_socket(settings.host, settings.port)
    if settings.workers > 1:
        # Bound without SO_REUSEPORT first: another server that listens with it (a second
        # `--workers` server on the same port) is then refused instead of sharing traffic.
        port = sock.getsockname()[1]
        sock.close()
        sock = bind_socket(settings.host, port, reuse_port=True)
    try:
        preflight(settings)
        port = sock.getsockname()[1]
        settings = _upstream_for(args, settings, port)
        url = f"http://{settings.host}:{port}"
        if settings.workers > 1:
            return _serve_workers(args, settings, port, url)
        app = _build(settings, fake_upstream=args.fake_upstream,
                     fake_latency_ms=args.fake_latency_ms)
        print(f"router on {url} (Ctrl-C to stop)", flush=True)
        _server(app, settings).run(sockets=[sock])
    finally:
        sock.close()
    return 0
