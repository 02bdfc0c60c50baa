"""The upstream client: each fallback rule, retries, cooldowns, keys, usage, streaming.

Unit tests drive `UpstreamClient` through `httpx.MockTransport` with an injected
sleep and clock, so no test waits; the integration tests at the end go over a
real loopback socket to the fake upstream (`fake_upstream_server`).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from router.catalog import Catalog, ModelSpec, estimate_tokens, load_catalog
from router.errors import ConfigError
from router.upstream import (
    TRANSPORTS,
    Attempt,
    ContextLengthExceeded,
    Cooldowns,
    UpstreamClient,
    UpstreamClientError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
    build_http_client,
    chain_for,
)

KEY_ENV = "TEST_UPSTREAM_KEY"
SECRET = "sk-test-0123456789abcdef"
BODY = {"messages": [{"role": "user", "content": "What is 2 + 2?"}]}


def _spec(name: str, price: float, context: int, fallbacks: tuple[str, ...] = ()) -> ModelSpec:
    return ModelSpec(name=name, input_usd_per_mtok=price, output_usd_per_mtok=price * 4,
                     context_tokens=context, provider="test",
                     base_url=f"https://{name}.example/v1", api_key_env=KEY_ENV,
                     fallbacks=fallbacks)


CATALOG = Catalog({
    "small": _spec("small", 0.1, 1_000, ("mid",)),
    "mid": _spec("mid", 0.2, 1_000),
    "big": _spec("big", 1.0, 100_000),
    "huge": _spec("huge", 0.5, 200_000),
    "pricey": _spec("pricey", 5.0, 8_000),
}, source="test-catalog")


def ok(model: str, text: str = "four", usage: dict[str, int] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"id": "x", "object": "chat.completion", "model": model,
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}]}
    if usage is not None:
        body["usage"] = usage
    return httpx.Response(200, json=body)


def err(status: int, message: str = "nope", code: str | None = None,
        headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers,
                          json={"error": {"message": message, "type": "x", "code": code}})


class Upstream:
    """A scripted provider: per model, a list of responses (or exceptions) used in
    order, the last one repeating; records every request."""

    def __init__(self, **script: Any) -> None:
        self.script = {m: list(v) if isinstance(v, list) else [v] for m, v in script.items()}
        self.calls: list[str] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        self.calls.append(model)
        self.requests.append(request)
        steps = self.script.get(model) or [ok(model)]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return step(request)
        return step


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(sleeps: list[float]) -> Callable[..., UpstreamClient]:
    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def make(upstream: Upstream, **kwargs: Any) -> UpstreamClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
        kwargs.setdefault("sleep", fake_sleep)
        return UpstreamClient(kwargs.pop("catalog", CATALOG), http=http, **kwargs)

    return make


def summary(attempts: list[Attempt]) -> list[tuple[str, int | None, str | None]]:
    return [(a.model, a.status, a.error) for a in attempts]


# ---------------------------------------------------------------- fallback rules


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_error_retries_once_then_falls_back(make_client, sleeps, status):
    upstream = Upstream(small=err(status))
    result = await make_client(upstream).complete(BODY, ["small", "mid"])
    assert result.model == "mid"
    assert result.response["choices"][0]["message"]["content"] == "four"
    assert summary(result.attempts) == [("small", status, "server_error"),
                                        ("small", status, "server_error"), ("mid", 200, None)]
    assert sleeps == [0.25]  # one backoff before the retry of the same model
    assert result.fallbacks == 1


async def test_backoff_doubles_and_is_capped(make_client, sleeps):
    upstream = Upstream(small=err(500))
    client = make_client(upstream, max_retries=4, backoff_s=1.0, max_backoff_s=3.0,
                         cooldown=Cooldowns(failure_threshold=10))
    await client.complete(BODY, ["small", "mid"])
    assert sleeps == [1.0, 2.0, 3.0, 3.0]
    assert upstream.calls == ["small"] * 5 + ["mid"]


async def test_connect_error_falls_back(make_client):
    upstream = Upstream(small=httpx.ConnectError("connection refused"))
    result = await make_client(upstream).complete(BODY, ["small", "mid"])
    assert result.model == "mid"
    assert summary(result.attempts)[0] == ("small", None, "unavailable")


async def test_timeout_falls_back_without_retrying_the_same_model(make_client, sleeps):
    upstream = Upstream(small=httpx.ReadTimeout("read timed out"))
    result = await make_client(upstream).complete(BODY, ["small", "mid"])
    assert result.model == "mid"
    assert upstream.calls == ["small", "mid"]
    assert sleeps == []
    assert summary(result.attempts)[0] == ("small", None, "timeout")


async def test_rate_limit_honours_retry_after_then_succeeds_on_same_model(make_client, sleeps):
    upstream = Upstream(small=[err(429, headers={"Retry-After": "2"}), ok("small")])
    result = await make_client(upstream).complete(BODY, ["small", "mid"])
    assert result.model == "small"
    assert sleeps == [2.0]
    assert summary(result.attempts) == [("small", 429, "rate_limited"), ("small", 200, None)]


async def test_long_retry_after_falls_back_at_once_and_cools_the_model(make_client, sleeps):
    clock = Clock()
    cooldowns = Cooldowns(failure_threshold=5, cooldown_s=10, clock=clock)
    upstream = Upstream(small=err(429, headers={"Retry-After": "60"}))
    client = make_client(upstream, cooldown=cooldowns, clock=clock)
    result = await client.complete(BODY, ["small", "mid"])
    assert result.model == "mid"
    assert sleeps == []  # waiting a minute would hold the caller; fall back instead
    assert cooldowns.state("small") == "open"
    clock.now += 30  # past cooldown_s, but the provider asked for 60 s
    assert cooldowns.state("small") == "open"
    clock.now += 31
    assert cooldowns.state("small") == "half_open"


@pytest.mark.parametrize("status", [400, 409, 422])
async def test_other_client_errors_are_not_retried_nor_fallen_back(make_client, status,
                                                                   caplog):
    upstream = Upstream(small=err(status, "model 'small' does not accept temperature=7"))
    with pytest.raises(UpstreamClientError) as caught:
        await make_client(upstream).complete(BODY, ["small", "mid"])
    assert upstream.calls == ["small"]
    error = caught.value
    assert error.status_code == status
    assert error.upstream_status == status
    assert "does not accept temperature=7" in error.message
    assert error.to_openai()["error"]["type"] == "invalid_request_error"
    # The provider's URL is for the operator's log, not for the caller.
    assert "small.example" not in json.dumps(error.to_openai())
    assert "https://small.example/v1/chat/completions" in caplog.text


@pytest.mark.parametrize("status, kind, blame", [
    (401, "auth", "rejected the router's credentials (401)"),
    (403, "auth", "rejected the router's credentials (403)"),
    (404, "not_found", "does not know the model or the endpoint (404)"),
])
async def test_provider_auth_and_not_found_fall_back_and_open_the_breaker(
        make_client, sleeps, status, kind, blame):
    cooldowns = Cooldowns(failure_threshold=3, cooldown_s=30, clock=Clock())
    upstream = Upstream(small=err(status, "Incorrect API key provided", code="invalid_api_key"))
    client = make_client(upstream, cooldown=cooldowns)
    result = await client.complete(BODY, ["small", "mid"])
    assert result.model == "mid"
    # Not retried (the answer would not change), and the breaker opens at the first.
    assert summary(result.attempts) == [("small", status, kind), ("mid", 200, None)]
    assert sleeps == []
    assert cooldowns.state("small") == "open"
    assert client.chain_for("small") == ["mid"]


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_chain_rejected_everywhere_is_a_502_that_blames_the_provider(make_client,
                                                                           status):
    upstream = Upstream(small=err(status, "Incorrect API key provided: sk-...",
                                  code="invalid_api_key"),
                        mid=err(status, "Incorrect API key provided: sk-...",
                                code="invalid_api_key"))
    for stream in (False, True):
        client = make_client(upstream)
        call = client.stream if stream else client.complete
        with pytest.raises(UpstreamRejected) as caught:
            await call({**BODY, "stream": stream}, ["small", "mid"])
        body = caught.value.to_openai()["error"]
        # 502: an OpenAI client reads a 401 as *its* key being wrong.
        assert caught.value.status_code == 502
        assert body["message"].startswith("upstream provider for model mid ")
        assert "not yours" in body["message"] or "not your request" in body["message"]
        assert body["code"] in ("upstream_auth_failed", "upstream_not_found")
        assert body["type"] == "upstream_error"
        assert "Incorrect API key" not in body["message"]  # the provider's words: log only
        assert "example" not in body["message"]
        assert [a.model for a in caught.value.attempts] == ["small", "mid"]


async def test_context_length_moves_to_a_larger_window_in_the_chain(make_client):
    upstream = Upstream(small=err(400, "This model's maximum context length is 1000 tokens. "
                                       "However, your messages resulted in 5000 tokens.",
                                  code="context_length_exceeded"))
    # mid has the same 1k window: pointless; pricey (8k) fits.
    result = await make_client(upstream).complete(BODY, ["small", "mid", "pricey", "big"])
    assert result.model == "pricey"
    assert upstream.calls == ["small", "pricey"]
    assert summary(result.attempts)[0] == ("small", 400, "context_length")


async def test_context_length_with_no_fitting_model_in_chain_uses_smallest_fitting_catalog_model(
        make_client):
    upstream = Upstream(small=err(400, "maximum context length is 1000 tokens, you asked for "
                                       "50000 tokens", code="context_length_exceeded"))
    result = await make_client(upstream).complete(BODY, ["small", "mid"])
    # big (100k) is the smallest window that fits 50k; huge (200k) is cheaper but bigger.
    assert result.model == "big"
    assert upstream.calls == ["small", "big"]


async def test_context_length_everywhere_raises_context_error(make_client):
    too_long = err(400, "context length exceeded: 900000 tokens", code="context_length_exceeded")
    upstream = Upstream(small=too_long)
    with pytest.raises(ContextLengthExceeded) as caught:
        await make_client(upstream).complete(BODY, ["small"])
    assert caught.value.status_code == 400
    assert caught.value.needed_tokens == 900000
    assert upstream.calls == ["small"]


async def test_whole_chain_failing_raises_last_error_with_every_attempt(make_client):
    upstream = Upstream(small=err(503), mid=httpx.ConnectError("refused"))
    client = make_client(upstream, max_retries=0)
    with pytest.raises(UpstreamUnavailable) as caught:
        await client.complete(BODY, ["small", "mid"])
    error = caught.value
    assert error.status_code == 503
    assert summary(error.attempts) == [("small", 503, "server_error"),
                                       ("mid", None, "unavailable")]
    assert "chain tried: small (server_error), mid (unavailable)" in str(error)


async def test_a_200_that_is_not_a_completion_is_a_server_error(make_client):
    upstream = Upstream(small=httpx.Response(200, text="<html>gateway</html>"))
    result = await make_client(upstream, max_retries=0).complete(BODY, ["small", "mid"])
    assert result.model == "mid"
    assert summary(result.attempts)[0] == ("small", 200, "server_error")


async def test_model_without_base_url_is_skipped(make_client):
    catalog = Catalog({"local": ModelSpec("local", 0.1, 0.1), "small": CATALOG["small"],
                       "mid": CATALOG["mid"]})
    result = await make_client(Upstream(), catalog=catalog).complete(BODY, ["local", "small"])
    assert result.model == "small"
    assert summary(result.attempts)[0] == ("local", None, "unavailable")


async def test_empty_chain_is_a_clear_error(make_client):
    with pytest.raises(UpstreamUnavailable, match="fallback chain is empty"):
        await make_client(Upstream()).complete(BODY, [])


async def test_base_url_override_sends_every_model_to_one_place(make_client):
    upstream = Upstream()
    client = make_client(upstream, base_url_override="http://127.0.0.1:9/v1/")
    await client.complete(BODY, ["small"])
    assert str(upstream.requests[0].url) == "http://127.0.0.1:9/v1/chat/completions"


# ---------------------------------------------------------------- usage and hooks


async def test_usage_comes_from_the_upstream_when_present(make_client):
    upstream = Upstream(small=ok("small", usage={"prompt_tokens": 11, "completion_tokens": 7,
                                                 "total_tokens": 18}))
    result = await make_client(upstream).complete(BODY, ["small"])
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 7)
    assert result.usage.total_tokens == 18
    assert not result.usage.estimated


async def test_usage_is_counted_when_the_upstream_sends_none(make_client):
    answer = "The answer is four, because two plus two is four."
    result = await make_client(Upstream(small=ok("small", answer))).complete(BODY, ["small"])
    assert result.usage.estimated
    assert result.usage.completion_tokens == estimate_tokens(answer)
    assert result.usage.prompt_tokens == estimate_tokens("What is 2 + 2?") + 4


async def test_request_body_is_forwarded_with_the_chain_model(make_client):
    upstream = Upstream(small=err(503))
    body = {**BODY, "model": "router:0.8", "temperature": 0.2, "max_tokens": 50}
    await make_client(upstream, max_retries=0).complete(body, ["small", "mid"])
    sent = [json.loads(r.content) for r in upstream.requests]
    assert [s["model"] for s in sent] == ["small", "mid"]
    assert all(s["temperature"] == 0.2 and s["max_tokens"] == 50 and s["stream"] is False
               for s in sent)


async def test_on_attempt_sees_every_attempt_and_a_broken_hook_does_not_break_requests(
        make_client, caplog):
    seen: list[Attempt] = []

    def hook(attempt: Attempt) -> None:
        seen.append(attempt)
        raise RuntimeError("metrics backend down")

    upstream = Upstream(small=err(500))
    result = await make_client(upstream, on_attempt=hook, max_retries=0).complete(
        BODY, ["small", "mid"])
    assert result.model == "mid"
    assert summary(seen) == [("small", 500, "server_error"), ("mid", 200, None)]
    assert "on_attempt hook failed" in caplog.text


# ---------------------------------------------------------------- API keys


async def test_key_is_sent_as_bearer_and_never_in_errors_or_logs(make_client, monkeypatch,
                                                                   caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    upstream = Upstream(small=err(500, f"internal error for key {SECRET}"),
                        mid=err(400, f"Incorrect API key provided: {SECRET}"))
    with pytest.raises(UpstreamClientError) as caught:
        await make_client(upstream, max_retries=0).complete(BODY, ["small", "mid"])
    assert upstream.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert caught.value.status_code == 400
    assert SECRET not in str(caught.value)
    assert SECRET not in json.dumps(caught.value.to_openai())
    assert "[redacted]" in caught.value.message
    assert SECRET not in caplog.text
    assert "internal error for key [redacted]" in caplog.text


@pytest.mark.parametrize("cut", [4, len(SECRET) // 2, len(SECRET) - 1])
@pytest.mark.parametrize("status", [400, 500])
async def test_a_key_straddling_the_quote_limit_is_redacted_whole(make_client, monkeypatch,
                                                                   caplog, cut, status):
    # A non-JSON error page is quoted up to 300 characters: the key is removed
    # first, so the part of it before the cut cannot survive either.
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    page = "x" * (300 - cut) + SECRET + " trailing html"
    upstream = Upstream(small=httpx.Response(status, text=page))
    with pytest.raises((UpstreamClientError, UpstreamServerError)) as caught:
        await make_client(upstream, max_retries=0).complete(BODY, ["small"])
    shown = [caught.value.message, json.dumps(caught.value.to_openai()), caplog.text]
    for text in shown:
        assert SECRET[:cut] not in text
    assert "x" * 100 + "[red" in caught.value.message  # redacted, then cut


async def test_no_key_in_environment_sends_no_authorization(make_client, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    upstream = Upstream()
    await make_client(upstream).complete(BODY, ["small"])
    assert "authorization" not in upstream.requests[0].headers


async def test_key_in_a_transport_error_is_redacted(make_client, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    upstream = Upstream(small=httpx.ConnectError(f"proxy 10.1.2.3 refused Bearer {SECRET}"))
    with pytest.raises(UpstreamUnavailable) as caught:
        await make_client(upstream, max_retries=0).complete(BODY, ["small"])
    assert SECRET not in str(caught.value) and SECRET not in caplog.text
    # The transport's words name hosts: the log has them, the caller does not.
    assert caught.value.message == "upstream small unreachable (ConnectError)"
    assert "proxy 10.1.2.3 refused Bearer [redacted]" in caplog.text


async def test_base_url_override_sends_its_own_key_never_the_providers(make_client,
                                                                        monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    upstream = Upstream()
    await make_client(upstream, base_url_override="https://gw.example/v1").complete(
        BODY, ["small"])
    assert "authorization" not in upstream.requests[-1].headers
    await make_client(upstream, base_url_override="https://gw.example/v1",
                      override_api_key="gw-key-123456").complete(BODY, ["small"])
    assert upstream.requests[-1].headers["authorization"] == "Bearer gw-key-123456"
    await make_client(upstream).complete(BODY, ["small"])  # no override: the provider's
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {SECRET}"


# ---------------------------------------------------------------- cooldowns


async def test_cooldown_opens_after_n_failures_and_recovers_after_the_period(make_client):
    clock = Clock()
    changes: list[tuple[str, str]] = []
    cooldowns = Cooldowns(failure_threshold=2, cooldown_s=30, clock=clock,
                          on_state_change=lambda m, s: changes.append((m, s)))
    upstream = Upstream(small=[err(503), err(503), ok("small")])
    client = make_client(upstream, cooldown=cooldowns, clock=clock, max_retries=0)

    for _ in range(2):
        assert (await client.complete(BODY, ["small", "mid"])).model == "mid"
    assert cooldowns.state("small") == "open"
    assert changes == [("small", "open")]

    upstream.calls.clear()
    result = await client.complete(BODY, ["small", "mid"])
    assert result.model == "mid"
    assert upstream.calls == ["mid"]  # small was not even called
    assert summary(result.attempts)[0] == ("small", None, "cooldown")

    clock.now += 30  # period over: one trial request is let through, and it succeeds
    assert cooldowns.state("small") == "half_open"
    result = await client.complete(BODY, ["small", "mid"])
    assert result.model == "small"
    assert cooldowns.state("small") == "closed"
    assert changes == [("small", "open"), ("small", "half_open"), ("small", "closed")]


async def test_failed_trial_reopens_the_breaker(make_client):
    clock = Clock()
    cooldowns = Cooldowns(failure_threshold=1, cooldown_s=10, clock=clock)
    upstream = Upstream(small=err(503))
    client = make_client(upstream, cooldown=cooldowns, clock=clock, max_retries=0)
    await client.complete(BODY, ["small", "mid"])
    clock.now += 10
    result = await client.complete(BODY, ["small", "mid"])
    assert summary(result.attempts)[0] == ("small", 503, "server_error")
    assert cooldowns.state("small") == "open"
    clock.now += 5
    assert cooldowns.state("small") == "open"


def test_half_open_lets_exactly_one_trial_through():
    clock = Clock()
    cooldowns = Cooldowns(failure_threshold=1, cooldown_s=10, clock=clock)
    cooldowns.record_failure("small")
    clock.now += 10
    assert cooldowns.acquire("small") is True
    assert cooldowns.acquire("small") is False  # the trial is in flight
    cooldowns.release("small")  # the trial was cancelled: let another one try
    assert cooldowns.acquire("small") is True


async def test_when_every_model_cools_the_chain_is_tried_anyway(make_client):
    clock = Clock()
    cooldowns = Cooldowns(failure_threshold=1, cooldown_s=60, clock=clock)
    cooldowns.record_failure("small")
    cooldowns.record_failure("mid")
    upstream = Upstream()
    result = await make_client(upstream, cooldown=cooldowns, clock=clock).complete(
        BODY, ["small", "mid"])
    assert result.model == "small"
    assert cooldowns.state("small") == "closed"


async def test_client_errors_and_context_errors_do_not_count_towards_cooldown(make_client):
    cooldowns = Cooldowns(failure_threshold=1)
    upstream = Upstream(small=err(400, "bad"), mid=err(400, "too long: 5000 tokens",
                                                       code="context_length_exceeded"))
    client = make_client(upstream, cooldown=cooldowns)
    with pytest.raises(UpstreamClientError):
        await client.complete(BODY, ["small"])
    await client.complete(BODY, ["mid", "big"])
    assert cooldowns.open_models() == []


def test_cooldowns_refuse_bad_settings():
    with pytest.raises(Exception, match="failure_threshold must be >= 1"):
        Cooldowns(failure_threshold=0)


# ---------------------------------------------------------------- chain_for


def test_chain_is_model_then_catalog_fallbacks_then_candidates_by_cost():
    chain = chain_for(CATALOG, "small", ["huge", "mid", "small", "big", "not-in-catalog"])
    assert chain == ["small", "mid", "huge", "big"]


def test_chain_skips_cooling_models_unless_all_are():
    clock = Clock()
    cooldowns = Cooldowns(failure_threshold=1, clock=clock)
    cooldowns.record_failure("mid")
    assert chain_for(CATALOG, "small", ["big"], cooldowns=cooldowns) == ["small", "big"]
    for model in ("small", "big"):
        cooldowns.record_failure(model)
    assert chain_for(CATALOG, "small", ["big"], cooldowns=cooldowns) == ["small", "mid", "big"]


def test_chain_for_unknown_model_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'nope'") as caught:
        chain_for(CATALOG, "nope")
    assert "small" in (caught.value.hint or "")


def test_client_chain_for_drops_models_without_base_url(make_client):
    catalog = Catalog({"a": ModelSpec("a", 1, 1, base_url="http://a/v1", fallbacks=("b",)),
                       "b": ModelSpec("b", 1, 1)})
    assert make_client(Upstream(), catalog=catalog).chain_for("a") == ["a"]
    overridden = make_client(Upstream(), catalog=catalog, base_url_override="http://x/v1")
    assert overridden.chain_for("a") == ["a", "b"]


# ---------------------------------------------------------------- streaming (mock)


def sse(*payloads: Any, done: bool = True) -> bytes:
    out = b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads)
    return out + (b"data: [DONE]\n\n" if done else b"")


def delta(text: str) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta":
                                                              {"content": text}}]}


USAGE_CHUNK = {"object": "chat.completion.chunk", "choices": [],
               "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}


def streaming(body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


class Broken(httpx.AsyncByteStream):
    """Sends `head` then drops the connection."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self):
        yield self.head
        raise httpx.ReadError("connection reset by peer")


