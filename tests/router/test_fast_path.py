"""The lean path answers `/v1/route` and chat completions exactly as FastAPI would."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from router.deps import client_key
from router.outcome_log import open_outcome_log
from tests.router import app_fixtures

router_factory = app_fixtures.router_factory


def chunked(body: Any) -> dict[str, Any]:
    """httpx arguments for `body` sent chunked (no content-length): the lean path
    replays such a request to FastAPI, so it takes the FastAPI handler."""
    def parts() -> Iterator[bytes]:
        yield json.dumps(body).encode()

    return {"content": parts(), "headers": {"content-type": "application/json"}}


def test_lean_and_fastapi_paths_give_the_same_answer_counted_once(router_factory: Any) -> None:
    server = router_factory()
    c = server.client
    # A plain body: the lean path. A chunked one: FastAPI answers.
    lean = c.post("/v1/route", json={"messages": "hi", "quality_bar": 0.8})
    full = c.post("/v1/route", **chunked({"messages": "hi", "quality_bar": 0.8}))
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


def _chat(model: str = "router", **extra: Any) -> dict[str, Any]:
    # No temperature: sampled requests skip the cache, so both paths reach the upstream.
    return {"model": model, "messages": [{"role": "user", "content": "tell me a story"}],
            **extra}


def test_lean_and_fastapi_chat_answers_match_byte_for_byte(router_factory: Any) -> None:
    server = router_factory()
    c = server.client
    # A chunked body: FastAPI answers it.
    lean = c.post("/v1/chat/completions", json=_chat(quality_bar=0.8))
    full = c.post("/v1/chat/completions", **chunked(_chat(quality_bar=0.8)))
    assert lean.status_code == full.status_code == 200
    assert lean.headers["x-request-id"] != full.headers["x-request-id"]
    assert [(k, v) for k, v in lean.headers.items() if k not in ("x-request-id", "date")] == \
        [(k, v) for k, v in full.headers.items() if k not in ("x-request-id", "date")]
    a, b = lean.json(), full.json()
    a.pop("id"), b.pop("id"), a.pop("created"), b.pop("created")
    assert a == b and lean.headers["x-router-model"] == "deepseek-v4-pro"

    streams = []
    for how in ({"json": _chat(stream=True)}, chunked(_chat(stream=True))):
        with c.stream("POST", "/v1/chat/completions", **how) as r:
            assert r.status_code == 200
            streams.append((dict(r.headers), b"".join(r.iter_raw())))
    (lean_headers, lean_bytes), (full_headers, full_bytes) = streams
    for headers in (lean_headers, full_headers):
        headers.pop("x-request-id"), headers.pop("date")
    assert lean_headers == full_headers
    assert lean_headers["content-type"] == "text/event-stream; charset=utf-8"
    assert lean_bytes.count(b"data: ") == full_bytes.count(b"data: ") > 3
    assert lean_bytes.endswith(b"data: [DONE]\n\n") and full_bytes.endswith(b"data: [DONE]\n\n")

    text = c.get("/metrics").text
    assert 'router_requests_total{endpoint="chat",model="deepseek-v4-pro",status="200"} 4.0' \
        in text
    assert "router_route_decision_seconds_count 4.0" in text
    server.flush_log()
    rows = open_outcome_log(server.ctx.settings.log_url).export_dataframe()
    assert len(rows) == 4 and set(rows["status"]) == {200}
    assert sorted(rows["stream"]) == [False, False, True, True]


def test_lean_chat_errors_match_the_fastapi_handler(router_factory: Any,
                                                    fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    server = router_factory(max_retries=0)
    c = server.client
    # Rejected before any effect: replayed to FastAPI, counted once.
    r = c.post("/v1/chat/completions", json=_chat("router:1.5"))
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    # Failed upstream after planning: the lean path answers, in the same shape.
    control.configure("gpt-4o", fail_status=400)
    lean = c.post("/v1/chat/completions", json=_chat("gpt-4o"))
    full = c.post("/v1/chat/completions", **chunked(_chat("gpt-4o")))
    assert lean.status_code == full.status_code == 400
    assert lean.json() == full.json() and lean.json()["error"]["message"]
    assert lean.headers["content-type"] == full.headers["content-type"] == "application/json"
    text = c.get("/metrics").text
    assert 'router_requests_total{endpoint="chat",model="gpt-4o",status="400"} 2.0' in text
    assert 'router_requests_total{endpoint="chat",model="none",status="400"} 1.0' in text
    server.flush_log()
    rows = open_outcome_log(server.ctx.settings.log_url).export_dataframe()
    assert list(rows["status"]) == [400, 400]


def test_client_leaving_a_lean_stream_stops_the_upstream_and_logs_499(
        router_factory: Any, fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    control.configure(None, chunk_delay_ms=200)  # a ~5 s stream if read to the end
    server = router_factory()
    with server.client.stream("POST", "/v1/chat/completions",
                              json=_chat("gpt-4o", stream=True)) as r:
        first = next(r.iter_raw())
        assert first.startswith(b"data: ")
    left = time.monotonic()
    deadline = left + 3.0
    rows = None
    while time.monotonic() < deadline:
        server.flush_log()
        rows = open_outcome_log(server.ctx.settings.log_url).export_dataframe()
        if len(rows):
            break
        time.sleep(0.05)
    assert rows is not None and len(rows) == 1, "the cut stream was never logged"
    assert time.monotonic() - left < 1.5  # noticed at once, not when the upstream ended
    row = rows.iloc[0]
    assert row["status"] == 499 and row["stream"] and row["served_model"] == "gpt-4o"
    text = server.client.get("/metrics").text
    assert 'router_requests_total{endpoint="chat",model="gpt-4o",status="499"} 1.0' in text
