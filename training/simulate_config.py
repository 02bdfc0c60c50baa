"""The options of `router simulate`, checked before anything slow happens.

Kept apart from the loop so the command can validate what the user typed
(`SimulationConfig.validate`) before it loads a table or trains a model: a typo
costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router.errors import ConfigError

__all__ = ["SimulationConfig"]


@dataclass(frozen=True)
class SimulationConfig:
    """How the loop runs; see `training.simulate`.

    `bar` is the quality bar of every request (`model: "router:<bar>"`), fixed so
    rounds served by different versions compare; None sends `model: "router"`
    (each version's own default bar). `tolerance` is the gate's. `window_rounds` limits each
    retrain to the log of the last N rounds (None: the whole log). `model_options`
    are `QualityModel` keyword arguments for every model trained here (e.g.
    smaller `n_components` for quick tests).

    `latency_incident` runs the latency incident (`training.simulate_latency`)
    instead of the retrain rounds: `slow_model` (None: the busiest model) is made
    `slowdown` times slower after `incident_requests` requests, under a latency
    limit `max_latency_ms` (None: the table's median recorded latency), with
    answers at `latency_scale` times the recorded latencies.
    """

    rounds: int = 5
    requests_per_round: int = 200
    initial_frac: float = 0.1
    eval_frac: float = 0.2
    exploration: float = 0.1
    seed: int = 0
    bar: float | None = 0.7
    tolerance: float = 0.01
    window_rounds: int | None = None
    model_options: Mapping[str, Any] = field(default_factory=dict)
    latency_incident: bool = False
    slow_model: str | None = None
    slowdown: float = 5.0
    max_latency_ms: float | None = None
    latency_scale: float = 0.02
    incident_requests: int = 300

    def validate(self) -> None:
        """`ConfigError` naming the option for any value outside its range."""
        checks = [
            (self.rounds >= 1, "--rounds", self.rounds, "at least 1"),
            (self.requests_per_round >= 1, "--requests-per-round", self.requests_per_round,
             "at least 1"),
            (0 < self.initial_frac < 1, "--initial-frac", self.initial_frac,
             "a share in (0, 1), e.g. 0.1"),
            (0 < self.eval_frac < 1, "--eval-frac", self.eval_frac,
             "a share in (0, 1), e.g. 0.2"),
            (0 <= self.exploration <= 0.5, "--exploration", self.exploration,
             "a share of traffic in [0, 0.5], e.g. 0.1"),
            (self.bar is None or 0 <= self.bar <= 1, "--bar", self.bar, "a number in [0, 1]"),
            (self.tolerance >= 0, "--tolerance", self.tolerance, ">= 0"),
            (self.window_rounds is None or self.window_rounds >= 1, "window_rounds",
             self.window_rounds, "at least 1"),
            (self.slowdown > 1, "--slowdown", self.slowdown, "a factor > 1, e.g. 5"),
            (self.max_latency_ms is None or self.max_latency_ms > 0, "--max-latency-ms",
             self.max_latency_ms, "a number of milliseconds > 0"),
            (0 < self.latency_scale <= 1, "--latency-scale", self.latency_scale,
             "a factor in (0, 1], e.g. 0.02"),
            (self.incident_requests >= 40, "--incident-requests", self.incident_requests,
             "at least 40 (twice the window the drop is measured over)"),
            (self.latency_incident or self.max_latency_ms is None, "--max-latency-ms",
             self.max_latency_ms, "given with --latency-incident only"),
        ]
        for ok, name, value, wanted in checks:
            if not ok:
                raise ConfigError(f"{name} must be {wanted}, got {value!r}")
