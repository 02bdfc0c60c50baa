"""The semantic cache never answers a different question: an adversarial suite of 600+
pairs gets no hit, and near duplicates a user would call the same question mostly do."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from router.cache import CachedResponse, MemoryCache, SemanticCache, same_intent
from tests.router.semantic_pairs import adversarial_pairs, benign_pairs

ANSWER = CachedResponse(body=b'{"choices":[{"message":{"content":"cached"}}]}',
                        served_model="small-model")
ADVERSARIAL = adversarial_pairs()
BENIGN = benign_pairs()


def chat(content: str) -> dict[str, Any]:
    return {"model": "router", "temperature": 0,
            "messages": [{"role": "system", "content": "You are a support assistant."},
                         {"role": "user", "content": content}]}




@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryCache(max_entries=100_000, ttl_s=60)
    return request.getfixturevalue("redis_cache")


async def answered(backend: Any, pairs: list[tuple[str, str, str]]) -> list[str | None]:
    """For each pair, cache the first prompt alone (its own namespace), ask the second:
    the hit's kind, or None."""
    kinds = []
    for i, (cached, asked, _) in enumerate(pairs):
        cache = SemanticCache(backend, namespace=f"pair-{i}")
        await cache.store(chat(cached), ANSWER)
        hit = await cache.lookup(chat(asked))
        kinds.append(None if hit is None else hit.kind)
    return kinds


def test_the_adversarial_suite_covers_every_kind_of_change() -> None:
    kinds = Counter(kind for _, _, kind in ADVERSARIAL)
    assert len(ADVERSARIAL) >= 300
    assert set(kinds) == {"antonym", "one-word swap", "number", "negation", "product or name",
                          "language", "order"}
    assert min(kinds.values()) >= 16
    long_swaps = [(a, b) for a, b, kind in ADVERSARIAL if kind in ("antonym", "one-word swap")]
    assert all(len(a.split()) >= 19 for a, _ in long_swaps)
    assert len({a for a, _, _ in ADVERSARIAL}) > 300  # not one prompt repeated


async def test_no_adversarial_pair_is_answered_from_the_cache(backend: Any) -> None:
    kinds = await answered(backend, ADVERSARIAL)
    false_hits = [pair for pair, kind in zip(ADVERSARIAL, kinds, strict=True) if kind]
    assert false_hits == []


async def test_benign_near_duplicates_are_answered(backend: Any) -> None:
    kinds = await answered(backend, BENIGN)
    hits, total = Counter(), Counter()
    for (_, _, change), kind in zip(BENIGN, kinds, strict=True):
        total[change] += 1
        hits[change] += kind is not None
        assert kind in (None, "semantic")  # never "exact": every pair differs in its bytes
    assert sum(hits.values()) / len(BENIGN) >= 0.6
    # Case, punctuation, whitespace and greetings never change the tokens compared.
    for change in ("case", "punctuation", "whitespace", "greeting"):
        assert hits[change] == total[change], change
    assert hits["typo"] >= 0.6 * total["typo"]


def test_same_intent_is_the_rule_the_cache_applies() -> None:
    """One rule: `same_intent` answers as the cache does on every pair of both suites."""
    import asyncio

    pairs = ADVERSARIAL[::7] + BENIGN
    kinds = asyncio.run(answered(MemoryCache(max_entries=10_000), pairs))
    assert [same_intent(a, b) for a, b, _ in pairs] == [k is not None for k in kinds]


@pytest.mark.parametrize(("a", "b", "same"), [
    # Words no model has seen still count: they are compared as strings.
    ("Explain what qzxwv means in our glossary", "Explain what plmokn means in our glossary",
     False),
    ("What is the capital of France?", "WHAT IS THE CAPITAL OF FRANCE", True),
    ("Hello world program in Python", "world program in Python", False),  # not a greeting
    ("Translate 'please' into French", "Translate 'thanks' into French", False),
    ("We recieve the package tomorrow at the depot", "We receive the package tomorrow at "
     "the depot", True),
    # A capitalised word is a name unless it is an English word opening a sentence.
    ("Recieve the package tomorrow", "Receive the package tomorrow", False),
    ("Describe the Sumarize feature", "Describe the Summarize feature", False),  # a name
    ("Write a function in C++", "Write a function in C", False),
    ("Show the price in $", "Show the price in €", False),
    ("Rate it 3.5 out of 5", "Rate it 35 out of 5", False),
    ("a lone surrogate \ud800 here", "A lone surrogate \ud800 here.", True),
])
def test_same_intent_examples(a: str, b: str, same: bool) -> None:
    assert same_intent(a, b) is same
    assert same_intent(b, a) is same
