"""A lean HTTP/1.1 connection pool for `httpx.AsyncClient`, on asyncio protocols and httptools.

Why this exists: under 100 concurrent streaming chat completions, httpx's default
transport (httpcore + h11 + anyio) costs about 35% of the router's CPU per stream:
anyio's `fail_after` / `CancelScope` / `current_task` on every read, h11's parser in
pure Python, and httpcore's pool re-scanning every connection and queued request on
each request start and end. `PooledHTTP11Transport` keeps the httpx API (callers still
use `build_request`, `send(stream=True)`, `aiter_bytes()`, `post(...)`) and replaces
only the part below it:

- an `asyncio.Protocol` per connection with an httptools parser and a lazy read
  timer (`router.upstream._connection`); a body chunk costs one callback and one future;
- the pool is O(1) per request start and end: a LIFO stack of idle connections per
  origin, a counter of open connections and a FIFO queue of waiters.

What it is not: HTTP/1.1 only (no HTTP/2), no proxies
(`router.upstream._http.proxy_mounts` sends the origins the environment's
proxies cover through aiohttp instead), one request at a time per connection
(no pipelining), no `Upgrade`. Request bodies are read whole before sending
(our requests are JSON).

Errors are httpx's (`ConnectError`, `ConnectTimeout`, `PoolTimeout`, `ReadTimeout`,
`WriteTimeout`, `ReadError`, `WriteError`, `RemoteProtocolError`), always carrying
the request, so callers translate them exactly as before.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any

import httpx

from router.upstream._connection import HTTP11Connection, Origin, host_port

__all__ = ["PooledHTTP11Transport"]

_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_DEFAULT_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128,
                               keepalive_expiry=5.0)


class _ResponseStream(httpx.AsyncByteStream):
    """Body bytes as they arrive; `aclose` hands the connection back to the pool."""

    def __init__(self, pool: PooledHTTP11Transport, conn: HTTP11Connection,
                 read_timeout: float | None) -> None:
        self._pool = pool
        self._conn: HTTP11Connection | None = conn
        self._read_timeout = read_timeout

    def __aiter__(self) -> _ResponseStream:  # type: ignore[override]
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        if conn is None:
            raise httpx.StreamClosed()
        while True:
            body = conn.body
            if body:
                chunk = body[0] if len(body) == 1 else b"".join(body)
                body.clear()
                conn.buffered = 0
                if conn.reading_paused:
                    conn.reading_paused = False
                    if not conn.closed:
                        conn.transport.resume_reading()  # type: ignore[union-attr]
                return chunk
            if conn.complete:
                raise StopAsyncIteration
            try:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(self._read_timeout, httpx.ReadTimeout)
            except BaseException:
                # Timeout, error or cancellation mid-body: the connection's state is
                # unknown, so it is closed now, never pooled.
                self._conn = None
                self._pool._discard(conn)
                raise

    async def aclose(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._pool._release(conn)


class PooledHTTP11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive pool for `httpx.AsyncClient(transport=...)`; see the module doc.

    `limits`: `max_connections` open connections in all (None = unlimited; requests
    beyond wait FIFO for `timeout.pool` seconds, then `httpx.PoolTimeout`),
    `max_keepalive_connections` idle ones kept, `keepalive_expiry` seconds an idle
    one may wait before it is closed instead of reused. `ssl_context` None means
    httpx's default (certifi's CAs), made the first time an https URL is used.

    Idle connections are a LIFO stack per origin: the most recently used connection
    is reused first, so under a steady load a few connections stay hot and the
    surplus ages past `keepalive_expiry` and is closed, instead of every connection
    being kept barely alive by round-robin reuse (which servers then close under us).

    One retry: when a *reused* connection fails before a single response byte
    arrived, the request is sent once more on a fresh connection. That is the
    keep-alive race: the server closed the connection as idle just as our request
    was on its way, so it never read it, let alone acted on it (browsers and urllib3
    retry this case too). A fresh connection has no such race, so its failures are
    never retried, nor are timeouts (the server may be working on the request).
    """

    def __init__(self, *, limits: httpx.Limits = _DEFAULT_LIMITS,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._max_connections = limits.max_connections
        self._max_keepalive = limits.max_keepalive_connections
        self._keepalive_expiry = limits.keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[Origin, deque[HTTP11Connection]] = {}
        self._n_open = 0  # connections open or being opened: the slots in use
        self._n_idle = 0
        self._waiters: deque[tuple[Origin, asyncio.Future[HTTP11Connection | None]]] = deque()
        self._connections: set[HTTP11Connection] = set()
        self._closed = False

    # ------------------------------------------------------------ request

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("PooledHTTP11Transport is closed (aclose() was called); "
                               "build a new transport or client")
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(
                f"unsupported URL scheme {scheme.decode()!r} in {url}: http or https only",
                request=request)
        origin = (scheme, url.raw_host, url.port or _DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        data = _serialize(request, await request.aread())
        conn = await self._acquire(origin, request, timeouts.get("pool"))
        if conn is None:
            conn = await self._connect(origin, request, timeouts.get("connect"))
        try:
            await conn.exchange(request, data, timeouts)
        except httpx.TransportError as exc:
            if not (conn.reused and not conn.got_bytes
                    and not isinstance(exc, httpx.TimeoutException)):
                self._discard(conn)
                raise
            self._discard(conn, keep_slot=True)
            conn = await self._connect(origin, request, timeouts.get("connect"))
            try:
                await conn.exchange(request, data, timeouts)
            except BaseException:
                self._discard(conn)
                raise
        except BaseException:
            self._discard(conn)  # cancelled: the connection's state is unknown
            raise
        return httpx.Response(conn.status, headers=conn.headers,
                              stream=_ResponseStream(self, conn, timeouts.get("read")),
                              extensions={"http_version": b"HTTP/1.1",
                                          "reason_phrase": conn.reason})

    async def aclose(self) -> None:
        """Close every connection, idle or in use; later requests raise RuntimeError."""
        self._closed = True
        for conn in list(self._connections):
            if not conn.complete and conn.error is None:
                conn.error = httpx.ReadError("the transport was closed while the response "
                                             "was being read", request=conn.request)
            conn.idle = False
            conn.close()
            conn._wake()
        self._connections.clear()
        self._idle.clear()
        self._n_idle = 0
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("PooledHTTP11Transport was closed while "
                                                  "this request waited for a connection"))
        await asyncio.sleep(0)  # let the transports run connection_lost and free sockets

    # ------------------------------------------------------------ pool

    async def _acquire(self, origin: Origin, request: httpx.Request,
                       timeout: float | None) -> HTTP11Connection | None:
        """An idle connection to `origin`, or None when a slot was reserved for a new one."""
        stack = self._idle.get(origin)
        if stack:
            now = asyncio.get_running_loop().time()
            expiry = self._keepalive_expiry
            while stack:
                conn = stack.pop()
                if not conn.idle:
                    continue  # closed while idle; already accounted for
                conn.idle = False
                self._n_idle -= 1
                if expiry is not None and now - conn.idle_since > expiry:
                    # The rest of the stack has been idle even longer.
                    self._discard(conn)
                    continue
                conn.reused = True
                return conn
        if self._max_connections is None or self._n_open < self._max_connections:
            self._n_open += 1
            return None
        if self._n_idle and self._evict_other():
            return None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[HTTP11Connection | None] = loop.create_future()
        self._waiters.append((origin, waiter))
        timer = None
        if timeout is not None:
            timer = loop.call_later(timeout, _expire_waiter, waiter, httpx.PoolTimeout(
                f"no connection to {host_port(origin)} became free within {timeout:g} s "
                f"(max_connections={self._max_connections})", request=request))
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                granted = waiter.result()  # granted, but we were cancelled before resuming
                if granted is None:
                    self._free_slot()
                else:
                    self._release(granted)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _evict_other(self) -> bool:
        """Close the coldest idle connection of some other origin; its slot is ours.
        O(origins), and only when the pool is full and the caller's origin has none idle."""
        for stack in self._idle.values():
            while stack:
                conn = stack.popleft()
                if conn.idle:
                    conn.idle = False
                    self._n_idle -= 1
                    self._discard(conn, keep_slot=True)
                    return True
        return False

    async def _connect(self, origin: Origin, request: httpx.Request,
                       timeout: float | None) -> HTTP11Connection:
        """Open a connection in a slot already reserved by the caller."""
        loop = asyncio.get_running_loop()
        scheme, raw_host, port = origin
        host = raw_host.decode("ascii")
        conn = HTTP11Connection(loop, origin)
        context = None
        if scheme == b"https":
            if self._ssl_context is None:
                self._ssl_context = httpx.create_ssl_context()
            context = self._ssl_context
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: conn, host, port, ssl=context,
                                             server_hostname=host if context else None)
        except TimeoutError:
            self._free_slot()
            raise httpx.ConnectTimeout(f"connecting to {host_port(origin)} timed out "
                                       f"(connect timeout {timeout} s)",
                                       request=request) from None
        except (OSError, ssl.SSLError) as exc:
            self._free_slot()
            raise httpx.ConnectError(f"cannot connect to {host_port(origin)}: {exc}",
                                     request=request) from exc
        except BaseException:
            self._free_slot()
            raise
        if self._closed:
            conn.close()
            self._free_slot()
            raise RuntimeError("PooledHTTP11Transport was closed while connecting")
        conn.on_idle_lost = self._idle_lost
        self._connections.add(conn)
        return conn

    def _release(self, conn: HTTP11Connection) -> None:
        """The owner is done with `conn`: keep it for reuse if it can be, else close it."""
        if not conn.reusable() or self._closed:
            self._discard(conn)
            return
        conn.request = None
        waiters = self._waiters
        while waiters:
            origin, waiter = waiters.popleft()
            if waiter.done():
                continue
            if origin == conn.origin:
                conn.reused = True
                waiter.set_result(conn)  # hand it over, still checked out
            else:
                self._discard(conn, keep_slot=True)
                waiter.set_result(None)  # its slot goes to the waiter
            return
        max_idle = self._max_keepalive
        if max_idle is not None and max_idle < 1:
            self._discard(conn)
            return
        now = conn.loop.time()
        stack = self._idle.get(conn.origin)
        if stack is None:
            stack = self._idle[conn.origin] = deque()
        expiry = self._keepalive_expiry
        while stack and (not stack[0].idle or
                         (expiry is not None and now - stack[0].idle_since > expiry)):
            self._discard_idle(stack.popleft())
        if max_idle is not None and self._n_idle >= max_idle:
            if not stack:
                self._discard(conn)
                return
            self._discard_idle(stack.popleft())  # the coldest of this origin makes room
        conn.idle = True
        conn.idle_since = now
        stack.append(conn)
        self._n_idle += 1

    def _discard_idle(self, conn: HTTP11Connection) -> None:
        if conn.idle:
            conn.idle = False
            self._n_idle -= 1
            self._discard(conn)

    def _idle_lost(self, conn: HTTP11Connection) -> None:
        """The server closed (or wrote to) an idle connection: drop it. It stays in its
        stack until popped, where `idle == False` marks it as gone (O(1) here)."""
        self._discard_idle(conn)

    def _discard(self, conn: HTTP11Connection, *, keep_slot: bool = False) -> None:
        conn.close()
        if not conn.retired:
            conn.retired = True
            self._connections.discard(conn)
            if not keep_slot:
                self._free_slot()

    def _free_slot(self) -> None:
        waiters = self._waiters
        while waiters:
            _, waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the first waiter
                return
        self._n_open -= 1


def _expire_waiter(waiter: asyncio.Future[Any], error: Exception) -> None:
    if not waiter.done():
        waiter.set_exception(error)


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    """Request line, headers (httpx already set Host, Content-Length, ...) and body."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in request.headers.raw:
        if b"\n" in value or b"\r" in value or b"\n" in name or b"\r" in name:
            raise httpx.LocalProtocolError(f"header {name!r} contains a line break",
                                           request=request)
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            chunked = True
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    if chunked:  # a streamed request body, read whole above: send it as one chunk
        if body:
            parts += (b"%x\r\n" % len(body), body, b"\r\n")
        parts.append(b"0\r\n\r\n")
    else:
        parts.append(body)
    return b"".join(parts)
