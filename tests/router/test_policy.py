from typing import Any

import numpy as np
import pytest

from router.errors import ArtifactError, PolicyError
from router.policy import (
    BarCalibration,
    choose,
    decide,
    validate_max_latency,
    within_latency,
)

MODELS = ["cheap", "mid", "premium"]
COST = [0.001, 0.005, 0.030]


def test_floor_takes_the_cheapest_model_meeting_it():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, min_quality=0.8)
    assert decision.model == "mid"
    assert decision.met_bar
    assert decision.expected_cost_usd == pytest.approx(0.005)


def test_low_floor_takes_the_cheapest_model():
    assert decide(MODELS, [0.62, 0.81, 0.93], COST, min_quality=0.5).model == "cheap"


def test_unreachable_floor_falls_back_to_the_best_model():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, min_quality=0.99)
    assert decision.model == "premium"
    assert not decision.met_bar


def test_best_quality_tie_goes_to_the_cheaper_model():
    assert decide(MODELS, [0.5, 0.9, 0.9], COST, min_quality=0.95).model == "mid"


def test_floor_is_inclusive():
    assert decide(MODELS, [0.8, 0.9, 0.95], COST, min_quality=0.8).model == "cheap"


def test_utility_mode_trades_quality_for_cost():
    quality = [0.70, 0.80, 0.95]
    # lambda=10 per USD: utilities 0.69, 0.75, 0.65 -> mid
    assert decide(MODELS, quality, COST, utility_lambda=10).model == "mid"
    # a huge lambda makes cost dominate
    assert decide(MODELS, quality, COST, utility_lambda=1e4).model == "cheap"
    # lambda=0 is "best quality at any price"
    assert decide(MODELS, quality, COST, utility_lambda=0).model == "premium"


def test_max_cost_removes_expensive_candidates():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, min_quality=0.9, max_cost_usd=0.01)
    # premium is the only one meeting 0.9 but is over budget: the best affordable wins
    assert decision.model == "mid"


def test_max_cost_below_every_model_picks_the_cheapest():
    assert decide(MODELS, [0.62, 0.81, 0.93], COST, min_quality=0.9,
                  max_cost_usd=1e-6).model == "cheap"


def test_allowed_models_restrict_the_choice_and_the_candidates():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, min_quality=0.5,
                      allowed_models=["mid", "premium"])
    assert decision.model == "mid"
    assert [c.model for c in decision.candidates] == ["mid", "premium"]


def test_every_candidate_is_reported_with_its_numbers():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, min_quality=0.8)
    assert [(c.model, c.expected_quality, c.expected_cost_usd) for c in decision.candidates] == [
        ("cheap", 0.62, 0.001), ("mid", 0.81, 0.005), ("premium", 0.93, 0.030)]


@pytest.mark.parametrize("bar", [-0.1, 1.5, float("nan"), "0.8", True])
def test_floor_outside_unit_interval_is_refused(bar):
    with pytest.raises(PolicyError, match="min_quality must be a number in \\[0, 1\\]"):
        decide(MODELS, [0.5, 0.6, 0.7], COST, min_quality=bar)


def test_unknown_allowed_model_is_named():
    with pytest.raises(PolicyError, match="unknown model\\(s\\) in models: gpt-9"):
        decide(MODELS, [0.5, 0.6, 0.7], COST, min_quality=0.5, allowed_models=["gpt-9"])


def test_non_positive_budget_is_refused():
    with pytest.raises(PolicyError, match="max_cost_usd must be positive"):
        decide(MODELS, [0.5, 0.6, 0.7], COST, min_quality=0.5, max_cost_usd=0)


def test_choose_vectorised_matches_per_row_decisions():
    rng = np.random.default_rng(0)
    quality = rng.uniform(size=(500, 3))
    cost = np.tile(COST, (500, 1))
    floors = rng.uniform(size=500)
    batch = choose(quality, cost, min_quality=floors)
    single = [MODELS.index(decide(MODELS, q, c, min_quality=float(b)).model)
              for q, c, b in zip(quality, cost, floors, strict=True)]
    assert batch.tolist() == single
    calibration = BarCalibration.fit(quality, cost)
    bars = rng.uniform(size=500)
    batch = choose(quality, cost, bar=bars, calibration=calibration)
    single = [MODELS.index(decide(MODELS, q, c, bar=float(b), calibration=calibration).model)
              for q, c, b in zip(quality, cost, bars, strict=True)]
    assert batch.tolist() == single


