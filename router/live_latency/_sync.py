"""Live latency shared by router replicas through Redis, the way open circuit
breakers are (`router.upstream.SharedCooldowns`).

Why: each replica sees only its share of a provider's traffic, so with N
replicas a slowdown takes N times longer to show in any one of them. Every
`interval_s` a replica writes its own slowdown factor per model into the hash
`router:latency:<model>` (field = its replica id, value = "factor wall-time"),
and reads every model's hash in the same round trip; the largest fresh factor
of another replica is adopted for `ttl_s` (`LiveLatency.adopt`), so the served
factor is the larger of its own and the others'. Entries older than `ttl_s`
are ignored and the hashes expire, so a replica that stopped leaves nothing.

Never on the request path: one background task does both directions, so a slow
or dead Redis delays the sharing, never a request. Failures are logged at most
every 10 s and counted in `errors`; Redis down at start-up is a warning and the
task picks the sharing up once it answers (`health()` says so meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from router.live_latency._tracker import LiveLatency
from router.throttle import Throttle

__all__ = ["SharedLiveLatency"]

log = logging.getLogger(__name__)


class SharedLiveLatency:
    """Publishes this replica's slowdown factors and adopts the other replicas'.

    `await start()` builds the client (a `ConfigError` names a malformed URL; an
    unreachable Redis is a warning) and starts the task; `await close()` stops it.
    `sync_once()` is one publish-and-read round trip. `clock` is wall-clock time:
    entries cross machines.
    """

    def __init__(self, live: LiveLatency, url: str, models: Sequence[str], *,
                 prefix: str = "router:latency:", interval_s: float = 1.0,
                 ttl_s: float = 5.0, replica: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.live = live
        self.url = url
        self.models = list(models)
        self.prefix = prefix
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.replica = replica or f"{os.uname().nodename}-{os.getpid()}-{os.urandom(3).hex()}"
        self.clock = clock
        self.adopted = 0
        self.errors = 0
        self.failing_since: float | None = None
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._warnings = Throttle()

    async def start(self) -> None:
        from router.outcome_log import redact_url
        from router.redis_connect import redis_client

        self._client = redis_client(self.url, setting="ROUTER_COOLDOWN_SYNC_URL")
        await self.sync_once()
        if self.failing_since is not None:
            log.warning("the latency-sharing Redis at %s does not answer: each replica sees "
                        "slow providers on its own until it is back", redact_url(self.url))
        self._task = asyncio.create_task(self._run(), name="live-latency-sync")

    def health(self) -> tuple[bool, str | None]:
        """(True, None) while Redis answers; else (False, what that costs)."""
        since = self.failing_since
        if since is None:
            return True, None
        return False, (f"Redis unreachable for {time.time() - since:.0f} s: replicas see slow "
                       "providers on their own")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    async def sync_once(self) -> None:
        """Write this replica's factors, read everyone's (one pipeline round trip)."""
        if not self.models:
            return
        now = self.clock()
        own = self.live.local_factors()
        keep_ms = max(1, int(self.ttl_s * 2000))
        try:
            pipe = self._client.pipeline(transaction=False)
            for model in self.models:
                key = self.prefix + model
                pipe.hset(key, self.replica, f"{own.get(model, 1.0)!r} {now!r}")
                pipe.pexpire(key, keep_ms)
            for model in self.models:
                pipe.hgetall(self.prefix + model)
            replies = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - sharing is best effort
            self._failed(exc)
            return
        self.failing_since = None
        for model, entries in zip(self.models, replies[2 * len(self.models):], strict=True):
            factor = self._largest_fresh(entries or {}, now)
            if factor is not None:
                self.live.adopt(model, factor, self.ttl_s)
                self.adopted += 1

    def _largest_fresh(self, entries: dict[Any, Any], now: float) -> float | None:
        """The largest factor another replica wrote within `ttl_s`, if above 1."""
        best: float | None = None
        for replica, value in entries.items():
            name = replica.decode() if isinstance(replica, bytes) else str(replica)
            if name == self.replica:
                continue
            try:
                text = value.decode() if isinstance(value, bytes) else str(value)
                factor, written = (float(part) for part in text.split())
            except (TypeError, ValueError):
                continue  # not ours: leave it alone
            if now - written <= self.ttl_s and factor > 1.0 and (best is None or factor > best):
                best = factor
        return best

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.sync_once()

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.failing_since is None:
            self.failing_since = time.time()
        if self._warnings.ready():
            log.warning("latency sharing failed (%s); replicas see slow providers on their "
                        "own meanwhile", str(exc) or type(exc).__name__)
