import numpy as np
import pytest

from router.errors import PolicyError
from router.policy import choose, decide

MODELS = ["cheap", "mid", "premium"]
COST = [0.001, 0.005, 0.030]


def test_cheapest_model_meeting_the_bar_wins():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, bar=0.8)
    assert decision.model == "mid"
    assert decision.met_bar
    assert decision.expected_cost_usd == pytest.approx(0.005)


def test_low_bar_takes_the_cheapest_model():
    assert decide(MODELS, [0.62, 0.81, 0.93], COST, bar=0.5).model == "cheap"


def test_unreachable_bar_falls_back_to_the_best_model():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, bar=0.99)
    assert decision.model == "premium"
    assert not decision.met_bar


def test_best_quality_tie_goes_to_the_cheaper_model():
    assert decide(MODELS, [0.5, 0.9, 0.9], COST, bar=0.95).model == "mid"


def test_bar_is_inclusive():
    assert decide(MODELS, [0.8, 0.9, 0.95], COST, bar=0.8).model == "cheap"


def test_utility_mode_trades_quality_for_cost():
    quality = [0.70, 0.80, 0.95]
    # lambda=10 per USD: utilities 0.69, 0.75, 0.65 -> mid
    assert decide(MODELS, quality, COST, utility_lambda=10).model == "mid"
    # a huge lambda makes cost dominate
    assert decide(MODELS, quality, COST, utility_lambda=1e4).model == "cheap"
    # lambda=0 is "best quality at any price"
    assert decide(MODELS, quality, COST, utility_lambda=0).model == "premium"


def test_max_cost_removes_expensive_candidates():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, bar=0.9, max_cost_usd=0.01)
    # premium is the only one meeting 0.9 but is over budget: the best affordable wins
    assert decision.model == "mid"


def test_max_cost_below_every_model_picks_the_cheapest():
    assert decide(MODELS, [0.62, 0.81, 0.93], COST, bar=0.9, max_cost_usd=1e-6).model == "cheap"


def test_allowed_models_restrict_the_choice_and_the_candidates():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, bar=0.5, allowed_models=["mid", "premium"])
    assert decision.model == "mid"
    assert [c.model for c in decision.candidates] == ["mid", "premium"]


def test_every_candidate_is_reported_with_its_numbers():
    decision = decide(MODELS, [0.62, 0.81, 0.93], COST, bar=0.8)
    assert [(c.model, c.expected_quality, c.expected_cost_usd) for c in decision.candidates] == [
        ("cheap", 0.62, 0.001), ("mid", 0.81, 0.005), ("premium", 0.93, 0.030)]


@pytest.mark.parametrize("bar", [-0.1, 1.5, float("nan"), "0.8", True])
def test_bar_outside_unit_interval_is_refused(bar):
    with pytest.raises(PolicyError, match="quality_bar must be a number in \\[0, 1\\]"):
        decide(MODELS, [0.5, 0.6, 0.7], COST, bar=bar)


def test_unknown_allowed_model_is_named():
    with pytest.raises(PolicyError, match="unknown model\\(s\\) in models: gpt-9"):
        decide(MODELS, [0.5, 0.6, 0.7], COST, bar=0.5, allowed_models=["gpt-9"])


def test_non_positive_budget_is_refused():
    with pytest.raises(PolicyError, match="max_cost_usd must be positive"):
        decide(MODELS, [0.5, 0.6, 0.7], COST, bar=0.5, max_cost_usd=0)


def test_choose_vectorised_matches_per_row_decisions():
    rng = np.random.default_rng(0)
    quality = rng.uniform(size=(500, 3))
    cost = np.tile(COST, (500, 1))
    bars = rng.uniform(size=500)
    batch = choose(quality, cost, bar=bars)
    single = [MODELS.index(decide(MODELS, q, c, bar=float(b)).model)
              for q, c, b in zip(quality, cost, bars, strict=True)]
    assert batch.tolist() == single


def test_choose_needs_exactly_one_rule():
    with pytest.raises(ValueError, match="exactly one"):
        choose(np.ones((1, 2)), np.ones((1, 2)))