async def test_stream_falls_back_before_the_first_byte_and_passes_events_through(make_client):
    upstream = Upstream(small=err(503), mid=streaming(sse(delta("Hel"), delta("lo"),
                                                          USAGE_CHUNK)))
    stream = await make_client(upstream, max_retries=0).stream(
        {**BODY, "stream": True, "stream_options": {"include_usage": True}}, ["small", "mid"])
    assert stream.model == "mid"
    body = b"".join([chunk async for chunk in stream])
    assert body == sse(delta("Hel"), delta("lo"), USAGE_CHUNK)
    assert stream.finished and stream.error is None
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (9, 3)
    assert summary(stream.attempts) == [("small", 503, "server_error"), ("mid", 200, None)]
    assert stream.ttfb_s is not None
    sent = json.loads(upstream.requests[-1].content)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_stream_always_asks_for_usage_but_hides_the_usage_chunk_if_not_asked(make_client):
    upstream = Upstream(small=streaming(sse(delta("Hi"), USAGE_CHUNK)))
    stream = await make_client(upstream).stream({**BODY, "stream": True}, ["small"])
    body = b"".join([chunk async for chunk in stream])
    assert body == sse(delta("Hi"))  # a client that did not ask never sees choices: []
    assert json.loads(upstream.requests[0].content)["stream_options"] == {"include_usage": True}
    assert stream.usage.completion_tokens == 3 and not stream.usage.estimated


