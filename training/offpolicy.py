"""Off-policy estimates: how good and how expensive would a policy have been on logged traffic.

A logged row is one served request: its context, the model the logging policy
served (`action`), the probability with which it chose it (`propensity`, logged
with every decision), and the observed quality and cost of that one model. We
never see what another model would have answered, so the value of a different
policy is estimated by reweighting:

* IPS (inverse propensity scoring): mean of pi(a|x) / p(a|x) * r. Unbiased when
  the logged propensities are right and positive wherever the target acts;
  high variance when propensities are small.
* DR (doubly robust): a reward model's prediction for the target's choice plus
  the IPS-weighted residual of the reward model on the logged choice. Unbiased
  when *either* the propensities or the reward model are right (here the
  propensities are logged, so always), with much lower variance than IPS when
  the reward model is decent. This is what the champion/challenger gate uses.

Everything here is numpy on arrays; `policy_actions` and `evaluate_policy` are
the thin adapters from a `QualityModel` and a quality bar (through
`router.policy.choose`, so the evaluated rule is exactly the served rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from router.errors import DataError
from router.policy import BarCalibration, choose

__all__ = [
    "LoggedBandit",
    "Estimate",
    "ips",
    "doubly_robust",
    "direct_method",
    "target_probabilities",
    "policy_actions",
    "bandit_from_table",
    "evaluate_policy",
]


@dataclass(frozen=True)
class LoggedBandit:
    """Logged decisions, aligned arrays of length n over a fixed model list.

    `action[i]` indexes `models`, or is -1 when the served model is not one the
    evaluated policy can choose (such rows only count through the reward model).
    """

    models: tuple[str, ...]
    action: np.ndarray
    propensity: np.ndarray
    quality: np.ndarray
    cost_usd: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.action)
        for name in ("propensity", "quality", "cost_usd"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"LoggedBandit.{name} has {len(getattr(self, name))} rows, "
                                 f"action has {n}")
        bad = ~((self.propensity > 0) & (self.propensity <= 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = float(self.propensity[i])
            raise DataError(f"logged row {i}: propensity {value!r} is not in (0, 1]",
                            hint="every logged decision must record the probability with "
                                 "which its model was chosen")

    def __len__(self) -> int:
        return len(self.action)


@dataclass(frozen=True)
class Estimate:
    """A policy's estimated mean quality and cost per request, with standard errors.

    `matched` is how many logged rows the policy would have served with the same
    model; `ess` the effective sample size of the importance weights (small means
    the estimate rests on few rows and should not be trusted).
    """

    method: str
    quality: float
    quality_se: float
    cost_usd: float
    cost_se: float
    n: int
    matched: int
    ess: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def target_probabilities(target: np.ndarray, n_models: int) -> np.ndarray:
    """The target policy as an n x m probability matrix (from actions or probabilities)."""
    target = np.asarray(target)
    if target.ndim == 2:
        if target.shape[1] != n_models:
            raise ValueError(f"target has {target.shape[1]} columns, expected {n_models}")
        return target.astype(np.float64)
    probs = np.zeros((len(target), n_models))
    probs[np.arange(len(target)), target.astype(int)] = 1.0
    return probs


def _weights(log: LoggedBandit, probs: np.ndarray, clip: float | None) -> np.ndarray:
    valid = log.action >= 0
    pi_logged = np.where(valid, probs[np.arange(len(log)), np.where(valid, log.action, 0)], 0.0)
    w = pi_logged / log.propensity
    return np.minimum(w, clip) if clip is not None else w


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0


def _ess(w: np.ndarray) -> float:
    total = w.sum()
    return float(total * total / (w * w).sum()) if total > 0 else 0.0


def ips(log: LoggedBandit, target: np.ndarray, *, clip: float | None = None,
        self_normalize: bool = False) -> Estimate:
    """Inverse propensity estimate of the target policy's mean quality and cost.

    `clip` caps the weights (less variance, some bias); `self_normalize` divides
    by the mean weight instead of n (SNIPS: bounded, slightly biased).
    """
    probs = target_probabilities(target, len(log.models))
    w = _weights(log, probs, clip)
    scale = w.mean() if self_normalize and w.mean() > 0 else 1.0
    q, q_se = _mean_se(w * log.quality / scale)
    c, c_se = _mean_se(w * log.cost_usd / scale)
    return Estimate("snips" if self_normalize else "ips", q, q_se, c, c_se, len(log),
                    int((w > 0).sum()), _ess(w))


def direct_method(log: LoggedBandit, target: np.ndarray, reward_quality: np.ndarray,
                  reward_cost: np.ndarray) -> Estimate:
    """The reward model's own opinion of the target policy (biased if the model is)."""
    probs = target_probabilities(target, len(log.models))
    q, q_se = _mean_se((probs * reward_quality).sum(axis=1))
    c, c_se = _mean_se((probs * reward_cost).sum(axis=1))
    w = _weights(log, probs, None)
    return Estimate("dm", q, q_se, c, c_se, len(log), int((w > 0).sum()), _ess(w))


