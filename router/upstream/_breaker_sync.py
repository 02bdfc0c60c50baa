"""Circuit-breaker openings shared by router replicas through Redis.

Why: each replica's breaker (`router.upstream._breaker.Cooldowns`) learns on its own, so
with N replicas a dead provider costs N x `cooldown_failures` failed requests
(and as many fallbacks) before all of them skip it, and again after every
cooldown. With `ROUTER_COOLDOWN_SYNC_URL` set, a replica that opens a breaker on
its own evidence writes `router:breaker:<model>` = the wall-clock time it stays
open, with the same TTL; every replica reads all models' keys once per
`interval_s` (one MGET) and adopts the openings it did not know about.

Never on the request path: publishing is a fire-and-forget task and reading is
a background poll, so a slow or dead Redis delays the sharing, never a request.
Failures are logged (at most every 10 s) and counted in `errors`. Sharing is
optional, so Redis being down at start-up does not stop a replica: it starts
with a warning, `health()` reports it (the app's `/readyz` `degraded`,
`router_dependency_up{dependency="cooldown_sync"}`), and the poll picks the
sharing up again once Redis answers. Closing is not
shared: each replica's own half-open trial decides when it uses the model again,
and a shared opening expires with its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from router.throttle import Throttle
from router.upstream._breaker import Cooldowns

__all__ = ["SharedCooldowns"]

log = logging.getLogger(__name__)


class SharedCooldowns:
    """Publishes this replica's breaker openings and adopts the other replicas'.

    `await start()` builds the client (a `ConfigError` names a malformed URL;
    an unreachable Redis is a warning), hooks `cooldowns.on_open` and starts the
    poll; `await close()` stops both.
    `clock` is wall-clock time (`time.time`): openings cross machines.
    """

    def __init__(self, cooldowns: Cooldowns, url: str, models: Sequence[str], *,
                 prefix: str = "router:breaker:", interval_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.cooldowns = cooldowns
        self.url = url
        self.models = list(models)
        self.prefix = prefix
        self.interval_s = interval_s
        self.clock = clock
        self.adopted = 0
        self.published = 0
        self.errors = 0
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._warnings = Throttle()
        #: Wall-clock time of the first failure of the current outage; None while Redis answers.
        self.failing_since: float | None = None

    async def start(self) -> None:
        from router.outcome_log import redact_url
        from router.redis_connect import redis_client

        self._client = redis_client(self.url, setting="ROUTER_COOLDOWN_SYNC_URL")
        self.cooldowns.on_open = self._publish
        await self.poll_once()
        if self.failing_since is not None:
            log.warning("the breaker-sharing Redis at %s does not answer: each replica "
                        "learns failing providers on its own until it is back (check "
                        "ROUTER_COOLDOWN_SYNC_URL and that Redis is running)",
                        redact_url(self.url))
        self._task = asyncio.create_task(self._poll(), name="cooldown-sync")

    def health(self) -> tuple[bool, str | None]:
        """(True, None) while Redis answers; else (False, what that costs)."""
        since = self.failing_since
        if since is None:
            return True, None
        return False, (f"Redis unreachable for {time.time() - since:.0f} s: replicas learn "
                       "failing providers on their own")

    async def close(self) -> None:
        if self.cooldowns.on_open == self._publish:
            self.cooldowns.on_open = None
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    def _publish(self, model: str, open_for: float) -> None:
        task = asyncio.get_running_loop().create_task(self._write(model, open_for))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, model: str, open_for: float) -> None:
        try:
            await self._client.set(self.prefix + model, repr(self.clock() + open_for),
                                   px=max(1, int(open_for * 1000)))
            self.published += 1
        except Exception as exc:  # noqa: BLE001 - sharing is best effort
            self._failed("publishing an open breaker", exc)
            return
        self.failing_since = None

    async def poll_once(self) -> None:
        """Adopt every opening other replicas published (one round trip)."""
        if not self.models:
            return
        try:
            values = await self._client.mget([self.prefix + m for m in self.models])
        except Exception as exc:  # noqa: BLE001
            self._failed("reading shared breakers", exc)
            return
        self.failing_since = None
        now = self.clock()
        for model, value in zip(self.models, values, strict=True):
            if value is None:
                continue
            try:
                until = float(value)
            except (TypeError, ValueError):
                continue  # not ours: leave it alone
            if self.cooldowns.adopt(model, until - now):
                self.adopted += 1
                log.warning("upstream %s: skipped for %.0f s, as another replica found it "
                            "failing", model, until - now)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.poll_once()

    def _failed(self, action: str, exc: BaseException) -> None:
        self.errors += 1
        if self.failing_since is None:
            self.failing_since = time.time()
        if self._warnings.ready():
            log.warning("breaker sharing: %s failed (%s); replicas learn on their own "
                        "meanwhile", action, str(exc) or type(exc).__name__)