async def test_stream_usage_is_counted_when_the_upstream_sends_none(make_client):
    upstream = Upstream(small=streaming(sse(delta("Four, "), delta("obviously."))))
    stream = await make_client(upstream).stream({**BODY, "stream": True}, ["small"])
    _ = [chunk async for chunk in stream]
    assert stream.usage.estimated
    assert stream.usage.completion_tokens == estimate_tokens("Four, obviously.")


async def test_stream_failing_mid_way_ends_with_an_error_event_and_done(make_client, caplog):
    head = sse(delta("Hel"), delta("lo"), done=False) + b"data: {\"cho"  # cut mid-event
    upstream = Upstream(small=httpx.Response(200, stream=Broken(head)))
    stream = await make_client(upstream).stream({**BODY, "stream": True}, ["small", "mid"])
    events = [chunk async for chunk in stream]
    assert b"".join(events[:2]) == sse(delta("Hel"), delta("lo"), done=False)
    error = json.loads(events[-2].removeprefix(b"data: "))["error"]
    assert error["message"] == ("the upstream failed mid-stream: upstream small unreachable "
                                "(ReadError)")
    assert "connection reset by peer" in caplog.text  # the transport's words: log only
    assert events[-1] == b"data: [DONE]\n\n"
    assert len(events) == 4  # the half event is dropped, never forwarded
    assert upstream.calls == ["small"]  # no fallback once bytes went out
    assert isinstance(stream.error, UpstreamUnavailable)


