"""The Grafana dashboard only queries metrics the app exports; registries are per app."""

from __future__ import annotations

import json
import re
from pathlib import Path

from router.metrics import Metrics

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
    one.cache_hits.inc()
    assert "router_cache_hits_total 1.0" in one.render().decode()
    assert "router_cache_hits_total 0.0" in two.render().decode()
    one.set_model_version("a")
    one.set_model_version("b")
    text = one.render().decode()
    assert 'router_model_info{version="b"} 1.0' in text and 'version="a"' not in text
