"""The one shared `httpx.AsyncClient` every upstream call goes through.

`build_http_client` makes it from the serving settings, on one of `TRANSPORTS`
(`Settings.upstream_transport`): `aiohttp`, the default, is aiohttp's client
(`router.upstream._aiohttp.AiohttpTransport`, which says why it and not httpx's
own); `httpx` is httpx's own transport (httpcore). Both honour the proxies the
environment names, as httpx reads them (`proxy_mounts`), and verify TLS.

An in-house HTTP/1.1 pool used to sit here. Measured against it in the same run
(`bench/serve.py --transports aiohttp,pooled`, 100 concurrent streams and 32
back-to-back ones, pass-through and routed), aiohttp cost 0.96-1.39x its router
CPU per proxied stream over four runs, never the 1.5x that would have justified
owning an HTTP client.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Literal

import httpx

from router.errors import ConfigError
from router.upstream._aiohttp import AiohttpTransport

__all__ = ["TRANSPORTS", "build_http_client", "proxy_mounts"]

#: The values of `Settings.upstream_transport`, default first.
TRANSPORTS = ("aiohttp", "httpx")

#: A transport going straight to the origin (None) or through a proxy (its URL).
TransportFactory = Callable[[str | None], httpx.AsyncBaseTransport]


def build_http_client(*, transport: Literal["aiohttp", "httpx"] = "aiohttp",
                      max_connections: int = 512, max_keepalive: int = 128,
                      connect_timeout_s: float = 5.0, read_timeout_s: float = 120.0,
                      environ: Mapping[str, str] | None = None) -> httpx.AsyncClient:
    """The upstream HTTP client: `max_connections` open at most, `max_keepalive` kept
    idle (aiohttp keeps any number idle up to `max_connections`); `read_timeout_s`
    is the longest silence of an upstream, and also the longest a write or a wait
    for a free connection may take. `environ` (default `os.environ`) names the proxies.

    The caller owns the client and closes it (`await client.aclose()`).
    """
    # Idle connections are dropped after 4 s: under the 5 s at which many servers
    # (uvicorn, so vLLM; Node) close them, so the client lets go first and never
    # sends a request on a connection the server is closing.
    make = _factory(transport, httpx.Limits(max_connections=max_connections,
                                            max_keepalive_connections=max_keepalive,
                                            keepalive_expiry=4.0))
    # trust_env off: httpx reads no proxy variable for a client given its own
    # transport, so the mounts carry them.
    return _CookielessClient(transport=make(None), mounts=proxy_mounts(make, environ),
                             timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
                             trust_env=False)


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _CookielessClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` that keeps no cookie. The one client serves every
    caller, so a cookie one provider response set must not ride along on another
    caller's request; and reading `Set-Cookie` through `http.cookiejar` on every
    response was 3% of the router's CPU per proxied stream."""

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        if cookies:
            raise ValueError("the upstream client keeps no cookies")


_NO_COOKIES = _NoCookies()


def _factory(transport: str, limits: httpx.Limits) -> TransportFactory:
    if transport == "aiohttp":
        return lambda proxy: AiohttpTransport(limits=limits, proxy=proxy)
    if transport == "httpx":
        return lambda proxy: httpx.AsyncHTTPTransport(limits=limits, proxy=proxy)
    raise ConfigError(f"unknown upstream transport {transport!r}",
                      hint=f"use one of: {', '.join(TRANSPORTS)} (ROUTER_UPSTREAM_TRANSPORT)")


def proxy_mounts(make: TransportFactory, environ: Mapping[str, str] | None = None
                 ) -> dict[str, httpx.AsyncBaseTransport | None]:
    """`httpx.AsyncClient(mounts=...)` for the proxies the environment (`environ`,
    default `os.environ`) names; `make(proxy_url)` builds each proxied transport.

    HTTP_PROXY, HTTPS_PROXY and ALL_PROXY (any case) route their scheme's requests
    through their proxy; each NO_PROXY host (or "*") is mounted to None, i.e. the
    client's own transport, which is how httpx reads the same variables. A team
    behind a corporate proxy reaches its providers; without the variables the
    result is empty.
    """
    found = (urllib.request.getproxies_environment() if environ is None
             else {k.lower().removesuffix("_proxy"): v for k, v in environ.items()
                   if k.lower().endswith("_proxy") and v})
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    for scheme in ("http", "https", "all"):
        url = found.get(scheme)
        if url:
            mounts[f"{scheme}://"] = make(url if "://" in url else "http://" + url)
    if mounts:
        for host in (h.strip() for h in found.get("no", "").split(",")):
            if host == "*":
                return {}
            elif host:  # the patterns httpx itself derives from NO_PROXY
                exact = host == "localhost" or host.replace(".", "").isdigit()
                mounts[f"all://{host}" if exact else f"all://*{host}"] = None
    return mounts