class Pieces(httpx.AsyncByteStream):
    """Sends each of `reads` as one network read."""

    def __init__(self, *reads: bytes) -> None:
        self.reads = reads

    async def __aiter__(self):
        for piece in self.reads:
            yield piece


async def test_stream_batches_forward_whole_events_one_chunk_per_read(make_client):
    one, two, three = sse(delta("a"), done=False), sse(delta("b"), done=False), sse(delta("c"))
    # Read 1: event one and half of event two; read 2: the rest of two and three (+DONE).
    cut = len(two) // 2
    upstream = Upstream(small=httpx.Response(200, stream=Pieces(one + two[:cut],
                                                                two[cut:] + three)))
    stream = await make_client(upstream).stream({**BODY, "stream": True}, ["small"])
    chunks = [chunk async for chunk in stream.batches()]
    assert chunks == [one, two + three]  # same bytes, never half an event
    assert stream.finished and stream.usage.completion_tokens == estimate_tokens("abc")


async def test_stream_batches_end_with_the_error_event_after_whole_events(make_client):
    head = sse(delta("Hel"), delta("lo"), done=False) + b"data: {\"cho"
    upstream = Upstream(small=httpx.Response(200, stream=Broken(head)))
    stream = await make_client(upstream).stream({**BODY, "stream": True}, ["small", "mid"])
    chunks = [chunk async for chunk in stream.batches()]
    assert chunks[0] == sse(delta("Hel"), delta("lo"), done=False)
    assert chunks[-1].startswith(b"data: {\"error\"")
    assert chunks[-1].endswith(b"\n\ndata: [DONE]\n\n") and len(chunks) == 2
    assert isinstance(stream.error, UpstreamUnavailable)


