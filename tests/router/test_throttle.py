"""`Throttle`: the first warning at once, then at most one per interval."""

from __future__ import annotations

from router.throttle import Throttle


def test_ready_once_per_interval() -> None:
    now = [100.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    seen = []
    for t in (100.0, 101.0, 109.9, 110.0, 115.0, 120.5):
        now[0] = t
        seen.append(throttle.ready())
    assert seen == [True, False, False, True, False, True]
