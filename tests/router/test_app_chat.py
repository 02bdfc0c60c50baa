"""`/v1/chat/completions` through the router to a real fake upstream, over loopback."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from typing import Any

import httpx
import pytest

from router.outcome_log import open_outcome_log
from router.upstream import SSEDecoder
from tests.router import app_fixtures

# Fixtures shared by the app tests (pytest finds them as module attributes).
router_factory = app_fixtures.router_factory

REDIS_URL = os.environ.get("ROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("ROUTER_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")


def chat(model: str = "router", content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def rows(server: Any) -> Any:
    server.flush_log()
    return open_outcome_log(server.ctx.settings.log_url).export_dataframe()


def test_routed_completion_headers_body_and_log(router_factory: Any) -> None:
    server = router_factory()
    r = server.client.post("/v1/chat/completions", json=chat("router:0.8"))
    assert r.status_code == 200
    assert r.headers["x-router-model"] == "deepseek-v4-pro" == r.json()["model"]
    body = r.json()
    assert body["choices"][0]["message"]["content"].startswith("deepseek-v4-pro:")
    usage = body["usage"]
    row = rows(server).iloc[0]
    assert row["request_id"] == r.headers["x-request-id"]
    assert (row["chosen_model"], row["served_model"], row["quality_bar"], row["status"]) == (
        "deepseek-v4-pro", "deepseek-v4-pro", 0.8, 200)
    assert (row["input_tokens"], row["output_tokens"]) == (usage["prompt_tokens"],
                                                           usage["completion_tokens"])
    # Cost from the upstream's usage and catalog prices (0.55 / 2.20 USD per 1M).
    assert row["cost_usd"] == pytest.approx((usage["prompt_tokens"] * 0.55
                                             + usage["completion_tokens"] * 2.20) / 1e6)
    assert row["propensity"] == 1.0 and not row["explored"] and not row["cache_hit"]
    assert '"content":"hi"' in row["conversation"].replace(" ", "")
    assert row["ttfb_ms"] > 0 and row["latency_ms"] >= row["ttfb_ms"]
    assert row["model_version"] == "stub-1" and len(row["conversation_hash"]) == 64


def test_pass_through_and_router_fields_are_not_forwarded(router_factory: Any,
                                                          fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    server = router_factory(privacy_mode=True)
    r = server.client.post("/v1/chat/completions", json=chat("gpt-4o", quality_bar=0.5))
    assert r.status_code == 200 and r.headers["x-router-model"] == "gpt-4o"
    assert [q["model"] for q in control.requests] == ["gpt-4o"]
    row = rows(server).iloc[0]
    assert row["conversation"] is None and row["chosen_model"] == "gpt-4o"


def test_routed_completion_in_utility_mode_is_logged_with_its_lambda(
        router_factory: Any, fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    server = router_factory()
    r = server.client.post("/v1/chat/completions", json=chat("router", utility_lambda=1000))
    assert r.status_code == 200 and r.headers["x-router-model"] == "deepseek-v4-pro"
    assert "utility_lambda" not in control.requests[-1]
    row = rows(server).iloc[0]
    assert (row["quality_bar"], row["utility_lambda"]) == (None, 1000.0)


def test_bad_chat_requests(router_factory: Any) -> None:
    c = router_factory().client
    r = c.post("/v1/chat/completions", json=chat("gpt-5"))
    assert r.status_code == 404
    assert r.json()["error"] == {
        "message": "unknown model 'gpt-5': use `router`, `router:<bar>` or one of "
                   "claude-3-haiku, claude-3-opus, claude-3-sonnet, deepseek-v4-flash, "
                   "deepseek-v4-pro, glm-4-plus, gpt-4o, qwen3-32b",
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
    r = c.post("/v1/chat/completions", json=chat("router:1.5"))
    assert r.status_code == 400 and r.json()["error"]["message"] == (
        "model 'router:1.5': the quality bar after 'router:' must be a number in [0, 1], got "
        "'1.5' (e.g. \"model\": \"router:0.8\")")
    r = c.post("/v1/chat/completions", json={"model": "router", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["message"] == \
        "missing required field 'model'"


def test_stream_is_passed_through_byte_for_byte(router_factory: Any,
                                                fake_upstream_server: Any) -> None:
    base_url, _ = fake_upstream_server
    server = router_factory()
    body = chat("gpt-4o", "tell me a story", stream=True,
                stream_options={"include_usage": True})
    with httpx.Client() as direct:
        expected = direct.post(f"{base_url}/chat/completions", json=body).content
    chunks = []
    with server.client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-router-model"] == "gpt-4o"
        chunks = list(r.iter_raw())
    assert b"".join(chunks) == expected
    assert expected.endswith(b"data: [DONE]\n\n") and expected.count(b"data: ") > 5
    row = rows(server).iloc[0]
    assert row["stream"] and row["status"] == 200 and row["output_tokens"] > 0


def test_stream_without_usage_request_drops_the_usage_chunk(router_factory: Any) -> None:
    server = router_factory()
    with server.client.stream("POST", "/v1/chat/completions",
                              json=chat("router", stream=True)) as r:
        events = [e for chunk in r.iter_raw() for e in SSEDecoder().feed(chunk)]
    payloads = [e.json() for e in events if not e.is_done]
    # Only the usage-only chunk the router asked for is held back; `usage: null` stays.
    assert payloads and all(p.get("usage") is None for p in payloads)
    row = rows(server).iloc[0]
    assert row["output_tokens"] > 0 and row["cost_usd"] > 0  # counted from the upstream


def test_stream_failing_midway_ends_with_an_error_event(router_factory: Any,
                                                        fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    control.configure("gpt-4o", stream_fail_after=2)
    server = router_factory()
    with server.client.stream("POST", "/v1/chat/completions",
                              json=chat("gpt-4o", stream=True)) as r:
        assert r.status_code == 200
        raw = b"".join(r.iter_raw())
    events = list(SSEDecoder().feed(raw))
    assert events[-1].is_done and "error" in events[-2].json()
    assert "mid-stream" in events[-2].json()["error"]["message"]
    row = rows(server).iloc[0]
    # The connection drop is logged as the status the error maps to, with its message.
    assert row["status"] == 503 and "closed the connection before the response body was " \
        "complete" in row["error"]


def test_fallback_when_the_chosen_model_fails(router_factory: Any,
                                              fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    control.configure("deepseek-v4-pro", fail_status=503)
    server = router_factory(max_retries=0)
    r = server.client.post("/v1/chat/completions", json=chat("router:0.8"))
    assert r.status_code == 200
    # deepseek-v4-pro's catalog fallbacks are claude-3-sonnet, then gpt-4o.
    assert r.headers["x-router-model"] == "claude-3-sonnet"
    row = rows(server).iloc[0]
    assert (row["chosen_model"], row["served_model"]) == ("deepseek-v4-pro", "claude-3-sonnet")
    path = json.loads(row["fallback_path"])
    assert [(a["model"], a["status"], a["error"]) for a in path] == [
        ("deepseek-v4-pro", 503, "server_error"), ("claude-3-sonnet", 200, None)]
    text = server.client.get("/metrics").text
    assert ('router_fallbacks_total{from_model="deepseek-v4-pro",to_model="claude-3-sonnet"} '
            '1.0') in text
    assert 'router_upstream_attempts_total{model="deepseek-v4-pro",outcome="server_error"} 1.0' \
        in text


def test_whole_chain_failing_is_one_clear_error(router_factory: Any,
                                                fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    control.configure(None, fail_status=503)
    server = router_factory(max_retries=0)
    r = server.client.post("/v1/chat/completions", json=chat("gpt-4o"))
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["type"] == "upstream_error" and "chain tried: gpt-4o (server_error)" in \
        error["message"]
    row = rows(server).iloc[0]
    assert row["status"] == 502 and row["served_model"] is None


def test_cooldown_skips_a_failing_model_then_recovers(router_factory: Any,
                                                      fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    control.configure("gpt-4o", fail_status=500)
    server = router_factory(max_retries=0, cooldown_failures=1, cooldown_s=0.5)
    c = server.client
    assert c.post("/v1/chat/completions", json=chat("gpt-4o")).headers[
        "x-router-model"] == "claude-3-sonnet"
    control.requests.clear()
    # The breaker is open: gpt-4o is not even tried.
    assert c.post("/v1/chat/completions", json=chat("gpt-4o")).headers[
        "x-router-model"] == "claude-3-sonnet"
    assert [q["model"] for q in control.requests] == ["claude-3-sonnet"]
    text = c.get("/metrics").text
    assert 'router_cooldowns_total{model="gpt-4o"} 1.0' in text
    # Both were served by another model than the one asked for: two fallbacks, the
    # skipped one included, and the log says what was asked for.
    assert 'router_fallbacks_total{from_model="gpt-4o",to_model="claude-3-sonnet"} 2.0' in text
    assert list(rows(server)["chosen_model"]) == ["gpt-4o", "gpt-4o"]
    control.reset()
    time.sleep(0.6)
    assert c.post("/v1/chat/completions", json=chat("gpt-4o")).headers[
        "x-router-model"] == "gpt-4o"


def test_memory_cache_hits_and_bypass(router_factory: Any, fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    server = router_factory()
    c = server.client
    first = c.post("/v1/chat/completions", json=chat(temperature=0))
    second = c.post("/v1/chat/completions", json=chat(temperature=0))
    assert second.headers.get("x-router-cache") == "exact"
    assert second.content == first.content
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert len(control.requests) == 1
    third = c.post("/v1/chat/completions", json=chat(temperature=0),
                   headers={"cache-control": "no-cache"})
    assert "x-router-cache" not in third.headers and len(control.requests) == 2
    c.post("/v1/chat/completions", json=chat(temperature=0.7))
    c.post("/v1/chat/completions", json=chat(temperature=0.7))
    assert len(control.requests) == 4  # sampled requests are never cached
    text = c.get("/metrics").text
    assert 'router_cache_hits_total{kind="exact"} 1.0' in text
    assert 'router_cache_hits_total{kind="semantic"} 0.0' in text
    assert "router_cache_misses_total 1.0" in text
    hit = rows(server).iloc[1]
    assert hit["cache_hit"] and hit["cost_usd"] == 0.0


def test_a_cached_answer_is_only_replayed_to_a_request_routed_to_the_same_model(
        router_factory: Any, fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    server = router_factory()
    c = server.client
    # The stub routes "hi" to deepseek-v4-flash at bar 0.6 and deepseek-v4-pro at 0.8;
    # the router's fields never reach the provider, so the forwarded bodies are equal.
    low = c.post("/v1/chat/completions", json={**chat(temperature=0), "quality_bar": 0.6})
    high = c.post("/v1/chat/completions", json={**chat(temperature=0), "quality_bar": 0.8})
    assert "x-router-cache" not in high.headers  # not the cheaper model's answer
    assert high.headers["x-router-model"] != low.headers["x-router-model"]
    in_name = c.post("/v1/chat/completions", json=chat("router:0.6", temperature=0))
    assert in_name.headers.get("x-router-cache") == "exact"  # same decision, same answer
    assert in_name.headers["x-router-model"] == low.headers["x-router-model"]
    assert len(control.requests) == 2


def test_cache_hits_are_not_fallbacks(router_factory: Any, fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    control.configure("deepseek-v4-pro", fail_status=503)
    server = router_factory(max_retries=0, cooldown_failures=100)
    answers = [server.client.post("/v1/chat/completions",
                                  json=chat("router:0.8", temperature=0)) for _ in range(20)]
    assert {r.headers["x-router-model"] for r in answers} == {"claude-3-sonnet"}
    assert [r.headers.get("x-router-cache") for r in answers] == [None] + ["exact"] * 19
    assert len([q for q in control.requests if q["model"] == "claude-3-sonnet"]) == 1
    text = server.client.get("/metrics").text
    # One request fell back (the chosen model failed); 19 were answered by the cache.
    assert ('router_fallbacks_total{from_model="deepseek-v4-pro",to_model="claude-3-sonnet"} '
            '1.0') in text
    assert 'router_cache_hits_total{kind="exact"} 19.0' in text


def test_semantic_cache_header_and_metric(router_factory: Any,
                                          fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    server = router_factory(semantic_cache=True)
    c = server.client
    prompt = "Summarise the refund policy for damaged items in two sentences."
    first = c.post("/v1/chat/completions", json=chat(content=prompt, temperature=0))
    near = c.post("/v1/chat/completions",
                  json=chat(content="Hi! " + prompt.lower().rstrip("."), temperature=0))
    other = c.post("/v1/chat/completions",
                   json=chat(content=prompt.replace("two", "three"), temperature=0))
    assert near.headers.get("x-router-cache") == "semantic" and near.content == first.content
    assert "x-router-cache" not in other.headers and len(control.requests) == 2
    assert 'router_cache_hits_total{kind="semantic"} 1.0' in c.get("/metrics").text


def test_explored_answers_are_never_cached(router_factory: Any,
                                           fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    server = router_factory(exploration=0.5, exploration_seed=5)
    for _ in range(30):
        assert server.client.post("/v1/chat/completions", json=chat(
            "router:0.8", temperature=0)).status_code == 200
    frame = rows(server)
    explored = frame["explored"].astype(bool)
    assert explored.sum() > 0 and frame["cache_hit"].sum() > 0
    # An explored request asks its drawn model, and no one is answered with its answer.
    assert not frame.loc[explored, "cache_hit"].any()
    assert (frame.loc[frame["cache_hit"], "served_model"] == "deepseek-v4-pro").all()
    assert len(control.requests) == 1 + explored.sum()


@pytest.mark.redis
def test_redis_cache_is_shared_by_replicas(router_factory: Any,
                                           fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    one = router_factory(cache_url=REDIS_URL, cache_ttl_s=60)
    two = router_factory(cache_url=REDIS_URL, cache_ttl_s=60)
    body = chat(content=f"unique {uuid.uuid4().hex}", temperature=0)
    first = one.client.post("/v1/chat/completions", json=body)
    again = two.client.post("/v1/chat/completions", json=body)
    assert again.headers.get("x-router-cache") == "exact" and again.content == first.content
    assert len(control.requests) == 1


def test_exploration_logs_exact_propensities(router_factory: Any) -> None:
    server = router_factory(exploration=0.4, exploration_seed=3)
    for _ in range(40):
        assert server.client.post("/v1/chat/completions", json=chat("router:0.8")
                                  ).status_code == 200
    frame = rows(server)
    eps, m = 0.4, 4
    policy = frame["chosen_model"] == "deepseek-v4-pro"
    assert frame.loc[policy, "propensity"].round(9).eq(round(1 - eps + eps / m, 9)).all()
    assert frame.loc[~policy, "propensity"].round(9).eq(round(eps / m, 9)).all()
    assert frame.loc[~policy, "explored"].all() and (~policy).sum() > 0
    assert (frame["served_model"] == frame["chosen_model"]).all()


@pytest.mark.postgres
def test_postgres_outcome_log(router_factory: Any) -> None:
    import asyncio

    import psycopg

    schema = f"test_app_{uuid.uuid4().hex[:12]}"
    store = open_outcome_log(POSTGRES_URL, schema=schema, flush_interval_s=0.02)
    try:
        server = router_factory(store=store)
        r = server.client.post("/v1/chat/completions", json=chat("router:0.8"))
        rid = r.headers["x-request-id"]
        assert server.client.post("/v1/feedback", json={"request_id": rid, "thumbs": "down"}
                                  ).status_code == 202
        server.flush_log()
        frame = store.export_dataframe()
        assert list(frame["request_id"]) == [rid]
        assert frame.iloc[0]["served_model"] == "deepseek-v4-pro"
        assert frame.iloc[0]["feedback_quality"] == 0.0
    finally:
        asyncio.run(store.close())
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_one_server_log_line_per_answered_request(router_factory: Any, caplog: Any) -> None:
    """Routed, pass-through, cache hit and streamed: one line each, never the prompt."""
    caplog.set_level("INFO", logger="router.api._pipeline")
    server = router_factory()
    c = server.client
    secret = f"prompt text {uuid.uuid4().hex}"
    answered = [c.post("/v1/chat/completions", json=chat("router", secret)),
                c.post("/v1/chat/completions", json=chat("gpt-4o", secret)),
                c.post("/v1/chat/completions", json=chat("router", secret, temperature=0)),
                c.post("/v1/chat/completions", json=chat("router", secret, temperature=0))]
    assert answered[3].headers.get("x-router-cache") == "exact"
    with c.stream("POST", "/v1/chat/completions",
                  json=chat("router", secret, stream=True)) as r:
        r.read()
        answered.append(r)
    ids = [r.headers["x-request-id"] for r in answered]
    models = [r.headers["x-router-model"] for r in answered]

    def lines() -> list[str]:
        return [rec.getMessage() for rec in caplog.records
                if rec.name == "router.api._pipeline" and rec.getMessage().startswith("request ")]

    deadline = time.monotonic() + 10  # the stream's line is written as its generator ends
    while len(lines()) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.02)
    got = lines()
    assert len(got) == len(ids)
    for request_id, model, how in zip(ids, models, ["", "", "", " (cache hit, exact)",
                                                    " (stream)"],
                                      strict=True):
        (line,) = [g for g in got if g.startswith(f"request {request_id} ")]
        assert re.fullmatch(rf"request {request_id} -> {re.escape(model)} in \d+\.\d ms, "
                            rf"\$\d\.\d{{6}}{re.escape(how)}", line), line
    assert secret not in caplog.text


USER = [{"role": "user", "content": "hi"}]
NO_CONTENT = ("messages.0.content is missing or null: only an assistant message with "
              "tool_calls may have no content")
BLANK = "messages.0.content is blank: a user message needs text"


@pytest.mark.parametrize(("body", "param", "message"), [
    (chat(temperature="hot"), "temperature",
     "temperature: Input should be a valid number, got 'hot'"),
    (chat(temperature=2.5), "temperature",
     "temperature: Input should be less than or equal to 2, got 2.5"),
    (chat(top_p=1.5), "top_p", "top_p: Input should be less than or equal to 1, got 1.5"),
    (chat(max_tokens=-5), "max_tokens",
     "max_tokens: Input should be greater than or equal to 1, got -5"),
    (chat(max_completion_tokens=0), "max_completion_tokens",
     "max_completion_tokens: Input should be greater than or equal to 1, got 0"),
    (chat(n=0), "n", "n: Input should be greater than or equal to 1, got 0"),
    (chat(stream="yes"), "stream", "stream: Input should be a valid boolean, got 'yes'"),
    (chat(stream="true"), "stream", "stream: Input should be a valid boolean, got 'true'"),
    ({"model": "router", "messages": [{"role": "user"}]}, "messages.0.content", NO_CONTENT),
    ({"model": "router", "messages": [{"role": "user", "content": None}]},
     "messages.0.content", NO_CONTENT),
    ({"model": "router", "messages": [{"role": "assistant", "content": None}]},
     "messages.0.content", NO_CONTENT),
    (chat(content=""), "messages.0.content", BLANK),
    (chat(content=" \n\t"), "messages.0.content", BLANK),
    ({"model": "router", "messages": [{"role": "user", "content": []}]},
     "messages.0.content", BLANK),
    ({"model": "router", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages.0.content.0.text", "messages.0.content.0.text must be a string in a text part"),
    ({"model": "router", "messages": [{"role": "user", "content": 5}]}, "messages.0.content",
     "messages.0.content must be a string or a list of content parts, got a number"),
    ({"model": "router", "messages": [{"role": "bot", "content": "hi"}]}, "messages.0.role",
     "messages.0 has role 'bot': use one of assistant, developer, function, system, tool, "
     "user"),
    ({"model": "router", "messages": ""}, "messages",
     "messages must be a list of messages, got a string"),
    ({"model": "router", "messages": []}, "messages",
     'messages is empty: send at least one {"role": "user", "content": ...} message'),
    ({"model": "", "messages": USER}, "model",
     "model: String should have at least 1 character, got ''"),
    (chat("gpt-4o", max_tokens=0), "max_tokens",  # pass-through is checked the same
     "max_tokens: Input should be greater than or equal to 1, got 0"),
])
def test_bad_chat_input_is_refused_on_both_doors_before_it_is_forwarded(
        router_factory: Any, fake_upstream_server: Any, body: dict[str, Any], param: str,
        message: str) -> None:
    _, control = fake_upstream_server
    server = router_factory()
    lean, full = app_fixtures.post_both(server.client, "/v1/chat/completions", body)
    for r in (lean, full):
        assert (r.status_code, r.json()) == (400, {"error": {
            "message": message, "type": "invalid_request_error", "param": param,
            "code": "invalid_messages" if param.startswith("messages") else "invalid_value"}})
    assert control.requests == [] and len(rows(server)) == 0
    assert 'router_requests_total{endpoint="chat",model="none",status="400"} 2.0' in \
        server.client.get("/metrics").text


def test_what_openai_accepts_still_passes_through(router_factory: Any) -> None:
    from router.catalog import DEFAULT_CATALOG_PATH, load_catalog
    from router.upstream import UpstreamClient

    forwarded: list[bytes] = []

    def provider(request: httpx.Request) -> httpx.Response:
        forwarded.append(request.content)
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    upstream = UpstreamClient(
        load_catalog(DEFAULT_CATALOG_PATH), base_url_override="http://provider.test/v1",
        http=httpx.AsyncClient(transport=httpx.MockTransport(provider)))
    server = router_factory(upstream=upstream)
    tool_call = {"id": "call_1", "type": "function",
                 "function": {"name": "f", "arguments": "{}"}}
    body = {"model": "gpt-4o", "temperature": 0.5, "top_p": 1, "max_tokens": 5, "n": 1,
            "stream": None, "seed": 3, "x-vendor-option": {"keep": True},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "look"},
                                             {"type": "image_url",
                                              "image_url": {"url": "data:,"}}]},
                {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                {"role": "tool", "tool_call_id": "call_1", "content": ""},
                {"role": "user", "content": "and now?", "name": "ann"}]}
    lean, full = app_fixtures.post_both(server.client, "/v1/chat/completions", body)
    assert lean.status_code == full.status_code == 200
    # Both doors forward the same bytes: the caller's body, unknown fields kept.
    assert len(forwarded) == 2 and forwarded[0] == forwarded[1]
    sent = json.loads(forwarded[0])
    assert sent["messages"] == body["messages"] and sent["x-vendor-option"] == {"keep": True}
    assert (sent["temperature"], sent["max_tokens"], sent["seed"]) == (0.5, 5, 3)


def test_a_huge_refused_value_is_not_echoed_back(router_factory: Any) -> None:
    server = router_factory()
    r = server.client.post("/v1/chat/completions", json=chat(temperature="h" * 1_000_000))
    assert r.status_code == 400 and len(r.content) < 400
    assert r.json()["error"]["message"] == (
        "temperature: Input should be a valid number, got '" + "h" * 63
        + "... (1000000 characters)")


def test_upstream_calls_go_through_the_environments_proxy(
        router_factory: Any, fake_upstream_server: Any, monkeypatch: Any) -> None:
    # A team behind a corporate proxy must reach its providers: HTTP_PROXY is honoured
    # (the router's own HTTP pool has no proxy support, so those origins use httpx's).
    import http.server
    import threading

    seen: list[str] = []

    class ForwardProxy(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            seen.append(self.path)  # absolute-form: the proxy is asked for the origin
            body = self.rfile.read(int(self.headers["content-length"]))
            with httpx.Client(trust_env=False) as client:
                answer = client.post(self.path, content=body,
                                     headers={"content-type": "application/json"})
            self.send_response(answer.status_code)
            self.send_header("content-type", answer.headers["content-type"])
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args: Any) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ForwardProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        server = router_factory()
        r = server.client.post("/v1/chat/completions", json=chat())
        assert r.status_code == 200, r.text
        base_url, _ = fake_upstream_server
        # (The test's own client honours HTTP_PROXY too: its request to the router is
        # the other one the proxy saw.)
        assert f"{base_url}/chat/completions" in seen
        # NO_PROXY exempts a host, as httpx reads it.
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        before = len(seen)
        direct = router_factory()
        assert direct.client.post("/v1/chat/completions", json=chat()).status_code == 200
        assert len(seen) == before
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_chat_honours_a_latency_limit_from_the_body_or_the_header(
        router_factory: Any, fake_upstream_server: Any) -> None:
    _, control = fake_upstream_server
    # Expected latency: glm-4-plus 400, deepseek-v4-flash 900, deepseek-v4-pro 1500,
    # gpt-4o 2500 ms; at bar 0.8 the choice without a limit is deepseek-v4-pro.
    server = router_factory(model=app_fixtures.StubModel(latency=(400, 900, 1500, 2500)))
    c = server.client
    assert c.post("/v1/chat/completions", json=chat("router:0.8")).headers[
        "x-router-model"] == "deepseek-v4-pro"
    field = c.post("/v1/chat/completions", json=chat("router:0.8", max_latency_ms=1000))
    header = c.post("/v1/chat/completions", json=chat("router:0.8"),
                    headers={"x-router-max-latency-ms": "1000"})
    both = c.post("/v1/chat/completions", json=chat("router:0.8", max_latency_ms=2000),
                  headers={"x-router-max-latency-ms": "100"})  # the body field wins
    assert [r.headers["x-router-model"] for r in (field, header, both)] == [
        "deepseek-v4-flash", "deepseek-v4-flash", "deepseek-v4-pro"]
    # The router's field is never forwarded, nor is the header.
    assert all("max_latency_ms" not in sent for sent in control.requests)
    # Every candidate's expected latency reaches the log row unchanged.
    candidates = json.loads(rows(server).iloc[1]["candidates"])
    assert [c["expected_latency_ms"] for c in candidates] == [400, 900, 1500, 2500]