async def test_stream_usage_in_a_chunk_is_read_even_among_null_usages(make_client):
    nulls = {**delta("x"), "usage": None}
    usage = {**USAGE_CHUNK, "usage": {**USAGE_CHUNK["usage"], "completion_tokens": 41}}
    upstream = Upstream(small=streaming(sse(nulls, nulls, usage)))
    stream = await make_client(upstream).stream({**BODY, "stream": True}, ["small"])
    body = b"".join([chunk async for chunk in stream.batches()])
    assert body == sse(nulls, nulls)  # usage-only chunk not asked for: not forwarded
    assert stream.usage.completion_tokens == 41 and not stream.usage.estimated


async def test_stream_without_done_is_reported_not_cut_silently(make_client):
    upstream = Upstream(small=streaming(sse(delta("Hel"), done=False)))
    stream = await make_client(upstream).stream({**BODY, "stream": True}, ["small"])
    events = [chunk async for chunk in stream]
    assert b"without data: [DONE]" in events[-2]
    assert events[-1] == b"data: [DONE]\n\n"


async def test_stream_error_event_before_any_content_falls_back(make_client):
    upstream = Upstream(small=streaming(sse({"error": {"message": "overloaded"}})),
                        mid=streaming(sse(delta("ok"))))
    stream = await make_client(upstream, max_retries=0).stream({**BODY, "stream": True},
                                                               ["small", "mid"])
    assert stream.model == "mid"
    assert b"".join([c async for c in stream]) == sse(delta("ok"))


