"""aiohttp's client under `httpx.AsyncClient`: the upstream transport by default.

Why aiohttp and not httpx's own transport: under 100 concurrent streams httpcore's
pool re-scans every connection for every other one on each request start and end
(`AsyncConnectionPool._assign_requests_to_connections`, quadratic in connections),
which measured 100-300 ms of CPU per stream (`bench/upstream_client.py`); aiohttp's
connector does the same work in about 1.5 ms. Why under httpx: `UpstreamClient`,
its tests (`httpx.MockTransport`) and every caller that injects a client keep one
API, and only this seam changes.

aiohttp does the HTTP/1.1, the keep-alive pool (`limits.max_connections` open at
most, idle ones closed after `limits.keepalive_expiry`; aiohttp has no cap on idle
connections apart from that), TLS (verified: httpx's default context, certifi's
CAs or SSL_CERT_FILE / SSL_CERT_DIR) and the proxy (`proxy`, one per transport;
`router.upstream._http.proxy_mounts` picks it from the environment). Failures come
out as httpx's exceptions (`_httpx_error`), so `translate_error` reads them as it
always has: a timeout is a timeout, a reset or a cut body a read error.
"""

from __future__ import annotations

import io
import ssl
from typing import Any

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpTransport"]

# Request bodies above this go to aiohttp as a file (its threshold for warning).
_LARGE_BODY = 1024 * 1024
_DEFAULT_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128,
                               keepalive_expiry=5.0)


def _httpx_error(exc: BaseException, request: httpx.Request, *,
                 reading: bool) -> httpx.TransportError:
    """The httpx exception for an aiohttp failure; `reading`: the response head had come."""
    message = str(exc) or type(exc).__name__
    kind: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(exc, TimeoutError):  # SocketTimeoutError: a read went silent
        kind = httpx.ReadTimeout
    elif isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        kind = httpx.ProxyError
    elif isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS
        kind = httpx.ConnectError
    elif isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        kind = httpx.UnsupportedProtocol
    elif reading and isinstance(exc, aiohttp.ClientPayloadError):
        # aiohttp's words ("TransferEncodingError: 400, message=...") say nothing
        # to the reader of a log row; the provider cut the body short.
        where = request.url.netloc.decode("ascii")
        return httpx.ReadError(
            f"{where} closed the connection before the response body was complete",
            request=request)
    elif reading:
        kind = httpx.ReadError
    else:  # the server closed or broke the connection before a whole response head
        kind = httpx.RemoteProtocolError
    return kind(message, request=request)


class _Body(httpx.AsyncByteStream):
    """Body bytes as they arrive; `aclose` gives the connection back, or closes it
    when the body was not read to its end."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request
        self._chunks = response.content.iter_any()

    def __aiter__(self) -> _Body:  # type: ignore[override]
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._response.close()
            raise _httpx_error(exc, self._request, reading=True) from exc
        except BaseException:
            # Cancelled mid-body: the connection's state is unknown, so it is closed
            # now, whether or not the reader ever closes the response.
            self._response.close()
            raise

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """`httpx.AsyncClient(transport=AiohttpTransport(...))`: one `aiohttp.ClientSession`,
    made on the first request (it needs the running loop), closed by `aclose`.

    `proxy` (an http:// URL) sends every request through that proxy. Request bodies
    are read whole before sending (ours are JSON); responses are never decompressed
    here (httpx does it) and redirects are not followed (httpx's choice).
    """

    def __init__(self, *, limits: httpx.Limits = _DEFAULT_LIMITS,
                 ssl_context: ssl.SSLContext | None = None, proxy: str | None = None) -> None:
        self._limits = limits
        self._ssl_context = ssl_context
        self._proxy = proxy
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()  # verifies, honours SSL_CERT_FILE
        connector = aiohttp.TCPConnector(limit=self._limits.max_connections or 0,
                                         keepalive_timeout=self._limits.keepalive_expiry,
                                         ssl=self._ssl_context)
        # trust_env off: the proxy is chosen by the mounts (as httpx reads the
        # environment), and aiohttp would also take credentials from ~/.netrc.
        return aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     trust_env=False, timeout=aiohttp.ClientTimeout())

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        given: dict[str, float | None] = request.extensions.get("timeout") or {}
        key = (given.get("pool"), given.get("connect"), given.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            # aiohttp's `connect` covers the wait for a free connection and the connect.
            pool, connect, read = key
            waits = [t for t in (pool, connect) if t is not None]
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=None, connect=sum(waits) if waits else None, sock_connect=connect,
                sock_read=read)
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None:
            session = self._session = self._open_session()
        body: bytes | io.BytesIO | None = await request.aread() or None
        if body is not None and len(body) > _LARGE_BODY:
            body = io.BytesIO(body)  # aiohttp warns that raw bytes this large block the loop
        headers = [(k, v) for k, v in request.headers.multi_items()
                   if k != "transfer-encoding"]  # the body is whole: aiohttp sets the length
        try:
            response = await session.request(
                request.method, URL(str(request.url), encoded=True), headers=headers,
                data=body, allow_redirects=False, proxy=self._proxy,
                timeout=self._timeout(request))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _httpx_error(exc, request, reading=False) from exc
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(response.status, headers=list(response.raw_headers),
                              stream=_Body(response, request), extensions=extensions)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
