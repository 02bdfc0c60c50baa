"""Live latency end to end (issue 12): a router with a latency limit (the settings
default) moves traffic off a model the fake provider slows down, within a few
requests; no retrain, no reload. (Its return once the slowdown lapses is
tested on the tracker and the service, with a clock of their own.)"""

from __future__ import annotations

from typing import Any

from tests.router import app_fixtures
from tests.router.test_service_latency import LatencyModel

router_factory = app_fixtures.router_factory

BODY = {"model": "router", "utility_lambda": 0.0,
        "messages": [{"role": "user", "content": "explain quicksort"}]}


def served(server: Any, n: int) -> list[str]:
    out = []
    for _ in range(n):
        response = server.client.post("/v1/chat/completions", json=BODY)
        assert response.status_code == 200, response.text
        out.append(response.headers["x-router-model"])
    return out


def test_a_model_the_provider_slows_down_loses_its_latency_limited_traffic(
        router_factory: Any, fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    control.configure(None, latency_ms=5.0)
    # deepseek-v4-pro: the best model expected within 2000 ms (gpt-4o: 2500 ms).
    server = router_factory(model=LatencyModel(), max_latency_ms=2000, decision_cache_size=100)
    assert set(served(server, 60)) == {"deepseek-v4-pro"}  # its baseline: ~5 ms answers

    control.configure("deepseek-v4-pro", latency_ms=40.0)  # 8x slower
    slowed = served(server, 30)
    moved = slowed.index("deepseek-v4-flash")
    assert moved <= 12 and set(slowed[moved:]) == {"deepseek-v4-flash"}, slowed
    live = server.app.state.ctx.live_latency
    assert live.factor("deepseek-v4-pro") > 2000 / 1500  # 1500 ms x factor > the limit
    route = server.client.post("/v1/route", json={"messages": BODY["messages"],
                                                  "utility_lambda": 0.0})
    pro = next(c for c in route.json()["candidates"] if c["model"] == "deepseek-v4-pro")
    assert pro["expected_latency_ms"] > 2000

