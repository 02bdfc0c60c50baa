"""A scripted loopback HTTP server for the upstream client's tests, and what they share.

`RawServer(handler)` runs `handler(server, reader, writer)` per connection and
writes whatever bytes the test scripts: what a well-behaved server never does
(awkward splits, truncated bodies, garbage, silence, closing idle connections).
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

__all__ = ["CHAT", "Handler", "RawServer", "chunked", "endless_after", "keep_alive", "ok",
           "on_uvloop", "path_of", "uvloop_cases"]

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}


Handler = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A loopback server running `handler(server, reader, writer)` per connection.

    `connections` counts accepted connections; `eofs` the connections the client
    closed, as a handler saw it (`read_request` returning None, or `saw_eof`), and
    `client_closed` is set at the first one.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.eofs = 0
        self.requests: list[bytes] = []
        self.client_closed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ssl: ssl.SSLContext | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stopped by __aexit__; asyncio's stream callback must not see it
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request (head and Content-Length body), or None when the client closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eofs += 1
            self.client_closed.set()
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request

    async def saw_eof(self, reader: asyncio.StreamReader) -> None:
        """Wait until the client closes its end (reading and dropping anything else)."""
        while await reader.read(65536):
            pass
        self.eofs += 1
        self.client_closed.set()


def keep_alive(answer: Callable[[bytes], bytes]) -> Handler:
    """A handler answering every request on a connection with `answer(request)`."""
    async def handler(server: RawServer, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while (request := await server.read_request(reader)) is not None:
            response = answer(request)
            if request.startswith(b"HEAD "):
                response = response[:response.index(b"\r\n\r\n") + 4]
            writer.write(response)
            await writer.drain()
    return handler


def endless_after(first_chunk: bytes) -> Handler:
    """A handler sending the head and one chunk of a body that never ends."""
    async def handler(server: RawServer, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n%s\r\n" % (len(first_chunk), first_chunk))
        await server.saw_eof(reader)
    return handler


def ok(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def path_of(request: bytes) -> bytes:
    return request.split(b" ", 2)[1]


def on_uvloop(case: Callable[..., Awaitable[None]], request: pytest.FixtureRequest) -> None:
    """Run the async test `case` on a uvloop loop, with its fixtures."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed")
    fixtures = {name: request.getfixturevalue(name)
                for name in inspect.signature(case).parameters}
    uvloop.run(case(**fixtures))


def uvloop_cases(names: dict[str, Any]) -> list[Callable[..., Awaitable[None]]]:
    """The async tests among a module's `globals()`."""
    return [f for name, f in list(names.items())
            if name.startswith("test_") and inspect.iscoroutinefunction(f)]
