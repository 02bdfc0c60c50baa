"""`Throttle`: say it at most once per interval.

For warnings about failures that can repeat on every request (a Redis that is
down, a full outcome-log queue, an embedder without a model): the first one is
logged at once, then at most one per interval, each carrying the running count,
so the log shows the problem without drowning in it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["Throttle"]


class Throttle:
    """`ready()` is True at most once per `interval_s` (the first call always)."""

    def __init__(self, interval_s: float = 10.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._last = -math.inf

    def ready(self) -> bool:
        now = self.clock()
        if now - self._last < self.interval_s:
            return False
        self._last = now
        return True
