"""The latency incident of `router simulate --latency-incident`: a model made slow
mid-run loses its latency-limited traffic without a retrain.

The router serves with a latency limit (`ROUTER_MAX_LATENCY_MS`) and the fake
provider answers after the table's recorded latencies times `latency_scale`
(0.02: a 3 s answer takes 60 ms, so the run is quick; the live measure compares
a model with its own recent past, so the scale cancels out). Traffic runs for
`requests` chat requests; then the fake's run-time control makes one model
`slowdown` times slower and traffic runs `requests` more. The router's live
latency (`router.live_latency`) sees the slowdown in the model's own answers and
the limit drops it; nothing is retrained or reloaded.

The figure is how long that took: the first request after the slowdown from
which the model's share of the last `window` requests stays at or under a
quarter of its share before, in requests and in seconds of traffic.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from router.errors import ConfigError, RouterError

__all__ = ["LatencyIncident", "drop_point", "incident_limit", "run_incident"]


@dataclass
class LatencyIncident:
    """What happened to `model`'s traffic when it became `slowdown` times slower.

    `share_before` is its share of the requests before; `share_after` of the
    last `window` requests. `requests_to_drop` / `seconds_to_drop`: how many
    requests / seconds of traffic after the slowdown until its rolling share
    fell to a quarter of `share_before` and stayed there (None: it never did).
    `timeline` is every request: seconds since the slowdown (negative before)
    and the model that served it.
    """

    model: str
    slowdown: float
    max_latency_ms: float
    latency_scale: float
    requests_before: int
    requests_after: int
    share_before: float
    share_after: float
    requests_to_drop: int | None
    seconds_to_drop: float | None
    window: int = 20
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        drop = (f"lost its latency-limited traffic after {self.requests_to_drop} requests, "
                f"{self.seconds_to_drop:.1f} s of traffic" if self.requests_to_drop is not None
                else "kept its traffic (it never dropped to a quarter of its share)")
        return (f"latency incident: {self.model} made {self.slowdown:g}x slower under "
                f"max_latency_ms={self.max_latency_ms:g} (answers at {self.latency_scale:g}x "
                f"the recorded latency): share {self.share_before:.1%} before, "
                f"{self.share_after:.1%} over the last {self.window} requests; {drop}; "
                "no retrain")


def incident_limit(table: Any, config: Any) -> float:
    """The incident's latency limit: `config.max_latency_ms`, else the table's median
    recorded `latency_ms`. `ConfigError` when the table records no latency or does
    not have `config.slow_model`."""
    recorded = table["latency_ms"].dropna() if "latency_ms" in table else table.iloc[:0]
    if recorded.empty:
        raise ConfigError("--latency-incident needs a table with a latency_ms column: the "
                          "fake answers after the recorded latencies and the router "
                          "predicts them", hint="e.g. router demo-data --out demo.csv "
                                               "(it records latency_ms and ttft_ms)")
    models = set(table["model"].astype(str))
    if config.slow_model is not None and config.slow_model not in models:
        raise ConfigError(f"--latency-incident {config.slow_model}: not a model of the table",
                          hint="models: " + ", ".join(sorted(models)))
    return config.max_latency_ms or float(recorded.median())


def drop_point(served: Sequence[str], seconds: Sequence[float], model: str,
               share_before: float, window: int) -> tuple[int | None, float | None]:
    """(requests, seconds) after the slowdown until `model`'s share of the last
    `window` requests is at most a quarter of `share_before` and stays so to the
    end; (None, None) when it never does. `served` / `seconds` are the requests
    after the slowdown, in order."""
    threshold = share_before / 4
    hits = [m == model for m in served]
    found: int | None = None
    for end in range(window, len(hits) + 1):
        low = sum(hits[end - window:end]) / window <= threshold
        if low and found is None:
            found = end
        elif not low:
            found = None
    if found is None:
        return None, None
    return found, float(seconds[found - 1])


def run_incident(traffic: Any, fake_url: str, *, model: str | None, slowdown: float,
                 max_latency_ms: float, latency_scale: float, requests: int,
                 window: int = 20) -> LatencyIncident:
    """Send `requests`, slow `model` (None: the one that served most of them) down
    in the running fake, send `requests` more."""
    import httpx

    timeline: list[dict[str, Any]] = []
    before = _send(traffic, requests)
    if model is None:
        model = Counter(m for _, m in before).most_common(1)[0][0]
    response = httpx.post(f"{fake_url}/_control", json={"model": model, "slowdown": slowdown},
                          trust_env=False)
    if response.status_code != 200:
        raise RouterError(f"the fake provider refused the slowdown: {response.text}")
    slowed_at = time.monotonic()
    after = _send(traffic, requests)
    timeline += [{"seconds": t - slowed_at, "model": m} for t, m in before + after]
    share_before = sum(m == model for _, m in before) / len(before)
    served_after = [m for _, m in after]
    to_drop, seconds = drop_point(served_after, [t - slowed_at for t, _ in after], model,
                                  share_before, window)
    return LatencyIncident(
        model=model, slowdown=slowdown, max_latency_ms=max_latency_ms,
        latency_scale=latency_scale, requests_before=len(before), requests_after=len(after),
        share_before=share_before,
        share_after=sum(m == model for m in served_after[-window:]) / min(window, len(after)),
        requests_to_drop=to_drop, seconds_to_drop=seconds, window=window, timeline=timeline)


def _send(traffic: Any, n: int) -> list[tuple[float, str]]:
    """`n` chat requests: (monotonic time answered, served model) each."""
    out = []
    for _ in range(n):
        served, *_ = traffic.send(traffic.next_prompt())
        out.append((time.monotonic(), served))
    return out
