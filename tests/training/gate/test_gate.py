"""The champion/challenger gate: a worse challenger is refused, a better one promoted."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from training.gate import Curve, hull_quality, quality_at_equal_cost, rules_in_use, run_gate

MODELS = ("cheap", "mid", "strong")
PRICE = np.array([0.001, 0.004, 0.02])


@dataclass
class Pred:
    models: tuple[str, ...]
    quality: np.ndarray
    cost_usd: np.ndarray


class Stub:
    """A 'quality model' answering from a fixed per-prompt table of predictions.

    Its cost prediction is `price` for every prompt (the true prices by default).
    """

    def __init__(self, by_text: dict[str, np.ndarray], price: np.ndarray = PRICE) -> None:
        self.by_text = by_text
        self.price = np.asarray(price, dtype=np.float64)

    def predict(self, convs):
        q = np.array([self.by_text[c.text] for c in convs])
        d = q[:, 0] * 0 + 1
        return Pred(MODELS, q, np.outer(d, self.price))


def world(n: int, seed: int):
    rng = np.random.default_rng(seed)
    d = rng.uniform(0, 1, n)
    mu = np.column_stack([0.95 - 0.9 * d, 0.95 - 0.5 * d, 0.97 - 0.15 * d])
    texts = [f"question {i} of difficulty {x:.3f}" for i, x in enumerate(d)]
    return rng, texts, mu


def full_table(texts, mu, rng) -> pd.DataFrame:
    rows = []
    for i, text in enumerate(texts):
        for j, m in enumerate(MODELS):
            rows.append({"prompt_id": f"p{i}", "model": m,
                         "messages": json.dumps([{"role": "user", "content": text}]),
                         "quality": float(rng.uniform() < mu[i, j]), "cost_usd": PRICE[j]})
    return pd.DataFrame(rows)


def logged_table(texts, mu, rng, explore: float = 0.3) -> pd.DataFrame:
    p = np.array([explore / 2, 1 - explore, explore / 2])
    action = rng.choice(3, size=len(texts), p=p)
    return pd.DataFrame({
        "messages": [json.dumps([{"role": "user", "content": t}]) for t in texts],
        "model": [MODELS[a] for a in action],
        "propensity": p[action],
        "quality": (rng.uniform(size=len(texts)) < mu[np.arange(len(texts)), action]).astype(float),
        "cost_usd": PRICE[action],
    })


@pytest.fixture(scope="module")
def models_and_data():
    rng, texts, mu = world(600, seed=0)
    good = Stub(dict(zip(texts, mu, strict=True)))
    shuffled = Stub(dict(zip(texts, mu[rng.permutation(len(mu))], strict=True)))
    return good, shuffled, full_table(texts, mu, rng), logged_table(texts, mu, rng)


def test_hull_is_concave_non_decreasing_and_flat_after_the_last_point() -> None:
    got = hull_quality([1, 2, 3, 4], [0.5, 0.55, 0.9, 0.8], np.array([0.5, 1, 2, 3, 9]))
    assert np.isnan(got[0])
    assert got[1:].tolist() == pytest.approx([0.5, 0.7, 0.9, 0.9])


def test_quality_at_equal_cost_is_the_mean_gap_between_hulls() -> None:
    champion = Curve((0.5, 0.9), (1.0, 3.0), (0.6, 0.9))
    worse = Curve((0.5, 0.9), (1.0, 3.0), (0.5, 0.8))
    delta, q_ref, q_new = quality_at_equal_cost(champion, worse)
    assert delta == pytest.approx(-0.1)
    assert q_ref == pytest.approx(0.75) and q_new == pytest.approx(0.65)


def test_the_utility_rules_points_count_at_equal_cost() -> None:
    threshold = ((0.5, 0.9), (1.0, 3.0), (0.6, 0.9))
    champion = Curve(*threshold)
    # Same threshold points, plus a utility-rule point at cost 2 with quality 0.9.
    challenger = Curve(*threshold, lambdas=(0.0,), utility_cost_usd=(2.0,),
                       utility_quality=(0.9,))
    delta, q_ref, q_new = quality_at_equal_cost(champion, challenger)
    # 0.825 and 0.075 up to the cost grid's resolution around the kink at cost 2.
    assert q_ref == pytest.approx(0.75) and q_new == pytest.approx(0.825, abs=1e-3)
    assert delta == pytest.approx(0.075, abs=1e-3)
    assert quality_at_equal_cost(champion, challenger, rule="default")[0] == 0.0


def test_each_rule_the_traffic_uses_is_judged_on_its_own(models_and_data) -> None:
    good, _, table, logged = models_and_data
    # Same quality predictions, the mid model's cost overestimated 2.5x: both rules
    # route too little to the mid model, each by its own amount.
    mispriced = Stub(good.by_text, price=np.array([0.001, 0.01, 0.02]))
    with_utility = logged.assign(utility_lambda=np.where(np.arange(len(logged)) % 4 == 0,
                                                         20.0, np.nan))
    assert rules_in_use(logged) == ("default",)
    assert rules_in_use(with_utility) == ("default", "utility")
    assert rules_in_use(None) == ("default", "utility")

    # While some traffic sets lambda, both rules are judged and the worse one decides.
    report = run_gate(good, mispriced, eval_table=table, recent=with_utility,
                      tolerance=0.0, champion_id="v1", challenger_id="v2")
    assert [s.name for s in report.sources] == ["eval table", "recent logs"]
    for source in report.sources:
        assert source.rules == ("default", "utility")
        assert set(source.delta_by_rule) == {"default", "utility"}
        assert source.delta_quality == min(source.delta_by_rule.values())
        assert source.status == ("pass" if source.delta_quality >= 0 else "fail")
        assert len(source.challenger_curve.lambdas) == 61
        assert source.challenger_curve.lambdas[0] == 0.0
    assert report.passed == all(s.status == "pass" for s in report.sources)
    assert "by rule: default " in report.format()
    stored = json.loads(json.dumps(report.to_dict()))
    curve = stored["sources"][0]["challenger_curve"]
    assert len(curve["lambdas"]) == len(curve["utility_cost_usd"]) == 61
    assert stored["sources"][1]["rules"] == ["default", "utility"]

    # When all traffic routes by bar, only the default rule is judged; the utility
    # rule's difference stays on record, marked as not judged.
    bars_only = run_gate(good, mispriced, eval_table=table, recent=logged, tolerance=0.0)
    for source in bars_only.sources:
        assert source.rules == ("default",)
        assert source.delta_quality == source.delta_by_rule["default"]
    assert "(not in use, not judged)" in bars_only.format()
    with pytest.raises(ValueError, match="rules must be among"):
        run_gate(good, mispriced, eval_table=table, rules=("bar",))


def test_a_challenger_with_shuffled_predictions_is_refused_on_the_eval_table(
        models_and_data) -> None:
    good, shuffled, table, _ = models_and_data
    report = run_gate(shuffled, good, eval_table=table, tolerance=0.01,
                      champion_id="v1", challenger_id="v2")
    assert report.passed is False
    [source] = report.sources
    assert source.name == "eval table" and source.status == "fail"
    assert source.delta_quality < -0.03
    assert source.challenger_aiq < source.champion_aiq
    text = report.format()
    assert "decision: REFUSE: worse than the champion at equal cost on eval table" in text
    # What is stored in meta.json is plain JSON.
    stored = json.loads(json.dumps(report.to_dict()))
    assert stored["passed"] is False and stored["sources"][0]["status"] == "fail"


def test_a_better_challenger_is_promoted(models_and_data) -> None:
    good, shuffled, table, logged = models_and_data
    report = run_gate(good, shuffled, eval_table=table, recent=logged, tolerance=0.01)
    assert report.passed is True
    assert [s.status for s in report.sources] == ["pass", "pass"]
    assert all(s.delta_quality > 0.02 for s in report.sources)


def test_an_equal_challenger_passes_within_tolerance(models_and_data) -> None:
    good, _, table, logged = models_and_data
    report = run_gate(good, good, eval_table=table, recent=logged, tolerance=0.0)
    assert report.passed is True
    assert [s.delta_quality for s in report.sources] == pytest.approx([0.0, 0.0])


def test_off_policy_evidence_alone_refuses_the_worse_challenger(models_and_data) -> None:
    good, shuffled, _, logged = models_and_data
    report = run_gate(shuffled, good, recent=logged, tolerance=0.01)
    assert report.passed is False
    assert report.sources[0].name == "recent logs" and report.sources[0].status == "fail"


def test_too_few_logged_rows_and_no_eval_table_keeps_the_champion(models_and_data) -> None:
    good, _, _, logged = models_and_data
    report = run_gate(good, good, recent=logged.head(50), min_logged_rows=200)
    assert report.passed is False
    assert report.sources[0].status == "skipped"
    assert report.sources[0].note == "fewer than 200 rows"
    assert "no evidence" in report.reason


def test_the_first_model_is_promoted_without_a_champion(models_and_data) -> None:
    good, _, table, _ = models_and_data
    report = run_gate(good, None, eval_table=table)
    assert report.passed is True and report.reason.startswith("no champion yet")
    assert report.sources[0].challenger_curve is not None


# -- with real quality models ----------------------------------------------------------

FAST = {"num_threads": 1, "num_leaves": 15}


def demo_table(tmp_dir, n_prompts: int = 400, seed: int = 0) -> pd.DataFrame:
    """The synthetic demo outcomes (every catalog model per prompt), loaded canonically."""
    from router.catalog import load_catalog
    from training.data import load_outcomes, write_outcomes
    from training.demo_data import generate_demo

    catalog = load_catalog()
    path = tmp_dir / f"demo-{n_prompts}-{seed}.csv"
    write_outcomes(generate_demo(n_prompts, seed=seed, catalog=catalog), path)
    return load_outcomes([path], catalog=catalog)


def fit_fast(table: pd.DataFrame, *, seed: int = 0):
    from router.catalog import load_catalog
    from router.predictor import QualityModel

    return QualityModel(num_boost_round=60, n_components=16, params=FAST).fit(
        table, catalog=load_catalog(), seed=seed)


def shuffled_labels(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return table.assign(quality=rng.permutation(table["quality"].to_numpy()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    table = demo_table(tmp_path_factory.mktemp("demo"))
    ids = table["prompt_id"].unique()
    held = set(ids[:120])
    train, evaluation = table[~table["prompt_id"].isin(held)], table[table["prompt_id"].isin(held)]
    return fit_fast(train), fit_fast(shuffled_labels(train)), evaluation


def test_a_challenger_trained_on_shuffled_labels_is_refused(trained) -> None:
    good, shuffled, evaluation = trained
    report = run_gate(shuffled, good, eval_table=evaluation, tolerance=0.01)
    assert report.passed is False
    [source] = report.sources
    assert source.status == "fail" and source.delta_quality < -0.05
    assert source.challenger_aiq < source.champion_aiq


def test_a_properly_trained_challenger_replaces_a_shuffled_champion(trained) -> None:
    good, shuffled, evaluation = trained
    report = run_gate(good, shuffled, eval_table=evaluation, tolerance=0.01)
    assert report.passed is True
    assert report.sources[0].delta_quality > 0.05


# -- off-policy estimates a user can read --------------------------------------------

def test_the_report_gives_ips_snips_and_dr_with_errors_and_ess(models_and_data) -> None:
    good, shuffled, _, logged = models_and_data
    report = run_gate(shuffled, good, recent=logged, tolerance=0.01,
                      champion_id="v1", challenger_id="v2")
    [source] = report.sources
    assert set(source.offpolicy) == {"champion", "challenger"}
    for estimates in source.offpolicy.values():
        assert set(estimates) == {"ips", "snips", "dr"}
        for est in estimates.values():
            assert 0.0 <= est.quality <= 1.0 and est.quality_se > 0
            assert 30 <= est.ess <= len(logged) and not est.too_small
    text = report.format()
    assert ("\n  off-policy on the recent logs at their own settings: mean quality per "
            "request +- 1 standard error (too small to judge below ESS 30)\n") in text
    champion_line = next(line for line in text.splitlines()
                         if line.startswith("    champion "))
    assert re.search(r"IPS 0\.\d{4} \+- 0\.\d{4}, SNIPS 0\.\d{4} \+- 0\.\d{4}, "
                     r"DR 0\.\d{4} \+- 0\.\d{4}; DR cost \$0\.\d{6} \+- 0\.\d{6}; "
                     rf"ESS \d+\.\d of {len(logged)}$", champion_line), champion_line
    # Stored in meta.json: every estimate, and each DR curve point with its SE and ESS,
    # qualities never above 1.
    stored = json.loads(json.dumps(report.to_dict()))["sources"][0]
    assert stored["offpolicy"]["min_ess"] == 30
    assert stored["offpolicy"]["challenger"]["snips"]["too_small"] is False
    curve = stored["challenger_curve"]
    assert len(curve["quality_se"]) == len(curve["ess"]) == len(curve["bars"])
    assert max(curve["quality"] + curve["utility_quality"]) <= 1.0


def test_a_challenger_the_logs_rarely_show_is_too_small_to_judge(models_and_data) -> None:
    good, _, table, logged = models_and_data
    # Predicts the cheap model is best everywhere: it would serve "cheap", which the
    # logging policy chose for 15% of requests (weight 1/0.15 each).
    cheap_lover = Stub({text: np.array([0.99, 0.5, 0.5]) for text in good.by_text})
    recent = logged.head(150)
    report = run_gate(cheap_lover, good, recent=recent, eval_table=table,
                      min_logged_rows=100, champion_id="v1", challenger_id="v2")
    source = report.sources[1]
    assert source.name == "recent logs" and source.status == "skipped"
    ess = source.offpolicy["challenger"]["dr"].ess
    assert ess < 30 <= source.offpolicy["champion"]["dr"].ess
    assert source.note == ("too small to judge at the logged settings: effective sample "
                           f"size {ess:.1f} (challenger) < 30")
    assert f"too small to judge (ESS {ess:.1f} < 30)" in report.format()
    # The decision rests on the eval table alone.
    assert report.reason.endswith("on eval table") or "eval table" in report.reason
