"""A router's operating points: each decision rule swept over its settings.

One quality model is a family of routers, one per setting of `router.policy.choose`:
the default rule at each quality bar (lambda(bar) from the model's
`BarCalibration`), the hard floor at each min_quality, and the utility rule
(argmax q - lambda * c) at each lambda, each optionally under a latency limit
(`sweep_latency_limited`: the share of requests that met it, realised).
`router eval` (`training.evaluate`), the promotion gate (`training.gate`), the
simulator and the benchmarks take the grids and the decisions from here, so "an
operating point" means the same thing in all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.policy import BarCalibration, choose, lambda_grid

__all__ = ["DEFAULT_SWEEP_BARS", "RULES", "RULE_KEYWORDS", "RowCalibrations", "calibration_of",
           "decisions", "met_share", "sweep_bars", "sweep_floors", "sweep_lambdas",
           "sweep_latency_limited", "sweep_realised", "utility_lambdas"]

# Each decision rule by name, and the `router.policy.choose` keyword that sets it.
RULE_KEYWORDS: dict[str, str] = {"default": "bar", "floor": "min_quality",
                                 "utility": "utility_lambda"}
RULES: tuple[str, ...] = tuple(RULE_KEYWORDS.values())
# Bars a sweep of the default rule visits: every calibration point is reached by
# some bar in a 0.005 grid unless two points are closer than that in quality.
DEFAULT_SWEEP_BARS: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 201), 3))


@dataclass(frozen=True)
class RowCalibrations:
    """Several models' bar calibrations over their pooled predictions: row i of the
    swept matrices takes lambda(bar) from `calibrations[group[i]]`. For predictions
    pooled out of fold from several fitted models (cross-validation), each fold's
    rows routed with their own model's calibration, as that model would serve them."""

    calibrations: tuple[BarCalibration, ...]
    group: np.ndarray

    def lambdas_for(self, bar: float) -> np.ndarray:
        """lambda(bar), one per row."""
        per_model = np.array([c.lambda_for(bar) for c in self.calibrations])
        return per_model[np.asarray(self.group)]


def utility_lambdas(cost: np.ndarray, n: int = 60) -> list[float]:
    """The lambda grid swept for the utility rule (`router.policy.lambda_grid`)."""
    return lambda_grid(cost, n)


def calibration_of(model: Any, pred_quality: np.ndarray, pred_cost: np.ndarray,
                   notes: list[str] | None = None) -> BarCalibration:
    """The model's stored bar calibration; for a model that stores none, one fitted on
    these predictions alone (never on realised outcomes being scored), noted in `notes`."""
    calibration = BarCalibration.from_metadata(getattr(model, "metadata", None))
    if calibration is not None:
        return calibration
    if notes is not None:
        notes.append("the model stores no bar calibration: bars calibrated on the "
                     "predictions of the evaluated prompts")
    return BarCalibration.fit(pred_quality, pred_cost, source="the evaluated prompts' predictions")


