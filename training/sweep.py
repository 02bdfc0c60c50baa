"""A router's operating points: both decision rules swept over their settings.

One quality model is a family of routers, one per setting of `router.policy.choose`:
the threshold rule at each quality bar and the utility rule (argmax q - lambda * c)
at each lambda. A deployment may run any of them, so `router eval`
(`training.evaluate`) reads AIQ off the hull of all of them and the promotion gate
(`training.gate`) compares hulls over all of them. Both take the lambda grid and
the decisions from here, so "every operating point" means the same thing in both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from router.policy import choose

__all__ = ["RULES", "RULE_KEYWORDS", "decisions", "sweep_bars", "sweep_lambdas", "sweep_realised",
           "utility_lambdas"]

# Each decision rule by name, and the `router.policy.choose` keyword that sets it.
RULE_KEYWORDS: dict[str, str] = {"threshold": "bar", "utility": "utility_lambda"}
RULES: tuple[str, ...] = tuple(RULE_KEYWORDS.values())


def utility_lambdas(cost: np.ndarray, n: int = 60) -> list[float]:
    """0 (best quality at any price) then a geometric grid spanning the cost scale.

    `cost` is realised cost per row and model (rows x models; NaN where a model
    has no outcome); each model's scale is its mean over the rows it has.
    lambda is quality per USD: from 1e-3 / (dearest mean cost), where cost barely
    matters, to 10 / (cheapest mean cost), where only cost does. The grid depends
    on the data only, so every model swept on the same data gets the same lambdas.
    """
    cost = np.asarray(cost, dtype=np.float64)
    finite = np.isfinite(cost)
    counts = finite.sum(axis=0)
    # sum / count rather than np.nanmean: a model without any outcome is skipped,
    # not a RuntimeWarning (and on complete data it equals cost.mean(axis=0)).
    mean_cost = np.where(finite, cost, 0.0).sum(axis=0)[counts > 0] / counts[counts > 0]
    positive = mean_cost[mean_cost > 0]
    if positive.size == 0:
        return [0.0]
    low, high = 1e-3 / positive.max(), 10.0 / positive.min()
    return [0.0, *np.geomspace(low, high, n).tolist()]


def decisions(pred_quality: np.ndarray, pred_cost: np.ndarray, rule: str,
              settings: Sequence[float], *,
              allowed: np.ndarray | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """(setting, chosen model index per row) for each setting of one rule.

    `rule` is a `router.policy.choose` keyword (`RULES`): "bar" or "utility_lambda";
    `allowed` is passed through to `choose` (models a row may be routed to).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    for value in settings:
        yield value, choose(pred_quality, pred_cost, allowed=allowed, **{rule: float(value)})


def sweep_realised(pred_quality: np.ndarray, pred_cost: np.ndarray, quality: np.ndarray,
                   cost: np.ndarray, rule: str, settings: Sequence[float], *,
                   allowed: np.ndarray | None = None) -> np.ndarray:
    """(setting, mean realised cost, mean realised quality) per setting of one rule.

    Routes on the predictions, scores with the realised (full information)
    outcomes of the chosen models; with `allowed`, NaN outcomes of models that
    are not allowed are never read.
    """
    rows = np.arange(quality.shape[0])
    out = np.empty((len(settings), 3))
    for i, (value, idx) in enumerate(decisions(pred_quality, pred_cost, rule, settings,
                                               allowed=allowed)):
        out[i] = (value, cost[rows, idx].mean(), quality[rows, idx].mean())
    return out


def sweep_bars(pred_quality: np.ndarray, pred_cost: np.ndarray, quality: np.ndarray,
               cost: np.ndarray, bars: Sequence[float], *,
               allowed: np.ndarray | None = None) -> np.ndarray:
    """(bar, mean realised cost, mean realised quality) per bar, routing on predictions."""
    return sweep_realised(pred_quality, pred_cost, quality, cost, "bar", bars, allowed=allowed)


def sweep_lambdas(pred_quality: np.ndarray, pred_cost: np.ndarray, quality: np.ndarray,
                  cost: np.ndarray, lambdas: Sequence[float], *,
                  allowed: np.ndarray | None = None) -> np.ndarray:
    """(lambda, mean realised cost, mean realised quality) per utility weight."""
    return sweep_realised(pred_quality, pred_cost, quality, cost, "utility_lambda", lambdas,
                          allowed=allowed)
