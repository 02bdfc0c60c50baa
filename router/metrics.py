"""Prometheus metrics of one app, in a registry of its own.

No module-level collectors: `Metrics()` builds every metric on a fresh
`CollectorRegistry`, so two apps in one process (tests, the benchmark) never
share counts and `create_app` can be called any number of times. Label values
are bounded (endpoint names, catalog models, status codes, outcome kinds):
never prompts, request ids or client keys.

Several worker processes (`router serve --workers N`): prometheus_client's
multiprocess mode. The server sets `PROMETHEUS_MULTIPROC_DIR` (a private folder
per start) before the workers start; each worker's values then live in files
there, and `render()` adds up every worker's, so a scrape that lands on any
worker gives the totals. Gauges say how to combine workers: `router_model_info`
keeps one series per live worker (label `pid`: which version each serves,
reloads being per worker), `router_dependency_up` the value the scraped worker
has just measured. A worker that exits is marked dead by the server
(`mark_process_dead`), so its gauges go while its counts stay in the totals.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["Metrics", "CONTENT_TYPE_LATEST", "MULTIPROC_DIR_ENV"]

# prometheus_client's own variable: read by it when first imported in a process, so the
# server sets it before a worker starts, never later.
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Route decisions are sub-millisecond; upstream calls take up to minutes.
_DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0)


@dataclass
class Metrics:
    """Every metric the router exports. `render()` gives the `/metrics` body."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_DIR_ENV) or None
        self._served_version: str | None = None
        r = self.registry
        self.requests = Counter("router_requests", "Requests answered, by endpoint, model and "
                                "HTTP status", ["endpoint", "model", "status"], registry=r)
        self.cost_usd = Counter("router_cost_usd", "Upstream cost in USD (from token usage and "
                                "catalog prices), by served model", ["model"], registry=r)
        self.route_decision = Histogram("router_route_decision_seconds", "Time to predict and "
                                        "decide (features, model, policy)",
                                        buckets=_DECISION_BUCKETS, registry=r)
        self.upstream_ttfb = Histogram("router_upstream_ttfb_seconds", "Time from sending to the "
                                       "first byte of the upstream's answer, by served model",
                                       ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_latency = Histogram("router_upstream_latency_seconds", "Duration of "
                                          "successful upstream attempts, by model: to the whole "
                                          "answer (JSON) or to the first event (stream: its time "
                                          "to first token)", ["model"],
                                          buckets=_LATENCY_BUCKETS, registry=r)
        self.request_duration = Histogram("router_request_duration_seconds", "Total time to "
                                          "answer, by endpoint", ["endpoint"],
                                          buckets=(0.0005, 0.001, 0.0025) + _LATENCY_BUCKETS,
                                          registry=r)
        self.cache_hits = Counter("router_cache_hits", "Chat completions answered from the "
                                  "cache, by kind: exact (same request) or semantic (a near "
                                  "duplicate)", ["kind"], registry=r)
        for kind in ("exact", "semantic"):
            self.cache_hits.labels(kind)  # both series exist from the start, at 0
        self.cache_misses = Counter("router_cache_misses", "Cacheable chat completions not in the "
                                    "cache", registry=r)
        self.fallbacks = Counter("router_fallbacks", "Requests the upstream answered from another "
                                 "model than the one chosen (it failed or its breaker was "
                                 "open); cache hits are not fallbacks",
                                 ["from_model", "to_model"], registry=r)
        self.cooldowns = Counter("router_cooldowns", "Circuit breaker openings (a model skipped "
                                 "for a while); failures into an open breaker are not "
                                 "counted again", ["model"], registry=r)
        self.upstream_attempts = Counter("router_upstream_attempts", "Upstream attempts, by "
                                         "model and outcome (ok or the error kind)",
                                         ["model", "outcome"], registry=r)
        self.model_reloads = Counter("router_model_reloads", "Hot reloads of the quality model, "
                                     "by result (ok, error)", ["result"], registry=r)
        self.model_info = Gauge("router_model_info", "The serving model version (value 1)",
                                ["version"], registry=r, multiprocess_mode="liveall")
        self.log_dropped = Counter("router_log_dropped", "Outcome-log rows lost (queue full, "
                                   "rejected, unwritten at close)", registry=r)
        self.dependency_up = Gauge("router_dependency_up", "1 while an optional dependency "
                                   "works, 0 while the router serves without it (outcome_log: "
                                   "rows queue or drop; cache: skipped)", ["dependency"],
                                   registry=r, multiprocess_mode="livemostrecent")
        self._log_dropped_seen = 0

    def set_model_version(self, version: str) -> None:
        """Exactly one `router_model_info` series is 1: the version now serving.

        With several workers, per worker; a series cannot be removed in
        prometheus_client's multiprocess mode, so the version served before
        stays, at 0.
        """
        previous, self._served_version = self._served_version, version
        if self.multiprocess_dir is None:
            self.model_info.clear()
        elif previous is not None and previous != version:
            self.model_info.labels(version=previous).set(0)
        self.model_info.labels(version=version).set(1)

    def sync_log_dropped(self, total: int) -> None:
        """Advance the counter to the outcome log's own running total."""
        if total > self._log_dropped_seen:
            self.log_dropped.inc(total - self._log_dropped_seen)
            self._log_dropped_seen = total

    def render(self) -> bytes:
        """The Prometheus text: this app's metrics, or every worker's added up."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=self.multiprocess_dir)
        return generate_latest(combined)
