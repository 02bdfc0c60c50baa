"""One HTTP/1.1 client connection: an asyncio protocol with an httptools parser.

The connection half of `router.upstream._transport` (which pools these): it parses
responses with `httptools` (llhttp, the C parser uvicorn uses), so a body chunk
costs one callback and one future, and it keeps one long-lived read timer that is
re-armed only when it fires. Measured per wait for a chunk, `asyncio.timeout`
doubled the cost of the wait and a `loop.call_at` + `cancel` added 30-60% (asyncio
and uvloop alike), while the lazy timer was within noise of no timer at all.
Failures are httpx's exceptions, carrying the request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
import httpx

__all__ = ["HTTP11Connection", "Origin", "host_port"]

Origin = tuple[bytes, bytes, int]

# Unread body bytes above which we stop reading the socket (the peer then blocks on
# TCP flow control instead of us buffering a slow consumer's backlog in memory).
_MAX_BUFFERED = 256 * 1024
# A response head larger than this is refused (httpcore's limit too), so a broken
# upstream cannot grow it without bound.
_MAX_HEAD = 100 * 1024


class _Unexpected(Exception):
    """Raised inside a parser callback: bytes after the response was complete."""


def host_port(origin: Origin) -> str:
    host = origin[1].decode("ascii")
    return f"[{host}]:{origin[2]}" if ":" in host else f"{host}:{origin[2]}"


class HTTP11Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: the asyncio protocol and the state of its current exchange.

    The request/stream that holds it (or the pool, while idle) is its only owner;
    `retired` makes sure its pool slot is given back exactly once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.retired = False
        self.idle = False
        self.idle_since = 0.0
        self.reused = False
        self.on_idle_lost: Any = None  # the pool's callback while idle
        # One timer per connection, re-armed lazily (see `wait`).
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = 0.0
        self.deadline: float | None = None
        self.timeout_kind: type[httpx.TimeoutException] = httpx.ReadTimeout
        self.timeout_s: float | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.request: httpx.Request | None = None
        self._reset(False)

    def _reset(self, is_head: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.is_head = is_head
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.interim = False
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.close_delimited = False
        self.body: list[bytes] = []
        self.buffered = 0
        self.reading_paused = False
        self.got_bytes = False
        self.head_bytes = 0
        self.request_sent = False
        self.unexpected = False
        self.error: Exception | None = None

    # ------------------------------------------------------------ asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports quack like asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        # high=0: pause_writing as soon as anything is left unsent and resume_writing
        # once it is all in the kernel, so we know when the request is fully written.
        transport.set_write_buffer_limits(high=0)

    def data_received(self, data: bytes) -> None:
        if self.idle or self.complete or self.request is None:
            # Bytes nobody asked for: the connection is in an unknown state.
            self.unexpected = True
            if self.idle:
                self.on_idle_lost(self)
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            # A callback's exception arrives wrapped in HttpParserCallbackError.
            if self.complete or self.unexpected:
                self.unexpected = True
            else:
                self._fail(httpx.RemoteProtocolError(
                    f"malformed HTTP response from {host_port(self.origin)}: {exc!r}",
                    request=self.request))
            return
        if not self.head_done:  # all of `data` was (interim or final) head
            self.head_bytes += len(data)
            if self.head_bytes > _MAX_HEAD:
                self._fail(httpx.RemoteProtocolError(
                    f"{host_port(self.origin)} sent a response head over {_MAX_HEAD} bytes",
                    request=self.request))

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost decides what it meant

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        if self.idle:
            self.on_idle_lost(self)
            return
        if self.request is not None and not self.complete and self.error is None:
            where = host_port(self.origin)
            if self.head_done and self.close_delimited and exc is None:
                self.complete = True  # a body delimited by the end of the connection
                self.keep_alive = False
            elif exc is not None and not self.request_sent:
                self.error = httpx.WriteError(f"sending the request to {where} failed: {exc}",
                                              request=self.request)
            elif exc is not None:
                self.error = httpx.ReadError(f"connection to {where} failed: {exc}",
                                             request=self.request)
            elif self.head_done:
                self.error = httpx.RemoteProtocolError(
                    f"{where} closed the connection before the response body was complete",
                    request=self.request)
            else:
                self.error = httpx.RemoteProtocolError(
                    f"{where} closed the connection without sending a response",
                    request=self.request)
        self._wake()

    def pause_writing(self) -> None:
        pass  # request_sent stays False until resume_writing

    def resume_writing(self) -> None:
        if self.request is not None and not self.request_sent:
            self.request_sent = True
            self._wake()

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            self.unexpected = True
            raise _Unexpected

    def on_status(self, status: bytes) -> None:
        self.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                self._fail(httpx.RemoteProtocolError(
                    f"{host_port(self.origin)} switched protocols (101); this transport "
                    "speaks HTTP/1.1 only", request=self.request))
                raise _Unexpected
            self.interim = True  # 100 Continue, 103 Early Hints: skip
            self.headers = []
            return
        self.status = status
        self.head_done = True
        if self.is_head:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()
        elif status != 204 and status != 304:
            framed = False
            for name, value in self.headers:
                size = len(name)
                if ((size == 14 and name.lower() == b"content-length") or
                        (size == 17 and name.lower() == b"transfer-encoding" and
                         value.rstrip().lower().endswith(b"chunked"))):
                    framed = True
                    break
            self.close_delimited = not framed
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.unexpected = True
            raise _Unexpected  # a body after a HEAD response
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _MAX_BUFFERED and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if not self.complete:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # ------------------------------------------------------------ waiting

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.close()
        self._wake()

    async def wait(self, timeout: float | None, kind: type[httpx.TimeoutException]) -> None:
        """Wait for the next event (bytes, end of response, error) for at most `timeout` s.

        The timer is not re-armed per wait: it stays at its first deadline; when it
        fires early (because a later wait started) it moves on to the current deadline.
        So a chunk costs a `loop.time()`, not a timer handle.
        """
        loop = self.loop
        waiter = loop.create_future()
        self.waiter = waiter
        if timeout is not None:
            deadline = loop.time() + timeout
            self.deadline = deadline
            self.timeout_kind = kind
            self.timeout_s = timeout
            timer = self.timer
            if timer is None or self.timer_when > deadline:
                if timer is not None:
                    timer.cancel()
                self.timer = loop.call_at(deadline, self._on_timer)
                self.timer_when = deadline
        else:
            self.deadline = None
        try:
            await waiter
        finally:
            self.waiter = None

    def _on_timer(self) -> None:
        self.timer = None
        waiter, deadline = self.waiter, self.deadline
        if waiter is None or waiter.done() or deadline is None:
            return
        if deadline <= self.timer_when:
            self.waiter = None
            what = ("sending the request to" if self.timeout_kind is httpx.WriteTimeout
                    else "waiting for")
            waiter.set_exception(self.timeout_kind(
                f"timed out {what} {host_port(self.origin)}: nothing for "
                f"{self.timeout_s:g} s", request=self.request))
        else:
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_when = deadline

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # ------------------------------------------------------------ exchange

    async def exchange(self, request: httpx.Request, data: bytes,
                       timeouts: dict[str, float | None]) -> None:
        """Send `data` and wait for the response head (status and headers)."""
        transport = self.transport
        stale = (self.closed or self.unexpected or transport is None
                 or transport.is_closing())
        self.request = request
        self._reset(request.method == "HEAD")
        if stale or transport is None:
            raise httpx.RemoteProtocolError(
                f"{host_port(self.origin)} closed the connection before the request was "
                "sent", request=request)
        transport.write(data)
        if not transport.get_write_buffer_size():
            self.request_sent = True
        while not self.request_sent and not self.head_done and self.error is None:
            await self.wait(timeouts.get("write"), httpx.WriteTimeout)
        while not self.head_done and self.error is None:
            await self.wait(timeouts.get("read"), httpx.ReadTimeout)
        if self.error is not None:
            raise self.error

    def reusable(self) -> bool:
        return (self.complete and not self.body and self.keep_alive and self.error is None
                and self.request_sent and not self.unexpected and not self.closed)

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()
