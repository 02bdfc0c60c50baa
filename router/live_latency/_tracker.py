"""Per-model slowdown seen in the router's own traffic, as a factor on the artifact's
latency predictions.

Why a factor and not a latency: the artifact predicts each (request, model)'s
latency from the prompt and the answer length; a recent per-model figure knows
neither. A provider that slows down makes *all* its answers slower, so the
tracker compares each model's recent P90 of observed latencies (the last
`window_s`) with its own slowly moving baseline P90 (the mean of its first
`warmup` window P90s, then an exponential average with time constant
`baseline_s`) and serves the ratio: `expected = predicted x factor`. A ratio
under `noise` (a healthy heavy tail's window-to-window wobble) is served as 1,
and so is everything until the baseline is known, so a healthy model keeps
factor 1 and the blend never turns the artifact's per-request estimate into a
per-model one. The baseline keeps learning during a slowdown, slowly: a 3x
slowdown still shows as ~2.5x after a minute with the default 10 min constant,
and a provider that stays slow for good becomes its new normal after a while
instead of being excluded for ever on a stale comparison.

Recovery: a model excluded for being slow gets little traffic, so its window
empties; once fewer than `min_samples` observations are within `window_s` its
factor returns to 1 and it is tried again, like a half-open circuit breaker.
Reads are on the request path and cost a clock call and a comparison: factors
are recomputed when an observation arrives, and `generation` changes only when a
factor moves by at least `step` (what the decision cache keys on).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LiveLatency", "ModelLatency", "blend"]


@dataclass
class ModelLatency:
    """One model's recent observations (time, latency ms), baseline and factors."""

    samples: deque[tuple[float, float]] = field(default_factory=deque)
    baseline_ms: float | None = None
    baseline_at: float = 0.0
    baseline_updates: int = 0
    recent_p90_ms: float | None = None
    local: float = 1.0
    #: The largest factor another replica reported, and until when it holds.
    shared: float = 1.0
    shared_until: float = 0.0
    #: When the local factor falls back to 1 unless new observations arrive.
    valid_until: float = math.inf
    #: The served factor when `generation` last moved for this model.
    announced: float = 1.0