async def test_stream_closed_early_releases_the_connection_without_a_verdict(make_client):
    closed = []

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self):
            while True:
                yield sse(delta("x"), done=False)

        async def aclose(self) -> None:
            closed.append(True)

    clock = Clock()
    cooldowns = Cooldowns(failure_threshold=1, cooldown_s=10, clock=clock)
    cooldowns.record_failure("small")
    clock.now += 10  # half-open: this stream is the trial
    upstream = Upstream(small=httpx.Response(200, stream=Endless()))
    client = make_client(upstream, cooldown=cooldowns, clock=clock)
    stream = await client.stream({**BODY, "stream": True}, ["small"])
    async for _ in stream:
        break  # the client went away
    await stream.aclose()
    assert closed == [True]
    assert not stream.finished and stream.error is None  # cut short, not failed
    assert stream.usage.completion_tokens == 1  # what was seen: "x"
    assert cooldowns.acquire("small")  # the trial slot is free again


async def test_stream_whole_chain_failing_raises_before_any_byte(make_client):
    upstream = Upstream(small=err(429), mid=httpx.ReadTimeout("slow"))
    with pytest.raises(UpstreamTimeout) as caught:
        await make_client(upstream, max_retries=0).stream({**BODY, "stream": True},
                                                          ["small", "mid"])
    assert caught.value.status_code == 504
    assert summary(caught.value.attempts) == [("small", 429, "rate_limited"),
                                              ("mid", None, "timeout")]


