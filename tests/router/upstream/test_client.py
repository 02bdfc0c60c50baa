"""The upstream client's chain: each fallback rule, retries, keys, usage, `chain_for`.

Driven through `httpx.MockTransport` (`mock_upstream.Upstream`) with an injected
sleep and clock, so no test waits.
"""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from router.catalog import Catalog, ModelSpec, estimate_tokens
from router.errors import ConfigError
from router.upstream import (
    Attempt,
    ContextLengthExceeded,
    Cooldowns,
    UpstreamClientError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamUnavailable,
    chain_for,
)
from tests.router.upstream.mock_upstream import (
    BODY,
    CATALOG,
    KEY_ENV,
    SECRET,
    Clock,
    Upstream,
    err,
    ok,
    summary,
)

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




def test_rate_limited_error_carries_retry_after():
    error = UpstreamRateLimited("slow down", retry_after=3.0)
    assert error.status_code == 429 and error.retry_after == 3.0
    assert UpstreamServerError("x").status_code == 502
