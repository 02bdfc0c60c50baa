"""The lean `POST /v1/route` path answers exactly as the FastAPI handler would."""

from __future__ import annotations

from typing import Any

from router.deps import client_key
from router.outcome_log import open_outcome_log
from tests.router import app_fixtures

router_factory = app_fixtures.router_factory


def test_lean_and_fastapi_paths_give_the_same_answer_counted_once(router_factory: Any) -> None:
    server = router_factory()
    c = server.client
    # A number: the lean path. A numeric string: pydantic coerces it, so FastAPI answers.
    lean = c.post("/v1/route", json={"messages": "hi", "quality_bar": 0.8})
    full = c.post("/v1/route", json={"messages": "hi", "quality_bar": "0.8"})
    assert lean.status_code == full.status_code == 200
    a, b = lean.json(), full.json()
    assert a.pop("request_id") == lean.headers["x-request-id"]
    assert b.pop("request_id") == full.headers["x-request-id"]
    assert a == b and a["model"] == "deepseek-v4-pro"
    assert lean.content.count(b" ") == 0  # compact JSON, as before
    for name in ("content-type", "x-router-model", "content-length"):
        assert lean.headers[name] == full.headers[name]
    # An error is answered by FastAPI once: not counted or logged by the lean path too.
    assert c.post("/v1/route", json={"messages": "hi", "quality_bar": 1.5}).status_code == 400
    text = c.get("/metrics").text
    assert 'router_requests_total{endpoint="route",model="deepseek-v4-pro",status="200"} 2.0' \
        in text
    assert 'router_requests_total{endpoint="route",model="none",status="400"} 1.0' in text
    assert "router_route_decision_seconds_count 2.0" in text
    server.flush_log()
    rows = open_outcome_log(server.ctx.settings.log_url).export_dataframe()
    assert sorted(rows["request_id"]) == sorted([lean.headers["x-request-id"],
                                                 full.headers["x-request-id"]])


def test_dependency_overrides_still_apply(router_factory: Any) -> None:
    server = router_factory(api_keys="secret-key-1")
    assert server.client.post("/v1/route", json={"messages": "hi"}).status_code == 401

    async def tester() -> str:
        return "tester"

    server.app.dependency_overrides[client_key] = tester
    r = server.client.post("/v1/route", json={"messages": "hi"})
    assert r.status_code == 200
    server.flush_log()
    rows = open_outcome_log(server.ctx.settings.log_url).export_dataframe()
    assert list(rows["client_key_id"]) == ["tester"]
