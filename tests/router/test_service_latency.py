"""RoutingService under a latency limit (issue 12): the request's or the default limit,
the fastest model when none is within it, refusal without a latency prediction, and
the live blend that moves traffic off a provider that slows down."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from router.catalog import DEFAULT_CATALOG_PATH, load_catalog
from router.conversation import Conversation
from router.errors import ArtifactError, PolicyError
from router.live_latency import LiveLatency
from router.service import RoutingService
from tests.router.app_fixtures import StubModel, StubPrediction

# Expected whole-answer latency per stub model, ms (quality rises in this order:
# glm-4-plus, deepseek-v4-flash, deepseek-v4-pro, gpt-4o).
LATENCY = {"glm-4-plus": 3000.0, "deepseek-v4-flash": 500.0, "deepseek-v4-pro": 1500.0,
           "gpt-4o": 2500.0}


@dataclass
class LatencyPrediction(StubPrediction):
    latency_ms: np.ndarray | None = None
    ttft_ms: np.ndarray | None = None


class LatencyModel(StubModel):
    """StubModel that also predicts latency, the same for every conversation."""

    calls: int = 0

    def predict(self, conversations: Sequence[Conversation],
                models: Sequence[str] | None = None) -> LatencyPrediction:
        self.calls += 1
        base = super().predict(conversations, models)
        latency = np.tile([LATENCY[m] for m in base.models], (len(conversations), 1))
        return LatencyPrediction(base.models, base.quality, base.output_tokens, base.cost_usd,
                                 latency_ms=latency, ttft_ms=latency / 5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service(model: Any, **kwargs: Any) -> RoutingService:
    return RoutingService.build(model, load_catalog(DEFAULT_CATALOG_PATH), proxy_all=True,
                                **kwargs)


CONV = Conversation.from_prompt("explain quicksort")


def test_the_limit_drops_slow_models_and_every_candidate_carries_its_latency() -> None:
    svc = service(LatencyModel())
    free = svc.route(CONV, utility_lambda=0.0)
    assert free.model == "gpt-4o" and free.expected_latency_ms == 2500.0
    limited = svc.route(CONV, utility_lambda=0.0, max_latency_ms=2000)
    assert limited.model == "deepseek-v4-pro" and limited.expected_latency_ms == 1500.0
    assert limited.latency_limit_met
    assert {c["model"]: c["expected_latency_ms"] for c in limited.candidates_json()} == LATENCY
    assert limited.latency_json() == {"max_latency_ms": 2000.0, "latency_limit_met": True}
    assert free.latency_json() == {}
    # The fallback chain tries the models within the limit first.
    assert limited.fallbacks[0] == "deepseek-v4-flash"


def test_no_model_within_the_limit_takes_the_fastest_and_the_decision_says_so() -> None:
    result = service(LatencyModel()).route(CONV, bar=0.9, max_latency_ms=100)
    assert result.model == "deepseek-v4-flash" and not result.latency_limit_met
    body = result.latency_json()
    assert body["latency_limit_met"] is False
    assert "fastest, deepseek-v4-flash (expected 500 ms)" in body["latency_reason"]


def test_the_settings_default_applies_when_the_request_gives_no_limit() -> None:
    svc = service(LatencyModel(), default_max_latency_ms=1000)
    assert svc.route(CONV, utility_lambda=0.0).model == "deepseek-v4-flash"
    # The request's own limit wins over the default.
    assert svc.route(CONV, utility_lambda=0.0, max_latency_ms=2600).model == "gpt-4o"


def test_a_limit_without_a_latency_prediction_is_refused_with_a_hint() -> None:
    svc = service(StubModel())
    with pytest.raises(PolicyError, match="max_latency_ms=800: model stub-1 predicts no "
                                          "latency") as info:
        svc.route(CONV, max_latency_ms=800)
    assert "latency_ms column" in info.value.hint
    assert svc.route(CONV).model  # without a limit it routes as before
    with pytest.raises(ArtifactError, match="ROUTER_MAX_LATENCY_MS=800 cannot be applied"):
        service(StubModel(), default_max_latency_ms=800).validate()
    with pytest.raises(PolicyError, match="max_latency_ms must be a finite number"):
        service(LatencyModel()).route(CONV, max_latency_ms=float("inf"))


def _feed(live: LiveLatency, clock: Clock, model: str, latency_ms: float, n: int) -> None:
    for _ in range(n):
        clock.now += 0.1
        live.observe(model, latency_ms)


def test_a_model_that_slows_down_is_excluded_then_readmitted_without_a_stale_cache() -> None:
    clock = Clock()
    live = LiveLatency(window_s=10.0, clock=clock)
    model = LatencyModel()
    svc = service(model, live_latency=live)
    _feed(live, clock, "deepseek-v4-pro", 1200.0, 60)  # its baseline: healthy
    assert svc.route(CONV, utility_lambda=0.0, max_latency_ms=2000).model == "deepseek-v4-pro"
    calls = model.calls
    assert svc.route(CONV, utility_lambda=0.0, max_latency_ms=2000).model == "deepseek-v4-pro"
    assert model.calls == calls  # nothing moved: the cached decision is reused

    _feed(live, clock, "deepseek-v4-pro", 3600.0, 20)  # 3x slower than its baseline
    assert live.factor("deepseek-v4-pro") == pytest.approx(3.0, rel=0.01)
    slow = svc.route(CONV, utility_lambda=0.0, max_latency_ms=2000)
    assert slow.model == "deepseek-v4-flash"
    pro = next(c for c in slow.candidates if c.model == "deepseek-v4-pro")
    assert pro.expected_latency_ms == pytest.approx(4500.0, rel=0.01)

    _feed(live, clock, "deepseek-v4-pro", 1200.0, 100)  # fast again: the window refills
    assert live.factor("deepseek-v4-pro") == 1.0
    assert svc.route(CONV, utility_lambda=0.0, max_latency_ms=2000).model == "deepseek-v4-pro"


def test_a_slow_model_without_traffic_is_tried_again_once_its_window_empties() -> None:
    clock = Clock()
    live = LiveLatency(window_s=10.0, clock=clock)
    svc = service(LatencyModel(), live_latency=live)
    _feed(live, clock, "deepseek-v4-pro", 1000.0, 60)
    _feed(live, clock, "deepseek-v4-pro", 5000.0, 10)
    assert svc.route(CONV, utility_lambda=0.0, max_latency_ms=2000).model != "deepseek-v4-pro"
    clock.now += 11.0  # no observation since: the slowdown lapses, like a half-open breaker
    assert svc.route(CONV, utility_lambda=0.0, max_latency_ms=2000).model == "deepseek-v4-pro"


def test_the_settings_default_is_checked_where_it_is_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from router.errors import ConfigError
    from router.settings import load_settings

    monkeypatch.setenv("ROUTER_MAX_LATENCY_MS", "1500")
    assert load_settings().max_latency_ms == 1500.0
    monkeypatch.setenv("ROUTER_MAX_LATENCY_MS", "-2")
    with pytest.raises(ConfigError, match="ROUTER_MAX_LATENCY_MS") as info:
        load_settings()
    assert "finite number of milliseconds > 0" in str(info.value)