class LiveLatency:
    """Slowdown factor per model from observed latencies; thread-safe.

    `observe(model, latency_ms)` is fed from the upstream client's attempts;
    `factors(models)` is what a decision multiplies the predictions by;
    `adopt(model, factor, ttl_s)` takes another replica's factor (see
    `router.live_latency.SharedLiveLatency`). `clock` is monotonic time.
    """

    def __init__(self, *, window_s: float = 30.0, baseline_s: float = 600.0,
                 quantile: float = 0.9, min_samples: int = 5, max_samples: int = 256,
                 warmup: int = 50, noise: float = 1.25, step: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not (window_s > 0 and baseline_s > 0 and 0 < quantile < 1 and min_samples >= 1
                and max_samples >= min_samples and warmup >= 1 and step > 0 and noise >= 1):
            raise ValueError("LiveLatency: window_s, baseline_s, step > 0; quantile in (0, 1); "
                             "1 <= min_samples <= max_samples; warmup >= 1; noise >= 1")
        self.window_s = window_s
        self.baseline_s = baseline_s
        self.quantile = quantile
        self.min_samples = min_samples
        self.max_samples = max_samples
        self.warmup = warmup
        self.noise = noise
        self.step = step
        self.clock = clock
        #: Changes whenever a served factor moves by a `step` or more.
        self.generation = 0
        self._models: dict[str, ModelLatency] = {}
        self._lock = threading.Lock()
        self._cache: tuple[int, tuple[str, ...], np.ndarray] | None = None
        self._next_expiry = math.inf

    # -- feeding --------------------------------------------------------------------

    def observe(self, model: str, latency_ms: float) -> None:
        """One observed latency of `model`, in ms (non-finite or negative: ignored)."""
        if not (math.isfinite(latency_ms) and latency_ms >= 0):
            return
        now = self.clock()
        with self._lock:
            state = self._models.setdefault(model, ModelLatency())
            state.samples.append((now, float(latency_ms)))
            if len(state.samples) > self.max_samples:
                state.samples.popleft()
            self._recompute(state, now)

    def adopt(self, model: str, factor: float, ttl_s: float) -> None:
        """Another replica's factor for `model`, valid for `ttl_s` seconds; the
        served factor is the larger of this replica's and the shared ones."""
        if not (math.isfinite(factor) and factor >= 1.0):
            return
        now = self.clock()
        with self._lock:
            state = self._models.setdefault(model, ModelLatency())
            state.shared, state.shared_until = factor, now + ttl_s
            self._next_expiry = min(self._next_expiry, state.shared_until)
            self._announce(state, now)

    # -- reading --------------------------------------------------------------------

    def factor(self, model: str) -> float:
        """The factor served for `model` now (1.0 when nothing says it is slow)."""
        return float(self.factors((model,))[0])

    def current_generation(self) -> int:
        """`generation` after lapsing what expired (what the decision cache keys on)."""
        if self.clock() >= self._next_expiry:
            self._expire()
        return self.generation

    def factors(self, models: Sequence[str]) -> np.ndarray:
        """Factors for `models`, in order (the same array until `generation` moves)."""
        self.current_generation()
        key = tuple(models)
        cached = self._cache
        if cached is not None and cached[0] == self.generation and cached[1] == key:
            return cached[2]
        with self._lock:
            now = self.clock()
            values = np.array([self._served(self._models[m], now) if m in self._models else 1.0
                               for m in key], dtype=np.float64)
            values.setflags(write=False)
            self._cache = (self.generation, key, values)
        return values

    def local_factors(self) -> dict[str, float]:
        """This replica's own factor per observed model (what it shares)."""
        with self._lock:
            return {m: s.local for m, s in self._models.items()}

    def snapshot(self) -> dict[str, dict[str, float | int | None]]:
        """Per model: factor served, recent P90, baseline P90, samples in the window."""
        now = self.clock()
        with self._lock:
            return {m: {"factor": self._served(s, now), "recent_p90_ms": s.recent_p90_ms,
                        "baseline_p90_ms": s.baseline_ms,
                        "samples": sum(1 for t, _ in s.samples if t > now - self.window_s)}
                    for m, s in sorted(self._models.items())}

    # -- internals (called with the lock held) ----------------------------------------

    def _served(self, state: ModelLatency, now: float) -> float:
        shared = state.shared if now < state.shared_until else 1.0
        return max(state.local, shared)

    def _recompute(self, state: ModelLatency, now: float) -> None:
        cutoff = now - self.window_s
        while state.samples and state.samples[0][0] <= cutoff:
            state.samples.popleft()
        if len(state.samples) < self.min_samples:
            state.local, state.recent_p90_ms, state.valid_until = 1.0, None, math.inf
        else:
            p90 = _quantile(sorted(ms for _, ms in state.samples), self.quantile)
            state.recent_p90_ms = p90
            base = state.baseline_ms
            ratio = p90 / base if base and state.baseline_updates >= self.warmup else 1.0
            self._learn(state, p90, now)
            state.local = ratio if ratio >= self.noise else 1.0
            # The factor lapses when the window no longer holds `min_samples`.
            state.valid_until = state.samples[-self.min_samples][0] + self.window_s
            self._next_expiry = min(self._next_expiry, state.valid_until)
        self._announce(state, now)

    def _learn(self, state: ModelLatency, p90: float, now: float) -> None:
        """Move the baseline towards `p90`: a plain mean over the first `warmup`
        updates, then an exponential average with time constant `baseline_s`."""
        state.baseline_updates += 1
        if state.baseline_ms is None:
            state.baseline_ms = p90
        elif state.baseline_updates <= self.warmup:
            state.baseline_ms += (p90 - state.baseline_ms) / state.baseline_updates
        else:
            weight = 1.0 - math.exp(-(now - state.baseline_at) / self.baseline_s)
            state.baseline_ms += weight * (p90 - state.baseline_ms)
        state.baseline_at = now

    def _announce(self, state: ModelLatency, now: float) -> None:
        """Move `generation` when the served factor drifted a `step` from the last
        announced one, or left or reached 1 (small drifts add up, then move it)."""
        served = self._served(state, now)
        before = state.announced
        if abs(served - before) >= self.step or (served == 1.0 and before != 1.0):
            state.announced = served
            self.generation += 1

    def _expire(self) -> None:
        with self._lock:
            now = self.clock()
            self._next_expiry = math.inf
            for state in self._models.values():
                if state.valid_until <= now:
                    self._recompute(state, now)
                elif state.valid_until < math.inf:
                    self._next_expiry = min(self._next_expiry, state.valid_until)
                if state.shared_until:
                    if state.shared_until <= now:
                        state.shared, state.shared_until = 1.0, 0.0
                        self._announce(state, now)
                    else:
                        self._next_expiry = min(self._next_expiry, state.shared_until)


def _quantile(ordered: list[float], q: float) -> float:
    """numpy's default (linear) quantile of a sorted list, without numpy's overhead
    (this runs on every observation: ~10 us for 256 values instead of ~60)."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def blend(latency_ms: np.ndarray, factors: np.ndarray | Iterable[float]) -> np.ndarray:
    """The artifact's expected latencies (n x m, or m) times each model's live factor."""
    return np.asarray(latency_ms, dtype=np.float64) * np.asarray(factors, dtype=np.float64)
