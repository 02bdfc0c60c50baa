"""One front door: every request to every endpoint passes the same middleware and
handlers; a body sent chunked or with a Content-Length is answered alike, counted
once; tests that override the key check run the production path (issue 14)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from router.deps import client_key
from router.outcome_log import open_outcome_log
from tests.router import app_fixtures

router_factory = app_fixtures.router_factory


def chunked(body: Any) -> dict[str, Any]:
    """httpx arguments for `body` sent chunked (no content-length): the body limit
    middleware reads it and hands it on."""
    def parts() -> Iterator[bytes]:
        yield json.dumps(body).encode()

    return {"content": parts(), "headers": {"content-type": "application/json"}}


def test_plain_and_chunked_bodies_give_the_same_answer_counted_once(router_factory: Any
                                                                    ) -> None:
    server = router_factory()
    c = server.client
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
    # An error is answered once: counted once, never logged.
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


def test_plain_and_chunked_chat_answers_match_byte_for_byte(router_factory: Any) -> None:
    server = router_factory()
    c = server.client
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


def test_chat_errors_are_answered_and_counted_once(router_factory: Any,
                                                  fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    server = router_factory(max_retries=0)
    c = server.client
    # Rejected before any effect: counted once, never logged.
    r = c.post("/v1/chat/completions", json=_chat("router:1.5"))
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    # Failed upstream after planning: the upstream's status, logged and counted once.
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


def test_client_leaving_a_stream_stops_the_upstream_and_logs_499(
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


class SeenBy:
    """A pure ASGI middleware added after the app was built (as CORS or tracing
    would be): records each request's path and marks its response."""

    def __init__(self, app: Any, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.seen.append(f"{scope['method']} {scope['path']}")

        async def marked(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-seen-by", b"middleware")]
            await send(message)

        await self.app(scope, receive, marked)


def test_middleware_added_later_sees_every_request_to_every_endpoint(
        fake_upstream_server: Any, tmp_path: Any) -> None:
    from router.app import create_app
    from router.settings import load_settings

    base_url, _ = fake_upstream_server
    app = create_app(load_settings(upstream_base_url=base_url, exploration=0.0,
                                   log_url=str(tmp_path / "log.db")),
                     model=app_fixtures.StubModel())
    seen: list[str] = []
    app.add_middleware(SeenBy, seen=seen)
    with app_fixtures.run_router(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        answers = [
            c.post("/v1/route", json={"messages": "hi"}),
            c.post("/v1/chat/completions", json=_chat()),
            c.post("/v1/chat/completions", json=_chat(stream=True)),
            c.post("/v1/route", json={"messages": "hi", "quality_bar": 7}),  # a 400
            c.get("/v1/models"),
            c.get("/healthz"),
        ]
    assert [r.status_code for r in answers] == [200, 200, 200, 400, 200, 200]
    assert all(r.headers["x-seen-by"] == "middleware" for r in answers)
    assert seen == ["POST /v1/route", "POST /v1/chat/completions", "POST /v1/chat/completions",
                    "POST /v1/route", "GET /v1/models", "GET /healthz"]