def test_choose_needs_exactly_one_rule():
    with pytest.raises(ValueError, match="exactly one"):
        choose(np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(PolicyError, match="give one of quality_bar, min_quality"):
        decide(MODELS, [0.5, 0.6, 0.7], COST, bar=0.5, min_quality=0.5,
               calibration=BarCalibration((0.6,), (0.001,), (1.0,)))


# -- the default rule: a bar is a target mean quality --------------------------------

def _traffic(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Easy prompts every model answers; hard ones only the dearer models answer."""
    rng = np.random.default_rng(seed)
    hard = rng.uniform(size=n) < 0.4
    quality = np.where(hard[:, None], [0.2, 0.75, 0.8], [0.9, 0.92, 0.95])
    quality = np.clip(quality + rng.normal(0, 0.05, size=(n, 3)), 0, 1)
    return quality, np.tile(COST, (n, 1))


def test_a_bar_is_reached_on_average_at_the_least_cost():
    quality, cost = _traffic()
    calibration = BarCalibration.fit(quality, cost, quality, cost)
    rows = np.arange(len(quality))
    for bar in (0.7, 0.8, 0.85):
        chosen = choose(quality, cost, bar=bar, calibration=calibration)
        assert quality[rows, chosen].mean() >= bar - 1e-9
        # The least-cost way there, up to the calibration grid's step: no lambda of a
        # finer sweep reaching the bar is more than 1% cheaper.
        cheaper = [cost[rows, choose(quality, cost, utility_lambda=lam)].mean()
                   for lam in np.geomspace(1e-2, 1e5, 1000)
                   if quality[rows, choose(quality, cost, utility_lambda=lam)].mean() >= bar]
        assert cost[rows, chosen].mean() <= 1.01 * min(cheaper)


def test_a_higher_bar_never_lowers_mean_quality_or_mean_cost():
    quality, cost = _traffic(seed=1)
    calibration = BarCalibration.fit(quality, cost, quality, cost)
    rows = np.arange(len(quality))
    means = []
    for bar in np.linspace(0, 1, 101):
        chosen = choose(quality, cost, bar=bar, calibration=calibration)
        means.append((quality[rows, chosen].mean(), cost[rows, chosen].mean()))
    q, c = np.array(means).T
    assert (np.diff(q) >= -1e-12).all() and (np.diff(c) >= -1e-12).all()
    assert q[-1] > q[0] and c[-1] > c[0]
    assert np.all(np.diff(calibration.quality) > 0) and np.all(np.diff(calibration.cost_usd) >= 0)


def test_an_unreachable_bar_does_not_buy_the_dearest_model_for_nothing():
    # premium is predicted a hair above mid at 6x the price: the floor rule buys it
    # for a bar no model clears; the default rule never buys a negligible gain at a
    # large price, whatever the bar.
    pred = np.tile([0.3, 0.600, 0.601], (50, 1))
    realised = np.tile([0.3, 0.6, 0.6], (50, 1))
    cost = np.tile(COST, (50, 1))
    calibration = BarCalibration.fit(pred, cost, realised, cost)
    assert MODELS[choose(pred, cost, min_quality=0.9)[0]] == "premium"
    assert MODELS[choose(pred, cost, bar=0.9, calibration=calibration)[0]] == "mid"
    assert decide(MODELS, pred[0], cost[0], bar=0.9, calibration=calibration).met_bar


def test_calibration_corrects_the_models_mean_error_where_outcomes_are_known():
    pred = np.tile([0.5, 0.8, 0.95], (100, 1))
    cost = np.tile(COST, (100, 1))
    realised = pred - 0.1  # the model is 0.1 too optimistic on every model
    calibration = BarCalibration.fit(pred, cost, realised, cost)
    assert calibration.quality[0] == pytest.approx(0.4)
    # Reaching a mean of 0.8 then takes premium: mid is really 0.7.
    assert MODELS[choose(pred, cost, bar=0.8, calibration=calibration)[0]] == "premium"
    assert calibration.expected_at(0.8) == pytest.approx((0.85, 0.030))
    # Without outcomes the predictions are taken at their word.
    assert BarCalibration.fit(pred, cost).expected_at(0.8) == pytest.approx((0.8, 0.005))


def test_calibration_round_trips_and_rejects_malformed_data():
    quality, cost = _traffic(seed=2)
    calibration = BarCalibration.fit(quality, cost, source="held-out prompts")
    again = BarCalibration.from_dict(calibration.to_dict())
    assert again == calibration
    assert BarCalibration.from_metadata({"bar_calibration": calibration.to_dict()}) == calibration
    assert BarCalibration.from_metadata({}) is None
    with pytest.raises(ArtifactError, match="bar calibration is malformed"):
        BarCalibration.from_dict({"quality": [0.5]})
    with pytest.raises(ArtifactError, match="rise in quality and cost"):
        BarCalibration((0.6, 0.5), (0.001, 0.002), (2.0, 1.0))


def test_a_bar_without_calibration_is_refused_with_the_fix():
    with pytest.raises(PolicyError, match="no bar calibration.*retrain"):
        decide(MODELS, [0.5, 0.6, 0.7], COST, bar=0.5)


def test_the_decision_reports_the_lambda_it_used():
    quality, cost = _traffic(seed=3)
    calibration = BarCalibration.fit(quality, cost)
    decision = decide(MODELS, quality[0], cost[0], bar=0.8, calibration=calibration)
    assert decision.utility_lambda == calibration.lambda_for(0.8)
    assert decision.quality_bar == 0.8


def test_latency_limit_excludes_slow_models_before_the_rule_runs() -> None:
    quality = np.array([[0.9, 0.7, 0.5]])
    cost = np.array([[3.0, 2.0, 1.0]])
    latency = np.array([[4000.0, 900.0, 1500.0]])
    # Without a limit lambda=0 buys the best model; a 2 s limit rules it out.
    assert choose(quality, cost, utility_lambda=0.0)[0] == 0
    assert choose(quality, cost, utility_lambda=0.0, latency_ms=latency,
                  max_latency_ms=2000.0)[0] == 1


def test_no_model_within_the_latency_limit_chooses_the_fastest_allowed() -> None:
    quality = np.array([[0.9, 0.7, 0.5], [0.9, 0.7, 0.5]])
    cost = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    latency = np.array([[4000.0, 900.0, 1500.0], [4000.0, 3000.0, 1500.0]])
    mask, none_within = within_latency(latency, 500.0)
    assert none_within.tolist() == [True, True]
    assert mask.tolist() == [[False, True, False], [False, False, True]]
    chosen = choose(quality, cost, utility_lambda=0.0, latency_ms=latency, max_latency_ms=500.0,
                    allowed=np.array([True, False, True]))
    assert chosen.tolist() == [2, 2]  # model 1 is faster in row 0 but not allowed


@pytest.mark.parametrize("bad", [0, -5.0, float("nan"), float("inf"), True, "2000"])
def test_a_bad_latency_limit_is_refused_with_its_value(bad: Any) -> None:
    with pytest.raises(PolicyError, match="max_latency_ms must be a finite number"):
        validate_max_latency(bad)


# -- decide under a latency limit (issue 12) ------------------------------------------

LATENCY = [400.0, 1500.0, 3000.0]


def test_decide_drops_models_expected_over_the_limit_and_shows_every_latency():
    open_ = decide(MODELS, [0.62, 0.81, 0.93], COST, utility_lambda=0.0, latency_ms=LATENCY)
    assert open_.model == "premium" and open_.latency_limit_met
    limited = decide(MODELS, [0.62, 0.81, 0.93], COST, utility_lambda=0.0, latency_ms=LATENCY,
                     max_latency_ms=2000)
    assert limited.model == "mid" and limited.latency_limit_met
    assert limited.latency_reason is None
    # Every allowed model stays a candidate, fast or not, with its expected latency.
    assert [(c.model, c.expected_latency_ms) for c in limited.candidates] == [
        ("cheap", 400.0), ("mid", 1500.0), ("premium", 3000.0)]


def test_decide_takes_the_fastest_and_says_so_when_none_is_within_the_limit():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, utility_lambda=0.0,
                      latency_ms=[900.0, 700.0, 3000.0], max_latency_ms=300)
    assert decision.model == "mid"
    assert not decision.latency_limit_met
    assert "max_latency_ms=300" in decision.latency_reason
    assert "mid" in decision.latency_reason and "700 ms" in decision.latency_reason


def test_decide_limit_applies_among_allowed_models_only():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, min_quality=0.9,
                      latency_ms=[100.0, 5000.0, 4000.0], max_latency_ms=200,
                      allowed_models=["mid", "premium"])
    assert decision.model == "premium" and not decision.latency_limit_met


def test_a_model_without_a_latency_estimate_is_never_within_a_limit():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, utility_lambda=0.0,
                      latency_ms=[400.0, 1500.0, float("nan")], max_latency_ms=10_000)
    assert decision.model == "mid"
    assert decision.candidates[2].expected_latency_ms is None


def test_decide_refuses_a_limit_without_latency_predictions():
    with pytest.raises(PolicyError, match="predicts no latency") as info:
        decide(MODELS, [0.62, 0.81, 0.93], COST, min_quality=0.5, max_latency_ms=1000)
    assert "latency_ms" in info.value.hint
    with pytest.raises(PolicyError, match="predicts no latency"):
        decide(MODELS, [0.62, 0.81, 0.93], COST, min_quality=0.5, max_latency_ms=1000,
               latency_ms=[float("nan")] * 3)
    with pytest.raises(PolicyError, match="max_latency_ms must be a finite number"):
        decide(MODELS, [0.62, 0.81, 0.93], COST, min_quality=0.5, max_latency_ms=-5,
               latency_ms=LATENCY)
