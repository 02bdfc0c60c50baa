"""The router's upstream HTTP client (`build_http_client`) over real sockets.

It answers as httpx's own transport does (against the real fake upstream), goes
through the proxy the environment names except for NO_PROXY hosts, and verifies
TLS by default.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import httpx
import pytest
import trustme

from router.errors import ConfigError
from router.fake import FakeUpstreamState
from router.upstream import AiohttpTransport, build_http_client, proxy_mounts
from tests.router.upstream.raw_server import (
    CHAT,
    RawServer,
    keep_alive,
    ok,
    on_uvloop,
    path_of,
    uvloop_cases,
)


def client() -> httpx.AsyncClient:
    return build_http_client(read_timeout_s=5)


def comparable(response: httpx.Response) -> tuple[int, list[tuple[str, str]], str]:
    headers = [(k, v) for k, v in response.headers.multi_items() if k != "date"]
    return response.status_code, headers, response.http_version


# ---------------------------------------------------------------- same answers as httpx


async def test_json_post_matches_httpx_default_transport(
        fake_upstream_server: tuple[str, FakeUpstreamState]) -> None:
    base_url, _ = fake_upstream_server
    async with client() as ours, httpx.AsyncClient() as reference:
        mine = await ours.post(f"{base_url}/chat/completions", json=CHAT)
        theirs = await reference.post(f"{base_url}/chat/completions", json=CHAT)
    assert mine.status_code == 200
    assert comparable(mine) == comparable(theirs)
    assert mine.content == theirs.content
    assert mine.json()["choices"][0]["message"]["content"]
    assert mine.reason_phrase == "OK"


async def test_streaming_sse_matches_httpx_default_transport(
        fake_upstream_server: tuple[str, FakeUpstreamState]) -> None:
    base_url, control = fake_upstream_server
    control.configure(None, chunk_delay_ms=2)
    body = {**CHAT, "stream": True}
    answers = []
    async with client() as ours, httpx.AsyncClient() as reference:
        for http in (ours, reference):
            request = http.build_request("POST", f"{base_url}/chat/completions", json=body)
            response = await http.send(request, stream=True)
            try:
                chunks = [chunk async for chunk in response.aiter_bytes()]
            finally:
                await response.aclose()
            answers.append((comparable(response), b"".join(chunks), len(chunks)))
    (mine, my_bytes, my_chunks), (theirs, their_bytes, _) = answers
    assert mine == theirs
    assert my_bytes == their_bytes
    assert my_bytes.endswith(b"data: [DONE]\n\n")
    assert my_chunks > 1  # streamed as it arrived, not read whole


async def test_error_statuses_and_head_pass_through(
        fake_upstream_server: tuple[str, FakeUpstreamState]) -> None:
    base_url, _ = fake_upstream_server
    async with client() as ours:
        bad = await ours.post(f"{base_url}/chat/completions", json={"messages": []})
        models = await ours.get(f"{base_url}/models")
    assert bad.status_code == 400 and "model" in bad.json()["error"]["message"]
    assert models.status_code == 200 and models.json()["object"] == "list"


# ---------------------------------------------------------------- the router's client


async def test_environment_proxy_carries_requests_except_no_proxy_hosts() -> None:
    async with RawServer(keep_alive(lambda r: ok(b"via proxy " + path_of(r)))) as proxy, \
            RawServer(keep_alive(lambda r: ok(b"direct"))) as origin:
        environ = {"HTTP_PROXY": proxy.url, "NO_PROXY": "localhost,127.0.0.1"}
        async with build_http_client(environ=environ, read_timeout_s=5) as http:
            proxied = await http.post("http://provider.example/v1/chat/completions",
                                      json=CHAT)
            direct = await http.get(origin.url)
    # A proxy gets the absolute URL in the request line (RFC 9112, 3.2.2).
    assert proxied.content == b"via proxy http://provider.example/v1/chat/completions"
    assert proxy.requests[0].startswith(b"POST http://provider.example/v1/chat/completions ")
    assert direct.content == b"direct" and len(proxy.requests) == 1


async def test_the_router_client_verifies_tls_by_default(private_ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    private_ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server = RawServer(keep_alive(lambda r: ok(b"secret")))
    server._ssl = server_context
    async with server, build_http_client(read_timeout_s=5) as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(server.url)
    assert not server.requests


async def test_a_cookie_one_answer_sets_is_not_sent_on_the_next_request() -> None:
    # One client serves every caller: a provider's cookie must not ride along on
    # another caller's request.
    async with RawServer(keep_alive(lambda r: ok(b"hi", b"Set-Cookie: session=caller-a; Path=/"))
                         ) as server:
        for transport in ("aiohttp", "httpx"):
            async with build_http_client(transport=transport, read_timeout_s=5) as http:
                first = await http.post(f"{server.url}/v1/chat/completions", content=b"{}")
                await http.post(f"{server.url}/v1/chat/completions", content=b"{}")
                assert first.headers["set-cookie"].startswith("session=caller-a")
                assert len(http.cookies) == 0
                with pytest.raises(ValueError, match="keeps no cookies"):
                    http.cookies = {"session": "x"}
    assert len(server.requests) == 4
    assert not any(b"cookie:" in r.lower() for r in server.requests)


def test_proxy_mounts_follow_the_environment_as_httpx_reads_it() -> None:
    def make(url: str | None) -> httpx.AsyncBaseTransport:
        return AiohttpTransport(proxy=url)

    assert proxy_mounts(make, {}) == {}
    mounts = proxy_mounts(make, {"HTTPS_PROXY": "proxy.corp:3128",
                                 "NO_PROXY": "localhost, 10.0.0.7,.internal"})
    via = mounts.pop("https://")
    assert isinstance(via, AiohttpTransport) and via._proxy == "http://proxy.corp:3128"
    assert mounts == {"all://localhost": None, "all://10.0.0.7": None,
                      "all://*.internal": None}
    assert proxy_mounts(make, {"all_proxy": "http://p:1", "no_proxy": "*"}) == {}


def test_an_unknown_transport_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="'h3'") as caught:
        build_http_client(transport="h3")  # type: ignore[arg-type]
    assert "aiohttp" in (caught.value.hint or "")

# ---------------------------------------------------------------- the same on uvloop

# The router runs on uvloop (uvicorn's default when installed), whose transports are
# not asyncio's: every test above runs again on a uvloop loop.


@pytest.mark.parametrize("case", uvloop_cases(globals()), ids=lambda f: f.__name__[5:])
def test_on_uvloop(case: Callable[..., Awaitable[None]], request: pytest.FixtureRequest) -> None:
    on_uvloop(case, request)