def doubly_robust(log: LoggedBandit, target: np.ndarray, reward_quality: np.ndarray,
                  reward_cost: np.ndarray, *, clip: float | None = None) -> Estimate:
    """Doubly robust estimate: reward model for the target's choice + weighted residual.

    `reward_quality` / `reward_cost` are n x m predictions of every model's
    quality and cost for every logged context (any reasonable model; the
    logged propensities keep the estimate unbiased even when it is wrong).
    """
    n, m = len(log), len(log.models)
    reward_quality = np.asarray(reward_quality, dtype=np.float64)
    reward_cost = np.asarray(reward_cost, dtype=np.float64)
    if reward_quality.shape != (n, m) or reward_cost.shape != (n, m):
        raise ValueError(f"reward matrices must be {(n, m)}, got {reward_quality.shape} "
                         f"and {reward_cost.shape}")
    probs = target_probabilities(target, m)
    w = _weights(log, probs, clip)
    rows = np.arange(n)
    logged = np.where(log.action >= 0, log.action, 0)
    q_terms = (probs * reward_quality).sum(axis=1) + w * (
        log.quality - reward_quality[rows, logged])
    c_terms = (probs * reward_cost).sum(axis=1) + w * (log.cost_usd - reward_cost[rows, logged])
    q, q_se = _mean_se(q_terms)
    c, c_se = _mean_se(c_terms)
    return Estimate("dr", q, q_se, c, c_se, n, int((w > 0).sum()), _ess(w))


def policy_actions(quality: np.ndarray, cost: np.ndarray, *, bar: float | np.ndarray | None = None,
                   calibration: BarCalibration | None = None,
                   min_quality: float | np.ndarray | None = None,
                   utility_lambda: float | None = None) -> np.ndarray:
    """The served decision rule applied to predicted matrices: one model index per row."""
    return choose(quality, cost, bar=bar, calibration=calibration, min_quality=min_quality,
                  utility_lambda=utility_lambda)


def bandit_from_table(table: pd.DataFrame, models: Sequence[str], *,
                      where: str = "logged table") -> LoggedBandit:
    """A `LoggedBandit` from a logged table (one row per served request).

    Needs `model` (the served model), `propensity`, `quality`, `cost_usd`.
    """
    missing = [c for c in ("model", "propensity", "quality", "cost_usd") if c not in table]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}",
                        hint="off-policy estimates need the served model, its propensity, "
                             "the observed quality and cost of every logged request")
    index = {name: i for i, name in enumerate(models)}
    action = np.array([index.get(str(name), -1) for name in table["model"]], dtype=int)
    return LoggedBandit(
        models=tuple(models),
        action=action,
        propensity=table["propensity"].to_numpy(dtype=np.float64),
        quality=table["quality"].to_numpy(dtype=np.float64),
        cost_usd=table["cost_usd"].to_numpy(dtype=np.float64),
    )


def evaluate_policy(model: Any, table: pd.DataFrame, *, bar: float | None = None,
                    reward_model: Any | None = None, clip: float | None = None,
                    conversations: Sequence[Any] | None = None) -> dict[str, Estimate]:
    """IPS, SNIPS and DR estimates of `model` + bar's decisions on a logged table.

    `model` is a fitted `QualityModel` (anything with `.predict(convs)` returning
    `models`, `quality`, `cost_usd`). `bar` defaults to each row's logged
    `quality_bar` (what the caller asked for). `reward_model` (default: `model`)
    supplies the DR reward predictions; pass one shared model when comparing
    policies so their difference is not blurred by two reward models.
    """
    if conversations is None:
        from router.conversation import parse_conversation

        conversations = [parse_conversation(m, where=f"logged row {i}")
                         for i, m in enumerate(table["messages"])]
    pred = model.predict(conversations)
    models = list(pred.models)
    if bar is None:
        if "quality_bar" not in table:
            raise DataError("logged table: no quality_bar column and no bar given",
                            hint="pass bar=0.7 (or --bar) to evaluate at one bar")
        bars: float | np.ndarray = table["quality_bar"].to_numpy(dtype=np.float64)
    else:
        bars = bar
    actions = policy_actions(pred.quality, pred.cost_usd, bar=bars,
                             calibration=BarCalibration.from_metadata(
                                 getattr(model, "metadata", None)))
    log = bandit_from_table(table, models)
    if reward_model is None or reward_model is model:
        rq, rc = pred.quality, pred.cost_usd
    else:
        rpred = reward_model.predict(conversations)
        order = [list(rpred.models).index(m) if m in rpred.models else -1 for m in models]
        if min(order) < 0:
            # A reward model that does not know a model says nothing about it: use the
            # evaluated model's own prediction for those columns.
            rq = np.where(np.array(order) >= 0, rpred.quality[:, order], pred.quality)
            rc = np.where(np.array(order) >= 0, rpred.cost_usd[:, order], pred.cost_usd)
        else:
            rq, rc = rpred.quality[:, order], rpred.cost_usd[:, order]
    return {
        "ips": ips(log, actions, clip=clip),
        "snips": ips(log, actions, clip=clip, self_normalize=True),
        "dr": doubly_robust(log, actions, rq, rc, clip=clip),
    }
