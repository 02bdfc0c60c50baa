"""Off-policy estimates: how good and how expensive would a policy have been on logged traffic.

A logged row is one served request: its context, the model the logging policy
served (`action`), the probability with which it chose it (`propensity`, logged
with every decision), and the observed quality and cost of that one model. We
never see what another model would have answered, so the value of a different
policy is estimated by reweighting:

* IPS (inverse propensity scoring): mean of pi(a|x) / p(a|x) * r. Unbiased when
  the logged propensities are right and positive wherever the target acts;
  high variance when propensities are small.
* SNIPS (self-normalised IPS): the same weighted mean divided by the mean
  weight instead of n. Slightly biased, but bounded by the observed rewards
  and much steadier when the weights are uneven.
* DR (doubly robust): a reward model's prediction for the target's choice plus
  the IPS-weighted residual of the reward model on the logged choice. Unbiased
  when *either* the propensities or the reward model are right (here the
  propensities are logged, so always), with much lower variance than IPS when
  the reward model is decent. This is what the champion/challenger gate uses.

Every `Estimate` carries standard errors (IPS and DR: of a mean of n terms;
SNIPS: the delta method for a ratio) and the effective sample size of the
importance weights, ESS = (sum w)^2 / sum w^2: how many logged rows the
estimate really rests on (n when the target agrees with every logged choice,
small when it agrees with a few rare ones). Below `MIN_ESS` (30) the estimate
is flagged too small to judge: a handful of rows decide it, and the normal
approximation behind "estimate +- 2 SE" (the usual n >= 30 rule of thumb for a
mean) no longer holds. Quality estimates are clipped to [0, 1], the range of a
quality (IPS can leave it when a few large weights meet good outcomes); the
unclipped value is kept in `quality_unclipped`.

Everything here is numpy on arrays; `policy_actions`, `logged_actions` and
`evaluate_policy` are the thin adapters from a `QualityModel` and a quality bar
(through `router.policy.choose`, so the evaluated rule is exactly the served
rule).
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
    "MIN_ESS",
    "LoggedBandit",
    "Estimate",
    "estimate_all",
    "ips",
    "doubly_robust",
    "direct_method",
    "target_probabilities",
    "policy_actions",
    "bandit_from_table",
    "logged_actions",
    "reward_matrices",
    "evaluate_policy",
]


# Effective sample size below which an estimate is "too small to judge" (see above).
MIN_ESS = 30.0


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
    model; `ess` the effective sample size of the importance weights (below
    `MIN_ESS` the estimate is `too_small` to judge). `quality` is clipped to
    [0, 1]; `quality_unclipped` is the raw estimate when clipping changed it.
    """

    method: str
    quality: float
    quality_se: float
    cost_usd: float
    cost_se: float
    n: int
    matched: int
    ess: float
    quality_unclipped: float | None = None

    @classmethod
    def of(cls, method: str, quality: float, quality_se: float, cost_usd: float,
           cost_se: float, n: int, matched: int, ess: float) -> Estimate:
        """An estimate with its quality clipped to [0, 1] (the raw value kept if moved)."""
        clipped = min(max(quality, 0.0), 1.0) if np.isfinite(quality) else quality
        return cls(method, clipped, quality_se, cost_usd, cost_se, n, matched, ess,
                   quality if clipped != quality else None)

    @property
    def too_small(self) -> bool:
        """Too few effective rows to judge by (`MIN_ESS`)."""
        return not self.ess >= MIN_ESS

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "too_small": self.too_small}

    def format(self) -> str:
        """'DR 0.8150 +- 0.0120', the clipping noted."""
        raw = ("" if self.quality_unclipped is None
               else f" (clipped from {self.quality_unclipped:.4f})")
        return f"{self.method.upper()} {self.quality:.4f} +- {self.quality_se:.4f}{raw}"


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


def _ratio_se(w: np.ndarray, values: np.ndarray, estimate: float) -> float:
    """Delta-method standard error of sum(w * v) / sum(w)."""
    total = w.sum()
    if len(w) < 2 or total <= 0:
        return float("nan")
    return float(np.sqrt(np.sum((w * (values - estimate)) ** 2)) / total)


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
    matched, ess = int((w > 0).sum()), _ess(w)
    if self_normalize:
        if w.sum() <= 0:
            nan = float("nan")
            return Estimate.of("snips", nan, nan, nan, nan, len(log), matched, ess)
        q = float(np.sum(w * log.quality) / w.sum())
        c = float(np.sum(w * log.cost_usd) / w.sum())
        return Estimate.of("snips", q, _ratio_se(w, log.quality, q), c,
                           _ratio_se(w, log.cost_usd, c), len(log), matched, ess)
    q, q_se = _mean_se(w * log.quality)
    c, c_se = _mean_se(w * log.cost_usd)
    return Estimate.of("ips", q, q_se, c, c_se, len(log), matched, ess)


