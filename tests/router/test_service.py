"""RoutingService: the per-model decision cache keeps decisions identical and fresh."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from router.catalog import DEFAULT_CATALOG_PATH, load_catalog
from router.conversation import Conversation
from router.errors import PolicyError
from router.service import RoutingService
from tests.router.app_fixtures import StubModel


class CountingModel(StubModel):
    """StubModel that counts predict calls."""

    calls: int = 0

    def predict(self, conversations: Sequence[Conversation],
                models: Sequence[str] | None = None) -> Any:
        self.calls += 1
        return super().predict(conversations, models)


def service(model: Any, **kwargs: Any) -> RoutingService:
    return RoutingService.build(model, load_catalog(DEFAULT_CATALOG_PATH), proxy_all=True,
                                **kwargs)


def test_a_repeated_conversation_is_predicted_once_with_the_same_decision() -> None:
    model = CountingModel()
    svc = service(model)
    conv = Conversation.from_prompt("explain quicksort")
    first = svc.route(conv, bar=0.8)
    again = svc.route(Conversation.from_prompt("explain quicksort"), bar=0.8)
    assert model.calls == 1 and svc.decisions.hits == 1
    assert (again.model, again.candidates, again.fallbacks, again.expected_cost_usd) == (
        first.model, first.candidates, first.fallbacks, first.expected_cost_usd)
    # Another bar, budget or model list is another decision, predicted afresh.
    assert svc.route(conv, bar=0.5).model != first.model
    svc.route(conv, bar=0.8, models=["gpt-4o", "glm-4-plus"])
    assert model.calls == 3


def test_cache_off_and_bounded() -> None:
    model = CountingModel()
    off = service(model, decision_cache_size=0)
    conv = Conversation.from_prompt("hi")
    off.route(conv)
    off.route(conv)
    assert model.calls == 2 and len(off.decisions) == 0

    small = service(CountingModel(), decision_cache_size=2)
    for text in ("a", "b", "c", "a"):
        small.route(Conversation.from_prompt(text))
    assert len(small.decisions) == 2 and small.model.calls == 4  # "a" was evicted


def test_a_new_model_version_starts_with_an_empty_cache() -> None:
    conv = Conversation.from_prompt("write a haiku")
    old = service(StubModel(version="v1", base=(0.9, 0.9, 0.9, 0.9)))
    new = service(StubModel(version="v2", base=(0.1, 0.1, 0.1, 0.95)))
    assert old.route(conv, bar=0.8).model == "glm-4-plus"
    assert new.route(conv, bar=0.8).model == "gpt-4o"


def test_cached_decisions_still_explore_with_the_logged_propensity() -> None:
    svc = service(CountingModel(), exploration=0.5)
    conv = Conversation.from_prompt("what is the capital of Australia?")
    rng = random.Random(7)
    results = [svc.route(conv, bar=0.8, rng=rng) for _ in range(200)]
    explored = [r for r in results if r.model != r.policy_model]
    assert 40 < len(explored) < 120  # eps/2 * (m-1)/m ~ 37% of 200
    for r in explored:
        assert r.propensity == pytest.approx(0.5 / 4)
        assert r.model not in r.fallbacks
    assert svc.model.calls == 1


def test_a_bad_limit_is_refused_every_time_not_cached() -> None:
    svc = service(CountingModel())
    conv = Conversation.from_prompt("hello")
    for _ in range(2):
        with pytest.raises(PolicyError, match="max_cost_usd must be positive"):
            svc.route(conv, max_cost_usd=-1.0)
    assert len(svc.decisions) == 0
