"""`/v1/route`, auth, bad input, `/v1/models`, health, feedback and metrics over a real socket."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from router.outcome_log import open_outcome_log
from tests.router import app_fixtures

# Fixtures shared by the app tests (pytest finds them as module attributes).
router_factory = app_fixtures.router_factory

MESSAGES = [{"role": "user", "content": "hi"}]


def error(status: int, message: str, *, param: str | None = None, code: str | None = None,
          type: str = "invalid_request_error") -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": type, "param": param, "code": code}}


def test_route_returns_cheapest_model_meeting_the_bar_with_every_candidate(
        router_factory: Any) -> None:
    server = router_factory()
    r = server.client.post("/v1/route", json={"messages": MESSAGES, "quality_bar": 0.8})
    assert r.status_code == 200
    body = r.json()
    # Stub quality: 0.548, 0.698, 0.848, 0.948 -> cheapest >= 0.8 is deepseek-v4-pro.
    assert body["model"] == "deepseek-v4-pro" == r.headers["x-router-model"]
    assert body["request_id"] == r.headers["x-request-id"]
    assert body["quality_bar"] == 0.8 and body["model_version"] == "stub-1"
    assert body["expected_quality"] == pytest.approx(0.848)
    assert [c["model"] for c in body["candidates"]] == [
        "glm-4-plus", "deepseek-v4-flash", "deepseek-v4-pro", "gpt-4o"]
    # A lower bar picks a cheaper model; a model subset is respected; a prompt string works.
    assert server.client.post("/v1/route", json={"messages": "hi", "quality_bar": 0.6}
                              ).json()["model"] == "deepseek-v4-flash"
    # A hard floor holds per request: within the subset only gpt-4o is predicted >= 0.8.
    floor = server.client.post("/v1/route", json={"messages": MESSAGES, "min_quality": 0.8,
                                                  "models": ["glm-4-plus", "gpt-4o"]}).json()
    assert floor["model"] == "gpt-4o" and floor["min_quality"] == 0.8
    assert [c["model"] for c in floor["candidates"]] == ["glm-4-plus", "gpt-4o"]
    # Without a bar: the model's default_bar (0.8 for the stub).
    assert server.client.post("/v1/route", json={"messages": MESSAGES}).json()[
        "quality_bar"] == 0.8


@pytest.mark.parametrize(("body", "expected"), [
    (b"{bad json", error(400, "malformed JSON in the request body: Expecting property name "
                              "enclosed in double quotes", code="invalid_json")),
    (b"[]", error(400, "the request body must be a JSON object", code="invalid_body")),
    (b'{"quality_bar": 0.5}', error(400, "missing required field 'messages'",
                                    param="messages", code="missing_field")),
    (b'{"messages": []}', error(400, 'messages is empty: send at least one '
                                     '{"role": "user", "content": ...} message',
                                param="messages", code="invalid_messages")),
    (b'{"messages": [{"role": "robot", "content": "x"}]}',
     error(400, "messages.0 has role 'robot': use one of assistant, developer, "
                "function, system, tool, user", param="messages.0.role",
           code="invalid_messages")),
    (b'{"messages": "hi", "quality_bar": 1.5}',
     error(400, "quality_bar must be a number in [0, 1], got 1.5", param="quality_bar",
           code="invalid_quality_bar")),
    (b'{"messages": "hi", "quality_bar": "high"}',
     error(400, "quality_bar: Input should be a valid number, got 'high'",
           param="quality_bar", code="invalid_value")),
    (b'{"messages": "hi", "models": ["gpt-5"]}',
     error(400, "unknown model(s) in models: gpt-5 (routable models: glm-4-plus, "
                "deepseek-v4-flash, deepseek-v4-pro, gpt-4o)", param="models",
           code="invalid_models")),
    (b'{"messages": "hi", "temperature": 0}',
     error(400, "unknown field 'temperature'", param="temperature", code="unknown_field")),
])
def test_bad_route_requests_get_openai_shaped_errors(router_factory: Any, body: bytes,
                                                     expected: tuple[int, Any]) -> None:
    server = router_factory()
    r = server.client.post("/v1/route", content=body,
                           headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == expected


BLANK_PROMPT = "messages is blank: give a prompt with some text or a list of messages"


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"messages": ""}, "messages", BLANK_PROMPT),
    ({"messages": " \n "}, "messages", BLANK_PROMPT),
    ({"messages": 5}, "messages",
     "messages must be a list of messages or a prompt string, got a number"),
    ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content",
     "messages.0.content is blank: a user message needs text"),
    ({"messages": [{"role": "user", "content": None}]}, "messages.0.content",
     "messages.0.content is missing or null: only an assistant message with tool_calls "
     "may have no content"),
    ({"messages": '[{"role": "user", "content": " "}]'}, "messages.0.content",
     "messages.0.content is blank: a user message needs text"),
    ({"messages": "hi", "max_cost_usd": -1}, "max_cost_usd",
     "max_cost_usd: Input should be greater than 0, got -1"),
    ({"messages": "hi", "models": []}, "models",
     "models: List should have at least 1 item after validation, not 0"),
])
def test_bad_route_input_is_refused_on_both_doors_before_it_is_logged(
        router_factory: Any, body: dict[str, Any], param: str, message: str) -> None:
    server = router_factory()
    lean, full = app_fixtures.post_both(server.client, "/v1/route", body)
    code = "invalid_messages" if param.startswith("messages") else "invalid_value"
    assert (lean.status_code, lean.json()) == (full.status_code, full.json()) == error(
        400, message, param=param, code=code)
    server.flush_log()
    assert len(open_outcome_log(server.ctx.settings.log_url).export_dataframe()) == 0
    text = server.client.get("/metrics").text
    assert 'router_requests_total{endpoint="route",model="none",status="400"} 2.0' in text
    assert "router_route_decision_seconds_count 0.0" in text


def test_feedback_ids_are_bounded_and_never_echoed_whole(router_factory: Any) -> None:
    c = router_factory().client
    r = c.post("/v1/feedback", json={"request_id": "", "thumbs": "up"})
    assert (r.status_code, r.json()) == error(
        400, "request_id: String should have at least 1 character, got ''",
        param="request_id", code="invalid_value")
    r = c.post("/v1/feedback", json={"request_id": "r" * 1_000_000, "thumbs": "up"})
    assert (r.status_code, r.json()) == error(
        400, "request_id: String should have at most 128 characters, got '"
        + "r" * 63 + "... (1000000 characters)", param="request_id", code="invalid_value")


def test_limits_on_body_size_and_message_count(router_factory: Any) -> None:
    server = router_factory(max_body_bytes=2000, max_messages=3)
    r = server.client.post("/v1/route", json={"messages": "x" * 5000})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    assert "the limit is 2000 bytes" in r.json()["error"]["message"]
    r = server.client.post("/v1/route", json={"messages": MESSAGES * 4})
    assert (r.status_code, r.json()) == error(400, "messages has 4 entries; the limit is 3",
                                              param="messages", code="too_many_messages")
    # Chunked upload without Content-Length is counted while reading.
    r = server.client.post("/v1/route", content=iter([b'{"messages": "', b"y" * 3000, b'"}']))
    assert r.status_code == 413


def test_client_keys(router_factory: Any) -> None:
    hashed = hashlib.sha256(b"second-key-456").hexdigest()
    server = router_factory(api_keys=f"first-key-123,sha256:{hashed}")
    c = server.client
    assert (c.post("/v1/route", json={"messages": "hi"}).status_code,
            c.post("/v1/route", json={"messages": "hi"}).json()) == error(
        401, "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
        code="missing_api_key")
    wrong = c.post("/v1/route", json={"messages": "hi"},
                   headers={"authorization": "Bearer first-key-124"})
    assert (wrong.status_code, wrong.json()) == error(401, "invalid API key",
                                                     code="invalid_api_key")
    assert "first-key" not in wrong.text
    ok = c.post("/v1/route", json={"messages": "hi"},
                headers={"authorization": "Bearer first-key-123"})
    assert ok.status_code == 200
    assert c.post("/v1/route", json={"messages": "hi"},
                  headers={"x-api-key": "second-key-456"}).status_code == 200
    assert c.get("/v1/models").status_code == 401
    assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200
    server.flush_log()
    rows = open_outcome_log(server.ctx.settings.log_url).export_dataframe()
    assert set(rows["client_key_id"]) == {hashlib.sha256(b"first-key-123").hexdigest()[:12],
                                          hashed[:12]}


def test_models_health_and_unknown_paths(router_factory: Any) -> None:
    server = router_factory()
    ids = [m["id"] for m in server.client.get("/v1/models").json()["data"]]
    assert ids[0] == "router" and {"gpt-4o", "glm-4-plus", "claude-3-haiku"} <= set(ids)
    assert server.client.get("/healthz").json() == {"status": "ok"}
    assert server.client.get("/readyz").json() == {
        "status": "ready", "checks": {"model_loaded": True, "can_route": True},
        "degraded": {}, "model_version": "stub-1"}
    r = server.client.get("/v1/nothing")
    assert (r.status_code, r.json()) == error(404, "no such endpoint: GET /v1/nothing")


def test_readyz_without_a_model(router_factory: Any, tmp_path: Any) -> None:
    empty = tmp_path / "registry"
    empty.mkdir()
    server = router_factory(registry_dir=empty)
    r = server.client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["model_loaded"] is False
    r = server.client.post("/v1/route", json={"messages": "hi"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_loaded"


def test_feedback_is_joined_by_request_id(router_factory: Any) -> None:
    server = router_factory()
    c = server.client
    request_id = c.post("/v1/route", json={"messages": "hi"}).json()["request_id"]
    r = c.post("/v1/feedback", json={"request_id": request_id, "quality": 0.25})
    assert r.status_code == 202 and r.json()["status"] == "accepted"
    assert c.post("/v1/feedback", json={"request_id": request_id, "thumbs": "up"}
                  ).status_code == 202
    r = c.post("/v1/feedback", json={"request_id": "req_nope", "thumbs": "down"})
    assert (r.status_code, r.json()) == error(
        404, "unknown request_id 'req_nope': no request with this id was routed here",
        param="request_id", code="request_not_found")
    r = c.post("/v1/feedback", json={"request_id": request_id, "quality": 1.5})
    assert (r.status_code, r.json()) == error(400, "quality must be a number in [0, 1], got 1.5",
                                              param="quality", code="invalid_feedback")
    r = c.post("/v1/feedback", json={"request_id": request_id, "thumbs": "sideways"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "thumbs"
    server.flush_log()
    row = open_outcome_log(server.ctx.settings.log_url).export_dataframe().iloc[0]
    assert (row["request_id"], row["feedback_count"]) == (request_id, 2)
    assert row["feedback_quality"] == pytest.approx(0.625)


def test_metrics_after_traffic(router_factory: Any) -> None:
    server = router_factory()
    c = server.client
    for _ in range(3):
        c.post("/v1/route", json={"messages": "hi", "quality_bar": 0.8})
    c.post("/v1/route", json={"messages": []})
    text = c.get("/metrics").text
    assert 'router_requests_total{endpoint="route",model="deepseek-v4-pro",status="200"} 3.0' \
        in text
    assert 'router_requests_total{endpoint="route",model="none",status="400"} 1.0' in text
    assert "router_route_decision_seconds_count 3.0" in text
    assert 'router_model_info{version="stub-1"} 1.0' in text
    assert 'router_request_duration_seconds_count{endpoint="route"} 3.0' in text
    assert "router_log_dropped_total 0.0" in text


def test_route_in_utility_mode_trades_quality_for_cost(router_factory: Any) -> None:
    server = router_factory()
    # Stub "hi": q = .548/.698/.848/.948, cost 81/111/223/1013 micro-USD; lambda=1000 per USD
    # gives utilities .467/.587/.625/-.065, so deepseek-v4-pro.
    r = server.client.post("/v1/route", json={"messages": MESSAGES, "utility_lambda": 1000})
    body = r.json()
    assert (body["model"], body["quality_bar"], body["utility_lambda"]) == (
        "deepseek-v4-pro", None, 1000.0)
    # lambda 0 is "best quality at any price"; a huge lambda is "cheapest".
    assert server.client.post("/v1/route", json={"messages": MESSAGES, "utility_lambda": 0}
                              ).json()["model"] == "gpt-4o"
    assert server.client.post("/v1/route", json={"messages": MESSAGES, "utility_lambda": 1e6}
                              ).json()["model"] == "glm-4-plus"


@pytest.mark.parametrize(("body", "message", "param"), [
    ({"min_quality": 1.2}, "min_quality must be a number in [0, 1], got 1.2", "min_quality"),
    ({"min_quality": 0.9, "quality_bar": 0.8},
     "give one of quality_bar, min_quality and utility_lambda, not quality_bar and min_quality",
     "min_quality"),
])
def test_bad_floor_is_refused(router_factory: Any, body: dict[str, Any], message: str,
                              param: str) -> None:
    server = router_factory()
    for path, extra in (("/v1/route", {}), ("/v1/chat/completions", {"model": "router"})):
        r = server.client.post(path, json={"messages": MESSAGES, **extra, **body})
        assert (r.status_code, r.json()) == error(400, message, param=param,
                                                  code=f"invalid_{param}")


@pytest.mark.parametrize(("body", "message"), [
    ({"utility_lambda": -1}, "utility_lambda must be a finite number >= 0 (quality per USD), "
                             "got -1.0"),
    ({"utility_lambda": 10, "quality_bar": 0.8}, "give one of quality_bar, min_quality and "
                                                 "utility_lambda, not quality_bar and "
                                                 "utility_lambda"),
])
def test_bad_utility_lambda_is_refused(router_factory: Any, body: dict[str, Any],
                                       message: str) -> None:
    server = router_factory()
    r = server.client.post("/v1/route", json={"messages": MESSAGES, **body})
    assert (r.status_code, r.json()) == error(400, message, param="utility_lambda",
                                              code="invalid_utility_lambda")


def test_errors_echo_little_of_a_huge_input(router_factory: Any) -> None:
    c = router_factory().client
    key = "k" * 1_000_000
    r = c.post("/v1/route", json={"messages": "hi", key: 1})
    assert r.status_code == 400 and len(r.content) < 500
    assert r.json()["error"]["param"] == "k" * 64 + "..."
    r = c.post("/v1/route", json={"messages": "hi",
                                  "models": [f"m{i}-" + "x" * 250 for i in range(1000)]})
    assert r.status_code == 400 and len(r.content) < 2000
    assert r.json()["error"]["message"].startswith("unknown model(s) in models: m0-xxx")
    assert " and 995 more (routable models: " in r.json()["error"]["message"]


# Expected whole-answer latency per stub model, ms (STUB_MODELS order: glm-4-plus,
# deepseek-v4-flash, deepseek-v4-pro, gpt-4o).
LATENCY = (400.0, 900.0, 1500.0, 2500.0)


def test_route_honours_a_latency_limit_from_the_body_or_the_header(router_factory: Any
                                                                  ) -> None:
    server = router_factory(model=app_fixtures.StubModel(latency=LATENCY))
    c = server.client
    body = {"messages": MESSAGES, "quality_bar": 0.8}
    free = c.post("/v1/route", json=body).json()
    # Without a limit the bar picks deepseek-v4-pro (1500 ms); within 1000 ms only
    # glm-4-plus and deepseek-v4-flash remain, and the better one is chosen.
    assert (free["model"], free["expected_latency_ms"]) == ("deepseek-v4-pro", 1500.0)
    assert "max_latency_ms" not in free
    limited = c.post("/v1/route", json={**body, "max_latency_ms": 1000}).json()
    assert (limited["model"], limited["expected_latency_ms"]) == ("deepseek-v4-flash", 900.0)
    assert (limited["max_latency_ms"], limited["latency_limit_met"]) == (1000.0, True)
    assert {c["model"]: c["expected_latency_ms"] for c in limited["candidates"]} == dict(
        zip(app_fixtures.STUB_MODELS, LATENCY, strict=True))
    # The header, for OpenAI clients that cannot add a field.
    header = c.post("/v1/route", json=body, headers={"x-router-max-latency-ms": "1000"})
    assert header.json()["model"] == "deepseek-v4-flash" == header.headers["x-router-model"]
    assert header.json()["max_latency_ms"] == 1000.0
    # Both given: the body field wins.
    both = c.post("/v1/route", json={**body, "max_latency_ms": 2000},
                  headers={"x-router-max-latency-ms": "100"}).json()
    assert (both["model"], both["max_latency_ms"]) == ("deepseek-v4-pro", 2000.0)
    # None within the limit: the fastest, and the answer says so.
    none = c.post("/v1/route", json={**body, "max_latency_ms": 100}).json()
    assert (none["model"], none["latency_limit_met"]) == ("glm-4-plus", False)
    assert none["latency_reason"]


@pytest.mark.parametrize(("body", "headers", "expected"), [
    ({"max_latency_ms": -5}, {}, error(
        400, "max_latency_ms must be a finite number of milliseconds > 0, got -5.0",
        param="max_latency_ms", code="invalid_max_latency_ms")),
    ({"max_latency_ms": 0}, {}, error(
        400, "max_latency_ms must be a finite number of milliseconds > 0, got 0.0",
        param="max_latency_ms", code="invalid_max_latency_ms")),
    ({"max_latency_ms": "fast"}, {}, error(
        400, "max_latency_ms: Input should be a valid number, got 'fast'",
        param="max_latency_ms", code="invalid_value")),
    ({}, {"x-router-max-latency-ms": "soon"}, error(
        400, "x-router-max-latency-ms must be a finite number of milliseconds > 0, got 'soon'",
        param="x-router-max-latency-ms", code="invalid_max_latency_ms")),
    ({"max_latency_ms": 500}, {"x-router-max-latency-ms": ""}, error(  # refused, though
        400, "x-router-max-latency-ms must be a finite number of milliseconds > 0, got ''",
        param="x-router-max-latency-ms", code="invalid_max_latency_ms")),  # the body wins
    ({}, {"x-router-max-latency-ms": "-1"}, error(
        400, "x-router-max-latency-ms must be a finite number of milliseconds > 0, got -1.0",
        param="x-router-max-latency-ms", code="invalid_max_latency_ms")),
    ({}, {"x-router-max-latency-ms": "inf"}, error(
        400, "x-router-max-latency-ms must be a finite number of milliseconds > 0, got inf",
        param="x-router-max-latency-ms", code="invalid_max_latency_ms")),
])
def test_a_bad_latency_limit_is_a_400_naming_the_value(router_factory: Any,
                                                      body: dict[str, Any],
                                                      headers: dict[str, str],
                                                      expected: tuple[int, Any]) -> None:
    server = router_factory(model=app_fixtures.StubModel(latency=LATENCY))
    for path, extra in (("/v1/route", {}), ("/v1/chat/completions", {"model": "router"})):
        r = server.client.post(path, json={"messages": MESSAGES, **extra, **body},
                               headers=headers)
        assert (r.status_code, r.json()) == expected, path
    server.flush_log()
    assert len(open_outcome_log(server.ctx.settings.log_url).export_dataframe()) == 0


def test_a_latency_limit_the_model_cannot_apply_is_a_400(router_factory: Any) -> None:
    server = router_factory()  # the stub predicts no latency
    r = server.client.post("/v1/route", json={"messages": MESSAGES, "max_latency_ms": 800})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_latency_ms"
    assert "predicts no latency" in r.json()["error"]["message"]
    r = server.client.post("/v1/route", json={"messages": MESSAGES},
                           headers={"x-router-max-latency-ms": "800"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-router-max-latency-ms"


def test_openapi_lists_the_latency_limit(router_factory: Any) -> None:
    spec = router_factory().client.get("/openapi.json").json()
    for path in ("/v1/route", "/v1/chat/completions"):
        operation = spec["paths"][path]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema["properties"]["max_latency_ms"]["anyOf"][0] == {
            "type": "number", "exclusiveMinimum": 0}
        [header] = [p for p in operation["parameters"] if p["in"] == "header"]
        assert header["name"] == "x-router-max-latency-ms"
