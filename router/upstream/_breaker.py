"""Per-model circuit breaker (`Cooldowns`) for the upstream client.

Kept apart from the client so the breaker's state machine (closed, open,
half-open) can be read and tested on its own with an injected clock; the
client (`router.upstream._client.UpstreamClient`) only asks `is_available` / `acquire`
and reports verdicts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from router.errors import RouterError

__all__ = ["Cooldowns"]

log = logging.getLogger(__name__)

_ADOPT_SLACK_S = 0.5


@dataclass
class _Breaker:
    failures: int = 0
    opened_at: float | None = None
    open_for: float = 0.0
    trial_started: float | None = None


class Cooldowns:
    """Per-model circuit breaker.

    Closed: requests go through; `failure_threshold` consecutive failures open
    it. Open: the model is skipped for `cooldown_s` (or longer if a provider's
    `Retry-After` said so). Half-open: after that, one trial request is let
    through; success closes the breaker, failure opens it again. A trial that
    never reports back (cancelled) is given up on after `cooldown_s`.
    `on_state_change(model, state)` is called with 'open', 'half_open', 'closed'.

    State is per process and not locked: share one instance per event loop.
    Replicas learn on their own (a dead provider is found in `failure_threshold`
    requests anyway) unless they share openings: `on_open(model, open_for_s)` is
    called when this process opens a breaker on its own evidence, and `adopt`
    takes an opening another replica reported (`router.upstream._breaker_sync`).
    """

    def __init__(self, failure_threshold: int = 3, cooldown_s: float = 30.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 on_state_change: Callable[[str, str], None] | None = None,
                 on_open: Callable[[str, float], None] | None = None) -> None:
        if failure_threshold < 1 or cooldown_s < 0:
            raise RouterError(f"Cooldowns: failure_threshold must be >= 1 and cooldown_s >= 0, "
                              f"got {failure_threshold!r}, {cooldown_s!r}")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.on_state_change = on_state_change
        self.on_open = on_open
        self._breakers: dict[str, _Breaker] = {}

    def state(self, model: str) -> str:
        b = self._breakers.get(model)
        if b is None or b.opened_at is None:
            return "closed"
        if self.clock() - b.opened_at >= b.open_for:
            return "half_open"
        return "open"

    def is_available(self, model: str) -> bool:
        """Would `acquire` let a request through now (without taking the trial)?"""
        state = self.state(model)
        if state == "closed":
            return True
        if state == "open":
            return False
        b = self._breakers[model]
        return b.trial_started is None or self.clock() - b.trial_started >= self.cooldown_s

    def acquire(self, model: str) -> bool:
        """May a request go to `model` now? In half-open state this takes the one trial."""
        if not self.is_available(model):
            return False
        if self.state(model) == "half_open":
            self._breakers[model].trial_started = self.clock()
            self._notify(model, "half_open")
        return True

    def release(self, model: str) -> None:
        """A request that got through ended without a verdict (cancelled)."""
        b = self._breakers.get(model)
        if b is not None:
            b.trial_started = None

    def record_success(self, model: str) -> None:
        b = self._breakers.pop(model, None)
        if b is not None and b.opened_at is not None:
            self._notify(model, "closed")

    def record_failure(self, model: str, *, open_for: float | None = None) -> None:
        """Count a failure; `open_for` opens the breaker at once for that long."""
        was_open = self.state(model) == "open"
        b = self._breakers.setdefault(model, _Breaker())
        b.failures += 1
        was_half_open = b.opened_at is not None
        if open_for is not None or was_half_open or b.failures >= self.failure_threshold:
            now = self.clock()
            until = now + max(self.cooldown_s, open_for or 0.0)
            if was_open:
                # A failure into an open breaker (a request sent before it opened, or
                # one trying every model because all were cooling) extends the
                # cooldown but is no new opening: `router_cooldowns_total` counts
                # openings, and replicas sharing openings already know this one.
                assert b.opened_at is not None
                if until > b.opened_at + b.open_for:
                    b.opened_at, b.open_for = now, until - now
                return
            b.opened_at = now
            b.open_for = until - now
            b.trial_started = None
            self._notify(model, "open")
            if self.on_open is not None:
                try:
                    self.on_open(model, b.open_for)
                except Exception:  # sharing is best effort; the local breaker stands
                    log.exception("on_open hook failed for %s", model)

    def adopt(self, model: str, open_for: float) -> bool:
        """Open `model`'s breaker for `open_for` s on another replica's evidence,
        unless it is already open at least that long; True when it changed."""
        if open_for <= 0:
            return False
        now = self.clock()
        b = self._breakers.setdefault(model, _Breaker())
        # The slack absorbs clock differences between replicas, so re-reading the
        # same shared opening every poll changes nothing (and notifies nobody).
        if b.opened_at is not None and b.opened_at + b.open_for >= now + open_for - _ADOPT_SLACK_S:
            return False
        b.opened_at = now
        b.open_for = open_for
        b.trial_started = None
        self._notify(model, "open")
        return True

    def open_models(self) -> list[str]:
        return [m for m in self._breakers if self.state(m) == "open"]

    def _notify(self, model: str, state: str) -> None:
        log.info("upstream %s: circuit %s", model, state)
        if self.on_state_change is not None:
            self.on_state_change(model, state)