def direct_method(log: LoggedBandit, target: np.ndarray, reward_quality: np.ndarray,
                  reward_cost: np.ndarray) -> Estimate:
    """The reward model's own opinion of the target policy (biased if the model is)."""
    probs = target_probabilities(target, len(log.models))
    q, q_se = _mean_se((probs * reward_quality).sum(axis=1))
    c, c_se = _mean_se((probs * reward_cost).sum(axis=1))
    w = _weights(log, probs, None)
    return Estimate.of("dm", q, q_se, c, c_se, len(log), int((w > 0).sum()), _ess(w))


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
    return Estimate.of("dr", q, q_se, c, c_se, n, int((w > 0).sum()), _ess(w))


def estimate_all(log: LoggedBandit, target: np.ndarray, reward_quality: np.ndarray,
                 reward_cost: np.ndarray, *, clip: float | None = None
                 ) -> dict[str, Estimate]:
    """IPS, SNIPS and DR estimates of one target policy: {"ips": ..., "snips": ...,
    "dr": ...}. Three estimators that fail differently, side by side: when they
    disagree by more than their standard errors, trust none of them."""
    return {"ips": ips(log, target, clip=clip),
            "snips": ips(log, target, clip=clip, self_normalize=True),
            "dr": doubly_robust(log, target, reward_quality, reward_cost, clip=clip)}


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


def reward_matrices(pred: Any, reward_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """The reward model's (quality, cost) predictions in `pred`'s model order.

    A reward model that does not know a model says nothing about it: the
    evaluated model's own prediction fills that column.
    """
    models = list(pred.models)
    known = list(reward_pred.models)
    rq = np.column_stack([reward_pred.quality[:, known.index(m)] if m in known
                          else pred.quality[:, j] for j, m in enumerate(models)])
    rc = np.column_stack([reward_pred.cost_usd[:, known.index(m)] if m in known
                          else pred.cost_usd[:, j] for j, m in enumerate(models)])
    return rq, rc


def logged_actions(model: Any, table: pd.DataFrame, quality: np.ndarray, cost: np.ndarray,
                   *, bar: float | None = None) -> np.ndarray:
    """What `model` would have served for each logged row (predictions `quality`,
    `cost`): at `bar` when given; else at the row's own setting, as the router
    serves it: its `utility_lambda` where logged, else its `quality_bar`, else the
    model's default bar (`router.service.FALLBACK_DEFAULT_BAR` for a model that
    stores none). Bars mean what the model's bar calibration says
    (`training.sweep.calibration_of`).
    """
    from router.service import FALLBACK_DEFAULT_BAR
    from training.sweep import calibration_of

    n = len(table)
    calibration = calibration_of(model, quality, cost)
    if bar is not None:
        return choose(quality, cost, bar=bar, calibration=calibration)

    def column(name: str) -> np.ndarray:
        if name not in table:
            return np.full(n, np.nan)
        return pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)

    lam = column("utility_lambda")
    default = (getattr(model, "metadata", None) or {}).get("default_bar", FALLBACK_DEFAULT_BAR)
    bars = np.where(np.isfinite(column("quality_bar")), column("quality_bar"), float(default))
    by_lambda = np.isfinite(lam)
    actions = np.zeros(n, dtype=int)
    if (~by_lambda).any():
        actions[~by_lambda] = choose(quality[~by_lambda], cost[~by_lambda],
                                     bar=bars[~by_lambda], calibration=calibration)
    if by_lambda.any():
        actions[by_lambda] = choose(quality[by_lambda], cost[by_lambda],
                                    utility_lambda=lam[by_lambda])
    return actions


def evaluate_policy(model: Any, table: pd.DataFrame, *, bar: float | None = None,
                    reward_model: Any | None = None, clip: float | None = None,
                    conversations: Sequence[Any] | None = None) -> dict[str, Estimate]:
    """IPS, SNIPS and DR estimates of `model`'s decisions on a logged table.

    `model` is a fitted `QualityModel` (anything with `.predict(convs)` returning
    `models`, `quality`, `cost_usd`). Its decisions are taken at `bar`, or at
    each row's logged setting (`logged_actions`: what the caller asked for).
    `reward_model` (default: `model`) supplies the DR reward predictions; pass
    one shared model when comparing policies so their difference is not
    blurred by two reward models.
    """
    if conversations is None:
        from router.conversation import parse_conversation

        conversations = [parse_conversation(m, where=f"logged row {i}")
                         for i, m in enumerate(table["messages"])]
    pred = model.predict(conversations)
    actions = logged_actions(model, table, pred.quality, pred.cost_usd, bar=bar)
    log = bandit_from_table(table, list(pred.models))
    if reward_model is None or reward_model is model:
        rq, rc = pred.quality, pred.cost_usd
    else:
        rq, rc = reward_matrices(pred, reward_model.predict(conversations))
    return estimate_all(log, actions, rq, rc, clip=clip)