async def test_stream_client_error_is_not_fallen_back(make_client):
    upstream = Upstream(small=err(422, "The model `small` does not take tools"))
    with pytest.raises(UpstreamClientError, match="does not take tools"):
        await make_client(upstream).stream({**BODY, "stream": True}, ["small", "mid"])
    assert upstream.calls == ["small"]


# ---------------------------------------------------------------- real socket


@pytest.fixture(params=TRANSPORTS)
async def live_client(fake_upstream_server, request):
    base_url, control = fake_upstream_server
    async with build_http_client(transport=request.param, read_timeout_s=5) as http:
        yield UpstreamClient(load_catalog(), http=http, base_url_override=base_url,
                             backoff_s=0.01), control


async def test_live_gzip_encoded_stream_is_decoded():
    # The proxy reads plain SSE bodies raw; a compressed one must still be decoded.
    body = sse(delta("Hel"), delta("lo"), USAGE_CHUNK)
    packed = gzip.compress(body)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"content-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (packed[:10], packed[10:]):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, build_http_client(read_timeout_s=5) as http:
        client = UpstreamClient(load_catalog(), http=http,
                                base_url_override=f"http://127.0.0.1:{port}/v1")
        stream = await client.stream({**BODY, "stream": True,
                                      "stream_options": {"include_usage": True}}, ["gpt-4o"])
        assert b"".join([chunk async for chunk in stream]) == body
        assert stream.finished and stream.usage.completion_tokens == 3


