"""Hot reload of the served model.

A background task (`Reloader.run`, started by the app's lifespan) checks the
model source every `reload_interval_s` (the registry's `CURRENT` pointer, or the
model folder's `meta.json`). A new version is loaded and checked in a worker
thread, then swapped in with one attribute assignment of an immutable
`RoutingService`. A version that fails to load or check is refused, logged and
counted (`router_model_reloads_total{result="error"}`), and the old one keeps
serving; a refused version is not retried until the pointer changes again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

from router.catalog import load_catalog
from router.deps import AppContext
from router.errors import ArtifactError
from router.registry import Registry
from router.service import RoutingService, load_service
from router.settings import Settings

__all__ = ["ModelSource", "Reloader", "load_initial_service", "model_source"]

log = logging.getLogger(__name__)


class ModelSource:
    """Where the served model comes from: a folder, or a registry's current version.

    `key()` is cheap (one small file read or stat) and changes when a new model
    should be served; `path()` is the folder to load.
    """

    def __init__(self, *, model_dir: Path | None = None,
                 registry_dir: Path | None = None) -> None:
        self.model_dir = Path(model_dir) if model_dir else None
        self.registry = Registry(registry_dir) if registry_dir and not model_dir else None

    def describe(self) -> str:
        if self.model_dir is not None:
            return str(self.model_dir)
        return f"registry {self.registry.root}" if self.registry else "nothing"

    def key(self) -> str | None:
        if self.model_dir is not None:
            meta = self.model_dir / "meta.json"
            try:
                stat = meta.stat()
            except FileNotFoundError:
                return None
            return f"{stat.st_mtime_ns}:{stat.st_size}"
        if self.registry is not None:
            return self.registry.current_version()
        return None

    def path(self) -> Path | None:
        if self.model_dir is not None:
            return self.model_dir
        return self.registry.current() if self.registry is not None else None


class Reloader:
    """Polls a `ModelSource` and swaps `ctx.service` when a good new version appears."""

    def __init__(self, ctx: AppContext, source: ModelSource, interval_s: float) -> None:
        self.ctx = ctx
        self.source = source
        self.interval_s = interval_s
        self.current_key: str | None = None
        self.refused_key: str | None = None
        self.pointer_error: str | None = None

    def _load(self) -> RoutingService:
        path = self.source.path()
        if path is None:
            raise ArtifactError(f"{self.source.describe()}: no current model")
        s = self.ctx.settings
        return load_service(path, self.ctx.catalog, default_bar=s.default_quality_bar,
                            exploration=s.exploration,
                            proxy_all=s.upstream_base_url is not None,
                            decision_cache_size=s.decision_cache_size,
                            default_max_latency_ms=s.max_latency_ms,
                            live_latency=self.ctx.live_latency)

    def key_of_served(self) -> str | None:
        """The source's key, or None when the pre-loaded model is no longer the one it
        points at (a version promoted while this process started, e.g. one of
        `router serve --workers N`): the first poll then loads the current one."""
        key = self.source.key()
        served = self.ctx.service.path if self.ctx.service is not None else None
        current = self.source.path()
        if served is not None and current is not None and \
                Path(served).resolve() != Path(current).resolve():
            return None
        return key

    async def load_initial(self) -> None:
        """Load the first model (errors propagate: a corrupt start-up model stops start-up)."""
        key = await asyncio.to_thread(self.source.key)
        if key is None:
            log.warning("no model to serve yet at %s; /v1/route and `model: router` answer "
                        "503 until one is promoted", self.source.describe())
            return
        service = await asyncio.to_thread(self._load)
        self._swap(service, key)

    def _swap(self, service: RoutingService, key: str | None) -> None:
        self.ctx.service = service  # the atomic swap: one attribute assignment
        self.current_key = key
        if self.ctx.settings.gc_freeze:
            gc.freeze()  # the new model too (see `router.app.freeze_heap`); no collection: no pause
        self.ctx.metrics.set_model_version(service.version)
        log.info("serving model %s (%s), routes to %s", service.version, service.path,
                 ", ".join(service.routable) or "no proxyable model")

    async def check(self) -> bool:
        """One poll: True when a new model was swapped in."""
        try:
            key = await asyncio.to_thread(self.source.key)
        except ArtifactError as exc:
            # A pointer the registry refuses (e.g. hand-edited to a path outside it):
            # said and counted once, not at every poll, until it changes.
            if exc.message != self.pointer_error:
                self.pointer_error = exc.message
                self.ctx.metrics.model_reloads.labels("error").inc()
                log.error("refused the model pointer of %s, still serving %s: %s",
                          self.source.describe(),
                          self.ctx.service.version if self.ctx.service else "nothing", exc)
            return False
        except Exception:
            log.exception("cannot read the model pointer at %s", self.source.describe())
            return False
        self.pointer_error = None
        if key is None or key == self.current_key or key == self.refused_key:
            return False
        try:
            service = await asyncio.to_thread(self._load)
        except Exception as exc:
            self.refused_key = key
            self.ctx.metrics.model_reloads.labels("error").inc()
            log.error("refused new model %s from %s, still serving %s: %s", key,
                      self.source.describe(),
                      self.ctx.service.version if self.ctx.service else "nothing", exc)
            return False
        self._swap(service, key)
        self.refused_key = None
        self.ctx.metrics.model_reloads.labels("ok").inc()
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check()


def load_initial_service(settings: Settings) -> RoutingService | None:
    """Load the model `settings` point at, blocking (None when the registry is empty).

    Raises `ArtifactError` naming the folder when it is not a usable model.
    """
    source = model_source(settings)
    path = source.path()
    if path is None:
        return None
    return load_service(path, load_catalog(settings.catalog),
                        default_bar=settings.default_quality_bar,
                        exploration=settings.exploration,
                        proxy_all=settings.upstream_base_url is not None,
                        decision_cache_size=settings.decision_cache_size,
                        default_max_latency_ms=settings.max_latency_ms)


def model_source(settings: Settings) -> ModelSource:
    """Where `settings` say the model comes from: a folder, else a registry."""
    if settings.model_dir is not None:
        return ModelSource(model_dir=settings.model_dir)
    return ModelSource(registry_dir=settings.registry_dir or Registry().root)
