"""The request limits a decision takes, checked: bar, floor, lambda and latency limit,
and which models a latency limit keeps (`within_latency`, used on whole matrices by
`choose` and per request by `decide`)."""

from __future__ import annotations

import math

import numpy as np

from router.errors import PolicyError

__all__ = ["NO_LATENCY", "NO_LATENCY_HINT", "validate_bar", "validate_lambda",
           "validate_max_latency", "within_latency"]

NO_LATENCY = "this model predicts no latency, so a latency limit cannot be applied"
NO_LATENCY_HINT = ("retrain on an outcome table with a latency_ms column (router demo-data "
                   "writes one; the outcome log records it), or drop max_latency_ms")


def validate_bar(bar: float | None, *, name: str = "quality_bar") -> float | None:
    if bar is None:
        return None
    if isinstance(bar, bool) or not isinstance(bar, int | float) or not 0.0 <= bar <= 1.0:
        raise PolicyError(f"{name} must be a number in [0, 1], got {bar!r}")
    return float(bar)


def validate_max_latency(value: float | None, *, name: str = "max_latency_ms") -> float | None:
    """A latency limit is a finite number of milliseconds > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        math.isfinite(value) and value > 0
    ):
        raise PolicyError(f"{name} must be a finite number of milliseconds > 0, got {value!r}")
    return float(value)


def within_latency(latency_ms: np.ndarray, max_latency_ms: float,
                   usable: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The models expected within the limit, per row, and the rows where none is.

    `latency_ms` is n x m expected latencies; `usable` (same shape) the models
    still in the running. A row where no usable model is expected within the
    limit keeps only its fastest usable model. Returns (mask n x m, none_within n).
    """
    latency_ms = np.asarray(latency_ms, dtype=np.float64)
    if usable is None:
        usable = np.ones(latency_ms.shape, dtype=bool)
    fast_enough = usable & (latency_ms <= max_latency_ms)
    none_within = ~fast_enough.any(axis=1)
    fastest = np.argmin(np.where(usable, latency_ms, np.inf), axis=1)
    fast_enough[none_within, fastest[none_within]] = True
    return fast_enough, none_within


def validate_lambda(value: float | None, *, name: str = "utility_lambda") -> float | None:
    """lambda is quality per USD: a finite number >= 0 (0 = best quality at any price)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        math.isfinite(value) and value >= 0
    ):
        raise PolicyError(f"{name} must be a finite number >= 0 (quality per USD), "
                          f"got {value!r}")
    return float(value)