async def test_live_non_streaming_falls_back_over_a_real_socket(live_client):
    client, control = live_client
    control.configure("gpt-4o", fail_status=503)
    result = await client.complete(BODY, client.chain_for("gpt-4o"))
    assert result.model == "claude-3-sonnet"  # gpt-4o's first catalog fallback
    assert result.response["model"] == "claude-3-sonnet"
    assert summary(result.attempts) == [("gpt-4o", 503, "server_error"),
                                        ("gpt-4o", 503, "server_error"),
                                        ("claude-3-sonnet", 200, None)]
    text = result.response["choices"][0]["message"]["content"]
    assert result.usage.completion_tokens == estimate_tokens(text)
    assert not result.usage.estimated


async def test_live_streaming_gives_the_fakes_text_and_usage(live_client):
    client, control = live_client
    stream = await client.stream({**BODY, "stream": True}, ["qwen3-32b"])
    events = [chunk async for chunk in stream]
    assert events[-1] == b"data: [DONE]\n\n"
    text = "".join(c["choices"][0]["delta"].get("content", "")
                   for c in (json.loads(e[6:]) for e in events[:-1]) if c["choices"])
    assert text.startswith("qwen3-32b:")
    assert stream.usage.completion_tokens == estimate_tokens(text)
    assert not stream.usage.estimated
    assert control.requests[-1]["stream"] is True


async def test_live_mid_stream_failure_ends_with_error_event_and_done(live_client):
    client, control = live_client
    control.configure("qwen3-32b", stream_fail_after=2)
    stream = await client.stream({**BODY, "stream": True}, ["qwen3-32b", "glm-4-plus"])
    events = [chunk async for chunk in stream]
    assert len(events) == 1 + 2 + 2  # role chunk, two content chunks, error, DONE
    assert json.loads(events[-2][6:])["error"]["code"] == "unavailable"
    assert events[-1] == b"data: [DONE]\n\n"
    assert [r["model"] for r in control.requests] == ["qwen3-32b"]


async def test_live_rate_limit_with_retry_after_then_success(live_client):
    client, control = live_client
    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(seconds)

    client.sleep = fake_sleep
    control.configure("glm-4-plus", fail_next=1, fail_next_status=429, retry_after_s=1.5)
    result = await client.complete(BODY, ["glm-4-plus", "gpt-4o"])
    assert result.model == "glm-4-plus"
    assert waited == [1.5]
    assert summary(result.attempts) == [("glm-4-plus", 429, "rate_limited"),
                                        ("glm-4-plus", 200, None)]


async def test_live_context_length_goes_to_a_bigger_window(live_client):
    client, _ = live_client
    long_body = {"messages": [{"role": "user", "content": "word " * 40_000}]}  # ~50k tokens
    result = await client.complete(long_body, ["qwen3-32b", "deepseek-v4-flash"])
    assert result.model == "deepseek-v4-flash"  # 32k window -> 128k window
    assert summary(result.attempts)[0] == ("qwen3-32b", 400, "context_length")


async def test_live_connection_refused_falls_back(fake_upstream_server):
    base_url, _ = fake_upstream_server
    catalog = Catalog({
        "down": ModelSpec("down", 1, 1, base_url="http://127.0.0.1:9/v1"),
        "up": ModelSpec("up", 1, 1, base_url=base_url),
    })
    async with httpx.AsyncClient(timeout=5) as http:
        async def no_sleep(_: float) -> None:
            return None

        client = UpstreamClient(catalog, http=http, sleep=no_sleep)
        result = await client.complete(BODY, ["down", "up"])
    assert result.model == "up"
    assert [a.error for a in result.attempts] == ["unavailable", "unavailable", None]


def test_rate_limited_error_carries_retry_after():
    error = UpstreamRateLimited("slow down", retry_after=3.0)
    assert error.status_code == 429 and error.retry_after == 3.0
    assert UpstreamServerError("x").status_code == 502
