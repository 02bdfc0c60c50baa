"""What a caller sees when providers fail, through a served router over loopback.

- A provider's 401/403/404 is the router's set-up (its key, the model name, the
  URL), not the caller's: the request falls through the chain, the model's breaker
  opens, and only when every model fails so does the caller get a 502 that blames
  the provider. Pass-through of a named catalog model (`"model": "gpt-4o"`) takes
  that model's catalog fallbacks like any provider failure.
- Client-facing errors never show an upstream URL (an internal address); the
  server log and the outcome log keep it.
- A provider key echoed in an error body is redacted before the quote is cut.
- With `upstream_base_url` the providers' keys are never sent there; the
  gateway's own key (`upstream_api_key`) is.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from router.fake import serve_in_thread
from router.outcome_log import open_outcome_log
from tests.router import app_fixtures

router_factory = app_fixtures.router_factory

CHOSEN = "deepseek-v4-pro"  # what the stub model routes `router:0.8` to


def chat(model: str = "router:0.8", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def rows(server: Any) -> Any:
    server.flush_log()
    return open_outcome_log(server.ctx.settings.log_url).export_dataframe()


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_provider_rejecting_the_router_falls_back_and_opens_the_breaker(
        router_factory: Any, fake_upstream_server: Any, status: int) -> None:
    _, control = fake_upstream_server
    control.configure(CHOSEN, fail_status=status)
    server = router_factory()
    first = server.client.post("/v1/chat/completions", json=chat())
    assert first.status_code == 200
    assert first.headers["x-router-model"] == "claude-3-sonnet"  # CHOSEN's first fallback
    assert server.ctx.upstream.cooldowns.state(CHOSEN) == "open"
    # The next requests skip the model instead of paying for its answer again.
    for stream in (False, True):
        again = server.client.post("/v1/chat/completions", json=chat(stream=stream))
        assert again.status_code == 200 and again.headers["x-router-model"] != CHOSEN
    assert [r["model"] for r in control.requests].count(CHOSEN) == 1
    row = rows(server).iloc[0]
    assert (row["chosen_model"], row["served_model"], row["status"]) == (
        CHOSEN, "claude-3-sonnet", 200)


@pytest.mark.parametrize("status", [401, 403, 404])
@pytest.mark.parametrize("model", ["router", "gpt-4o"])
@pytest.mark.parametrize("stream", [False, True])
def test_every_model_rejecting_the_router_is_a_502_that_blames_the_provider(
        router_factory: Any, fake_upstream_server: Any, status: int, model: str,
        stream: bool) -> None:
    base_url, control = fake_upstream_server
    control.configure(None, fail_status=status)
    server = router_factory()
    r = server.client.post("/v1/chat/completions", json=chat(model, stream=stream))
    # Never the provider's 401: an OpenAI client would say the caller's key is wrong.
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["message"].startswith("upstream provider for model ")
    assert f"({status})" in error["message"]
    assert ("not yours" if status != 404 else "not your request") in error["message"]
    assert error["type"] == "upstream_error"
    assert error["code"] == ("upstream_not_found" if status == 404 else "upstream_auth_failed")
    assert base_url.split("//")[1] not in r.text
    row = rows(server).iloc[0]
    assert row["status"] == 502 and base_url in row["error"]  # the operator's log has it


def test_upstream_urls_are_logged_never_returned(router_factory: Any,
                                                  fake_upstream_server: Any,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    base_url, control = fake_upstream_server
    caplog.set_level(logging.WARNING, logger="router")
    control.configure(None, fail_status=500)
    server = router_factory(max_retries=0)
    r = server.client.post("/v1/chat/completions", json=chat("gpt-4o"))
    assert r.status_code == 502 and "answered 500" in r.json()["error"]["message"]
    address = base_url.split("//")[1].split("/")[0]  # 127.0.0.1:PORT
    assert address not in r.text
    assert f"{base_url}/chat/completions" in caplog.text
    # No answer at all: the transport's words (they name the address) stay in the log.
    down = router_factory(upstream_base_url="http://127.0.0.1:9/v1", max_retries=0)
    for stream in (False, True):
        r = down.client.post("/v1/chat/completions", json=chat("gpt-4o", stream=stream))
        assert r.status_code == 503
        assert "127.0.0.1" not in r.text and ":9" not in r.text
        assert "unreachable (ConnectError)" in r.json()["error"]["message"]
    assert "http://127.0.0.1:9/v1/chat/completions" in caplog.text


GATEWAY_KEY = "gwkey-7f3a9c1e5b2d4f60aa"


@pytest.mark.parametrize("cut", [6, len(GATEWAY_KEY) // 2, len(GATEWAY_KEY) - 1])
def test_a_key_at_the_quote_limit_does_not_leak_in_part(router_factory: Any, cut: int,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    # A gateway answering an HTML error page that quotes the key it was sent,
    # placed so that the router's 300-character quote ends inside the key.
    caplog.set_level(logging.WARNING, logger="router")
    page = FastAPI()

    @page.post("/v1/chat/completions")
    async def fail() -> PlainTextResponse:
        return PlainTextResponse("<" + "x" * (299 - cut) + GATEWAY_KEY + "> bad gateway",
                                 status_code=502)

    with serve_in_thread(page, lifespan="off", log_level="critical") as url:
        server = router_factory(upstream_base_url=f"{url}/v1", upstream_api_key=GATEWAY_KEY,
                                max_retries=0)
        r = server.client.post("/v1/chat/completions", json=chat("gpt-4o"))
        assert r.status_code == 502 and "[red" in r.text
        row = rows(server).iloc[0]
    for where in (r.text, caplog.text, row["error"]):
        assert GATEWAY_KEY[:cut] not in where


def test_one_base_url_never_gets_the_providers_keys(router_factory: Any,
                                                    fake_upstream_server: Any,
                                                    fake_upstream_factory: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("DEEPSEEK_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ZHIPU_API_KEY"):
        monkeypatch.setenv(env, f"sk-{env.lower()}-secret")
    _, control = fake_upstream_server
    server = router_factory()
    assert server.client.post("/v1/chat/completions", json=chat()).status_code == 200
    assert control.requests[-1]["authorization"] is False
    # A gateway that wants its own key gets that one, and only that one.
    gateway_url, gateway = fake_upstream_factory(api_key=GATEWAY_KEY)
    keyed = router_factory(upstream_base_url=gateway_url, upstream_api_key=GATEWAY_KEY)
    r = keyed.client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200 and gateway.requests[-1]["authorization"] is True
    # Without it the gateway's 401 is the router's problem: a 502 that says so.
    unkeyed = router_factory(upstream_base_url=gateway_url)
    r = unkeyed.client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 502 and "rejected the router's credentials (401)" in r.text
