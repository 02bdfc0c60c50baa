"""LiveLatency: a model's recent P90 over its own baseline, as a factor on the artifact's
expected latencies; lapses without traffic; the decision cache's generation moves
only when a factor does."""

from __future__ import annotations

import numpy as np
import pytest

from router.live_latency import LiveLatency, blend


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(live: LiveLatency, clock: Clock, model: str, values: list[float],
         every_s: float = 0.1) -> None:
    for value in values:
        clock.now += every_s
        live.observe(model, value)


def test_a_healthy_model_keeps_factor_one_whatever_its_tail() -> None:
    clock = Clock()
    live = LiveLatency(window_s=10.0, clock=clock)
    rng = np.random.default_rng(0)
    feed(live, clock, "m", list(rng.lognormal(7.0, 0.6, 400)), every_s=0.05)
    assert live.factor("m") < 1.3  # the same distribution as its baseline
    assert live.factor("unseen") == 1.0


def test_a_slowdown_shows_within_the_window_and_scales_the_prediction() -> None:
    clock = Clock()
    live = LiveLatency(window_s=10.0, clock=clock)
    feed(live, clock, "m", [1000.0] * 60)
    generation = live.current_generation()
    feed(live, clock, "m", [4000.0] * 10)  # one second of slow answers: > 10% of the window
    assert live.factor("m") == pytest.approx(4.0, rel=0.01)
    assert live.current_generation() > generation
    expected = blend(np.array([[500.0, 800.0]]), live.factors(["m", "other"]))
    assert expected[0, 0] == pytest.approx(2000.0, rel=0.01) and expected[0, 1] == 800.0


def test_the_baseline_learns_an_outage_only_slowly() -> None:
    clock = Clock()
    live = LiveLatency(window_s=5.0, clock=clock)
    feed(live, clock, "m", [1000.0] * 100)
    feed(live, clock, "m", [3000.0] * 600)  # a minute slow
    assert live.snapshot()["m"]["baseline_p90_ms"] < 1250.0
    assert live.factor("m") > 2.4
    feed(live, clock, "m", [3000.0] * 6000, every_s=0.5)  # slow for 50 minutes: normal now
    assert live.factor("m") == 1.0


def test_without_new_observations_the_factor_lapses_to_one() -> None:
    clock = Clock()
    live = LiveLatency(window_s=10.0, min_samples=5, clock=clock)
    feed(live, clock, "m", [1000.0] * 60)
    feed(live, clock, "m", [5000.0] * 20)
    assert live.factor("m") == pytest.approx(5.0, rel=0.02)
    generation = live.current_generation()
    clock.now += 9.0
    assert live.factor("m") > 4.5  # still five samples within the window
    clock.now += 2.0
    assert live.factor("m") == 1.0 and live.current_generation() > generation


def test_generation_moves_on_a_step_not_on_noise() -> None:
    clock = Clock()
    live = LiveLatency(window_s=10.0, step=0.1, clock=clock)
    feed(live, clock, "m", [1000.0] * 60)
    generation = live.current_generation()
    feed(live, clock, "m", [1000.0, 1100.0, 900.0] * 10)
    assert live.current_generation() == generation
    first = live.factors(["m"])
    assert live.factors(["m"]) is first  # unchanged: the same array, no work


def test_shared_factors_count_until_they_expire_and_bad_input_is_ignored() -> None:
    clock = Clock()
    live = LiveLatency(clock=clock)
    live.adopt("m", 2.5, ttl_s=3.0)
    assert live.factor("m") == 2.5
    clock.now += 3.5
    assert live.factor("m") == 1.0
    live.observe("m", float("nan"))
    live.observe("m", -1.0)
    live.adopt("m", float("inf"), ttl_s=3.0)
    assert live.snapshot()["m"]["samples"] == 0 and live.factor("m") == 1.0
    with pytest.raises(ValueError, match="quantile in"):
        LiveLatency(quantile=1.5)