def decisions(pred_quality: np.ndarray, pred_cost: np.ndarray, rule: str,
              settings: Sequence[float], *,
              calibration: BarCalibration | RowCalibrations | None = None,
              allowed: np.ndarray | None = None, latency_ms: np.ndarray | None = None,
              max_latency_ms: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """(setting, chosen model index per row) for each setting of one rule.

    `rule` is a `router.policy.choose` keyword (`RULES`): "bar" (needs the
    model's `calibration`, or `RowCalibrations`), "min_quality" or
    "utility_lambda"; `allowed`, `latency_ms` (expected, n x m) and
    `max_latency_ms` are passed through to `choose` (the models a row may be
    routed to; models expected over the limit are dropped first).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    limits = {"allowed": allowed, "latency_ms": latency_ms, "max_latency_ms": max_latency_ms}
    for value in settings:
        if rule == "bar" and isinstance(calibration, RowCalibrations):
            yield value, choose(pred_quality, pred_cost, **limits,
                                utility_lambda=calibration.lambdas_for(float(value)))
            continue
        yield value, choose(pred_quality, pred_cost, **limits, calibration=calibration,
                            **{rule: float(value)})


def sweep_latency_limited(pred_quality: np.ndarray, pred_cost: np.ndarray,
                          pred_latency: np.ndarray, quality: np.ndarray, cost: np.ndarray,
                          latency: np.ndarray, bars: Sequence[float], max_latency_ms: float,
                          calibration: BarCalibration | RowCalibrations) -> np.ndarray:
    """(bar, mean realised cost, mean realised quality, share within the limit) per bar
    of the default rule under `max_latency_ms`.

    Routes on the predictions (models expected over the limit dropped first, the
    fastest kept where none is within it); the share is realised: the chosen
    model's `latency` (the table's, n x m) at most the limit, over the rows where
    it is known.
    """
    rows = np.arange(quality.shape[0])
    out = np.empty((len(bars), 4))
    for i, (value, idx) in enumerate(decisions(
            pred_quality, pred_cost, "bar", bars, calibration=calibration,
            latency_ms=pred_latency, max_latency_ms=max_latency_ms)):
        out[i] = (value, cost[rows, idx].mean(), quality[rows, idx].mean(),
                  met_share(latency[rows, idx], max_latency_ms))
    return out


def met_share(latency: np.ndarray, max_latency_ms: float) -> float:
    """Share of the requests with a known latency that took at most the limit (NaN
    when none is known)."""
    known = np.isfinite(latency)
    return float(np.mean(latency[known] <= max_latency_ms)) if known.any() else float("nan")


def sweep_realised(pred_quality: np.ndarray, pred_cost: np.ndarray, quality: np.ndarray,
                   cost: np.ndarray, rule: str, settings: Sequence[float], *,
                   calibration: BarCalibration | RowCalibrations | None = None,
                   allowed: np.ndarray | None = None) -> np.ndarray:
    """(setting, mean realised cost, mean realised quality) per setting of one rule.

    Routes on the predictions, scores with the realised (full information)
    outcomes of the chosen models; with `allowed`, NaN outcomes of models that
    are not allowed are never read.
    """
    rows = np.arange(quality.shape[0])
    out = np.empty((len(settings), 3))
    for i, (value, idx) in enumerate(decisions(pred_quality, pred_cost, rule, settings,
                                               calibration=calibration, allowed=allowed)):
        out[i] = (value, cost[rows, idx].mean(), quality[rows, idx].mean())
    return out


def sweep_bars(pred_quality: np.ndarray, pred_cost: np.ndarray, quality: np.ndarray,
               cost: np.ndarray, bars: Sequence[float],
               calibration: BarCalibration | RowCalibrations, *,
               allowed: np.ndarray | None = None) -> np.ndarray:
    """(bar, mean realised cost, mean realised quality) per bar of the default rule."""
    return sweep_realised(pred_quality, pred_cost, quality, cost, "bar", bars,
                          calibration=calibration, allowed=allowed)


def sweep_floors(pred_quality: np.ndarray, pred_cost: np.ndarray, quality: np.ndarray,
                 cost: np.ndarray, floors: Sequence[float], *,
                 allowed: np.ndarray | None = None) -> np.ndarray:
    """(min_quality, mean realised cost, mean realised quality) per hard floor."""
    return sweep_realised(pred_quality, pred_cost, quality, cost, "min_quality", floors,
                          allowed=allowed)


def sweep_lambdas(pred_quality: np.ndarray, pred_cost: np.ndarray, quality: np.ndarray,
                  cost: np.ndarray, lambdas: Sequence[float], *,
                  allowed: np.ndarray | None = None) -> np.ndarray:
    """(lambda, mean realised cost, mean realised quality) per utility weight."""
    return sweep_realised(pred_quality, pred_cost, quality, cost, "utility_lambda", lambdas,
                          allowed=allowed)
