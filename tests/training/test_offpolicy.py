"""Off-policy estimators on synthetic logs whose true policy value is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from router.errors import DataError
from training.offpolicy import (
    MIN_ESS,
    LoggedBandit,
    bandit_from_table,
    direct_method,
    doubly_robust,
    estimate_all,
    ips,
    policy_actions,
)

MODELS = ("cheap", "mid", "strong")
PRICE = np.array([0.001, 0.004, 0.02])


def world(n: int, rng: np.random.Generator):
    """Contexts with a difficulty d; true success probability per model and cost per model."""
    d = rng.uniform(0, 1, n)
    mu = np.column_stack([0.9 - 0.8 * d, 0.95 - 0.5 * d, 0.97 - 0.2 * d])
    cost = PRICE * (1 + d[:, None])
    return d, mu, cost


def log_from(mu, cost, rng, *, explore: float = 0.3):
    """A logging policy that mostly picks `mid` and explores the rest; propensities logged."""
    n = len(mu)
    probs = np.tile([explore / 2, 1 - explore, explore / 2], (n, 1))
    action = np.array([rng.choice(3, p=p) for p in probs])
    rows = np.arange(n)
    quality = (rng.uniform(size=n) < mu[rows, action]).astype(float)
    return LoggedBandit(MODELS, action, probs[rows, action], quality, cost[rows, action])


def target_policy(mu, cost, bar=0.7):
    return policy_actions(mu, cost, min_quality=bar)


def test_ips_and_dr_recover_the_true_value_of_a_policy_never_run() -> None:
    rng = np.random.default_rng(0)
    _, mu, cost = world(20_000, rng)
    log = log_from(mu, cost, rng)
    target = target_policy(mu, cost)
    rows = np.arange(len(mu))
    true_q, true_c = mu[rows, target].mean(), cost[rows, target].mean()
    # A deliberately biased reward model: +0.15 on every quality, cost 30% low.
    reward_q = np.clip(mu + 0.15, 0, 1)
    reward_c = cost * 0.7

    est_ips = ips(log, target)
    est_dr = doubly_robust(log, target, reward_q, reward_c)
    est_dm = direct_method(log, target, reward_q, reward_c)

    assert abs(est_ips.quality - true_q) < 4 * est_ips.quality_se
    assert abs(est_dr.quality - true_q) < 4 * est_dr.quality_se
    assert abs(est_dr.quality - true_q) < 0.02
    assert abs(est_dr.cost_usd - true_c) / true_c < 0.03
    # The reward model alone is off by its bias; DR corrects it.
    assert est_dm.quality - true_q > 0.1
    assert est_dm.cost_usd < 0.8 * true_c


def test_dr_is_unbiased_over_repeated_logs_and_tighter_than_ips_with_a_good_model() -> None:
    rng = np.random.default_rng(1)
    errors_dr, errors_ips = [], []
    for _ in range(40):
        _, mu, cost = world(2_000, rng)
        log = log_from(mu, cost, rng)
        target = target_policy(mu, cost)
        truth = mu[np.arange(len(mu)), target].mean()
        noisy_model = np.clip(mu + rng.normal(0, 0.05, mu.shape), 0, 1)
        errors_dr.append(doubly_robust(log, target, noisy_model, cost).quality - truth)
        errors_ips.append(ips(log, target).quality - truth)
    errors_dr, errors_ips = np.array(errors_dr), np.array(errors_ips)
    # Mean error within 3 standard errors of zero: no systematic bias.
    assert abs(errors_dr.mean()) < 3 * errors_dr.std(ddof=1) / np.sqrt(len(errors_dr))
    assert errors_dr.std() < 0.7 * errors_ips.std()


def test_a_better_policy_gets_a_higher_estimate_than_a_worse_one() -> None:
    rng = np.random.default_rng(2)
    _, mu, cost = world(10_000, rng)
    log = log_from(mu, cost, rng)
    good = target_policy(mu, cost)
    # The same rule on shuffled predictions: routes hard prompts to the cheap model.
    shuffled = mu[rng.permutation(len(mu))]
    bad = target_policy(shuffled, cost)
    reward = np.full(mu.shape, mu.mean())
    assert (doubly_robust(log, good, reward, cost).quality
            > doubly_robust(log, bad, reward, cost).quality + 0.03)


def test_weights_count_only_matching_rows_and_clipping_caps_them() -> None:
    log = LoggedBandit(MODELS, np.array([0, 1, 2, -1]), np.array([0.1, 0.5, 0.5, 1.0]),
                       np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.01, 0.02, 0.03, 0.04]))
    target = np.array([0, 0, 2, 1])
    est = ips(log, target)
    assert est.matched == 2
    # A quality is in [0, 1]: the raw IPS value (10 * 1 + 2 * 1) / 4 is kept aside.
    assert est.quality == 1.0 and est.quality_unclipped == pytest.approx(3.0)
    assert est.format() == "IPS 1.0000 +- 2.3805 (clipped from 3.0000)"
    clipped = ips(log, target, clip=5.0)
    assert clipped.quality_unclipped == pytest.approx((5 * 1 + 2 * 1) / 4)
    snips = ips(log, target, self_normalize=True)
    assert snips.quality == pytest.approx(1.0) and snips.quality_unclipped is None
    # Weights 10, 0, 2, 0: ESS = 12^2 / (10^2 + 2^2), far too few rows to judge by.
    assert est.ess == pytest.approx(144 / 104) and est.too_small
    assert est.to_dict()["too_small"] is True


def test_standard_errors_match_the_spread_over_repeated_logs() -> None:
    """The reported +- SE is what a user reads: it must match how much the estimate
    actually moves from one log to the next (within 25%), for every estimator."""
    rng = np.random.default_rng(5)
    values: dict[str, list[float]] = {"ips": [], "snips": [], "dr": []}
    reported: dict[str, list[float]] = {"ips": [], "snips": [], "dr": []}
    _, mu, cost = world(1_500, rng)
    target = target_policy(mu, cost)
    model = np.clip(mu + rng.normal(0, 0.05, mu.shape), 0, 1)
    for _ in range(150):
        log = log_from(mu, cost, rng)
        for name, est in estimate_all(log, target, model, cost).items():
            values[name].append(est.quality)
            reported[name].append(est.quality_se)
            assert est.ess > MIN_ESS and not est.too_small
    for name in values:
        spread = np.std(values[name], ddof=1)
        assert np.mean(reported[name]) == pytest.approx(spread, rel=0.25), name


def test_a_policy_the_log_rarely_shows_is_too_small_to_judge() -> None:
    rng = np.random.default_rng(6)
    _, mu, cost = world(400, rng)
    log = log_from(mu, cost, rng, explore=0.05)  # "strong" logged 2.5% of the time
    always_strong = np.full(len(mu), 2)
    estimates = estimate_all(log, always_strong, mu, cost)
    assert all(e.too_small for e in estimates.values())
    assert estimates["dr"].ess < MIN_ESS <= estimate_all(log, np.full(len(mu), 1), mu,
                                                         cost)["dr"].ess


def test_bad_propensity_is_refused_with_the_row() -> None:
    with pytest.raises(DataError, match=r"logged row 1: propensity 0.0 is not in \(0, 1\]"):
        LoggedBandit(MODELS, np.array([0, 1]), np.array([0.5, 0.0]),
                     np.array([1.0, 1.0]), np.array([0.1, 0.1]))


def test_bandit_from_table_maps_models_and_names_missing_columns() -> None:
    table = pd.DataFrame({"model": ["mid", "other"], "propensity": [0.9, 0.1],
                          "quality": [1.0, 0.0], "cost_usd": [0.01, 0.02]})
    log = bandit_from_table(table, MODELS)
    assert log.action.tolist() == [1, -1]
    with pytest.raises(DataError, match=r"last week: missing column\(s\) propensity"):
        bandit_from_table(table.drop(columns="propensity"), MODELS, where="last week")


def test_a_policy_is_evaluated_at_each_logged_requests_own_setting() -> None:
    """As served: the request's lambda, else its bar, else the model's default bar."""
    from training.offpolicy import logged_actions

    class Model:
        metadata = {"default_bar": 0.3}

    quality = np.tile([0.5, 0.9], (4, 1))
    cost = np.tile([0.001, 0.01], (4, 1))
    table = pd.DataFrame({"utility_lambda": [0.0, 1000.0, np.nan, np.nan],
                          "quality_bar": [np.nan, np.nan, np.nan, 0.95]})
    assert logged_actions(Model(), table, quality, cost).tolist() == [1, 0, 0, 1]
    assert logged_actions(Model(), table, quality, cost, bar=0.95).tolist() == [1, 1, 1, 1]
