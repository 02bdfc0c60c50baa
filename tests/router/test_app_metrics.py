"""The Grafana dashboard only queries metrics the app exports; registries are per app."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from router.metrics import Metrics
from tests.router import app_fixtures

# Fixtures shared by the app tests (pytest finds them as module attributes).
router_factory = app_fixtures.router_factory

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"


def test_dashboard_queries_only_exported_metrics() -> None:
    metrics = Metrics()
    metrics.set_model_version("v1")
    metrics.requests.labels("chat", "m", "200").inc()
    exported = metrics.render().decode()
    panels = json.loads(DASHBOARD.read_text())["panels"]
    names = {n for p in panels for t in p["targets"] for n in re.findall(r"router_\w+", t["expr"])}
    assert len(names) >= 12
    missing = [n for n in names if f"# TYPE {re.sub(r'_(bucket|total)$', '', n)} " not in exported
               and f"# TYPE {n} " not in exported]
    assert missing == []


def test_each_app_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.cache_hits.labels("semantic").inc()
    assert 'router_cache_hits_total{kind="semantic"} 1.0' in one.render().decode()
    assert 'router_cache_hits_total{kind="semantic"} 0.0' in two.render().decode()
    one.set_model_version("a")
    one.set_model_version("b")
    text = one.render().decode()
    assert 'router_model_info{version="b"} 1.0' in text and 'version="a"' not in text


def test_cooldowns_count_openings_not_every_failure_after_the_threshold(
        router_factory: Any, fake_upstream_server: Any) -> None:
    # Every model fails: once all breakers are open the router still tries the whole
    # chain (never refusing outright), and those failures used to count as openings.
    _, control = fake_upstream_server
    control.configure(None, fail_status=503)
    server = router_factory(max_retries=0, cooldown_failures=3, cooldown_s=60.0)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(40):
        assert server.client.post("/v1/chat/completions", json=body).status_code in (502, 503)
    counts = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'router_cooldowns_total\{model="([^"]+)"\} (\S+)', server.client.get("/metrics").text)}
    assert counts and set(counts.values()) == {1.0}, counts


def test_upstream_latency_histogram_per_model_and_the_live_latency_it_feeds(
        router_factory: Any, fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    control.configure("gpt-4o", latency_ms=60.0)
    server = router_factory()
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(6):
        assert server.client.post("/v1/chat/completions", json=body).status_code == 200
    text = server.client.get("/metrics").text
    # Every one of the six answers took more than 50 ms and less than 1 s.
    assert 'router_upstream_latency_seconds_bucket{le="0.05",model="gpt-4o"} 0.0' in text
    assert 'router_upstream_latency_seconds_bucket{le="1.0",model="gpt-4o"} 6.0' in text
    live = server.app.state.ctx.live_latency.snapshot()["gpt-4o"]
    assert live["samples"] == 6 and 60.0 <= live["recent_p90_ms"] < 1000.0
