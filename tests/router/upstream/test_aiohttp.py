"""`AiohttpTransport`, aiohttp's client under httpx, over real loopback sockets.

Small `asyncio.start_server` servers (`RawServer`) write scripted bytes, for what a
well-behaved server never does: awkward splits, truncated bodies, garbage,
silence, closing idle connections. Failures must come out as the httpx
exceptions `translate_error` reads: a timeout as a timeout, a cut as a read error.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import trustme

from router.upstream import AiohttpTransport
from tests.router.upstream.raw_server import (
    CHAT,
    RawServer,
    chunked,
    endless_after,
    keep_alive,
    ok,
    on_uvloop,
    path_of,
    uvloop_cases,
)


def client(**options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AiohttpTransport(**options))


# ---------------------------------------------------------------- framing


async def test_chunked_body_split_one_byte_at_a_time() -> None:
    pieces = (b"data: first\n\n", b"x" * 40, b"data: [DONE]\n\n")
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(*pieces)

    async def trickle(server: RawServer, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            # Chunk-size lines ("28\r\n" for the 40-byte piece) arrive split too.
            for i in range(len(wire)):
                writer.write(wire[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0.0002)

    async with RawServer(trickle) as server, client() as http:
        first = await http.get(server.url)
        second = await http.get(server.url)
    assert first.status_code == 200
    assert first.content == second.content == b"".join(pieces)
    assert server.connections == 1


async def test_stream_yields_bytes_before_the_body_ends() -> None:
    release = asyncio.Event()

    async def two_halves(server: RawServer, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await release.wait()  # the rest only after the client saw the first part
        writer.write(b"6\r\n world\r\n0\r\n\r\n")
        await server.saw_eof(reader)

    async with RawServer(two_halves) as server, client() as http, \
            http.stream("GET", server.url) as response:
        chunks = response.aiter_bytes()
        assert await chunks.__anext__() == b"hello"
        release.set()
        assert [c async for c in chunks] == [b" world"]


async def test_content_length_body_and_keep_alive() -> None:
    async with RawServer(keep_alive(lambda r: ok(b"abc" * 1000, b"X-Test: 1"))) as server, \
            client() as http:
        response = await http.get(server.url)
        again = await http.head(server.url)
        third = await http.get(server.url)
    assert response.content == third.content == b"abc" * 1000
    assert response.headers["x-test"] == "1"
    assert again.status_code == 200 and again.content == b""  # HEAD: headers only
    assert server.connections == 1


async def test_close_delimited_body_is_read_to_eof_and_not_reused() -> None:
    async def close_delimited(server: RawServer, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"part two")
        await writer.drain()
        writer.close()

    async with RawServer(close_delimited) as server, client() as http:
        first = await http.get(server.url)
        second = await http.get(server.url)
    assert first.content == second.content == b"part one, part two"
    assert server.connections == 2


async def test_connection_close_header_means_a_new_connection_next_time() -> None:
    async with RawServer(keep_alive(lambda r: ok(b"bye", b"Connection: close"))) as server, \
            client() as http:
        for _ in range(3):
            assert (await http.get(server.url)).content == b"bye"
    assert server.connections == 3


async def test_interim_and_bodiless_responses() -> None:
    def answer(request: bytes) -> bytes:
        if path_of(request) == b"/empty":
            return b"HTTP/1.1 204 No Content\r\n\r\n"
        return b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after continue")

    async with RawServer(keep_alive(answer)) as server, client() as http:
        empty = await http.get(f"{server.url}/empty")
        full = await http.get(f"{server.url}/full")
    assert empty.status_code == 204 and empty.content == b""
    assert full.status_code == 200 and full.content == b"after continue"
    assert server.connections == 1


async def test_streamed_request_body_is_sent_whole() -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b'{"a": '
        yield b"1}"

    async with RawServer(keep_alive(lambda r: ok(r.split(b"\r\n\r\n", 1)[1]))) as server, \
            client() as http:
        response = await http.post(server.url, content=parts())
    assert response.content == b'{"a": 1}'
    assert b"content-length: 8\r\n" in server.requests[0].lower()


# ---------------------------------------------------------------- the pool


async def test_sequential_requests_reuse_one_connection() -> None:
    async with RawServer(keep_alive(lambda r: ok(path_of(r)))) as server, client() as http:
        bodies = [(await http.post(f"{server.url}/r{i}", json={"i": i})).content
                  for i in range(25)]
    assert bodies == [f"/r{i}".encode() for i in range(25)]
    assert server.connections == 1
    assert server.requests[3].endswith(b'{"i":3}')


async def test_idle_connection_closed_by_the_server_is_not_used() -> None:
    async def one_request(server: RawServer, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(ok(b"once"))  # keep-alive promised, then closed anyway
        await writer.drain()

    async with RawServer(one_request) as server, client() as http:
        assert (await http.get(server.url)).content == b"once"
        await asyncio.sleep(0.05)  # the close reaches the idle connection
        assert (await http.get(server.url)).content == b"once"
    assert server.connections == 2


async def test_fresh_connection_failure_is_not_retried() -> None:
    async def hang_up(server: RawServer, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)

    async with RawServer(hang_up) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="disconnected"):
            await http.post(server.url, json=CHAT)
    assert server.connections == 1
    assert len(server.requests) == 1  # a POST is never sent twice


async def test_keepalive_expiry_is_honoured() -> None:
    limits = httpx.Limits(max_connections=10, keepalive_expiry=0.3)
    async with RawServer(keep_alive(lambda r: ok(b"x"))) as server, \
            client(limits=limits) as http:
        await http.get(server.url)
        await http.get(server.url)  # immediately: reused
        assert server.connections == 1
        await asyncio.sleep(0.4)
        await http.get(server.url)  # idle too long: closed at checkout, a new one
        assert server.connections == 2
        await asyncio.wait_for(server.client_closed.wait(), 1)


async def test_waiting_for_a_free_connection_times_out() -> None:
    limits = httpx.Limits(max_connections=1)
    async with RawServer(endless_after(b"a")) as server, client(limits=limits) as http, \
            http.stream("GET", server.url) as held:
        assert await held.aiter_bytes().__anext__() == b"a"
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.TimeoutException):
            await http.get(server.url, timeout=httpx.Timeout(5, pool=0.1, connect=0.1))
        assert asyncio.get_running_loop().time() - started < 1.0
    assert server.connections == 1


async def test_stream_closed_early_closes_its_connection() -> None:
    async with RawServer(endless_after(b"abc")) as server, client() as http:
        async with http.stream("GET", server.url) as response:
            assert await response.aiter_bytes().__anext__() == b"abc"
        await asyncio.wait_for(server.client_closed.wait(), 1)
        async with http.stream("GET", server.url) as response:
            assert await response.aiter_bytes().__anext__() == b"abc"
    assert server.connections == 2


async def test_fifty_concurrent_streams_get_their_own_bytes() -> None:
    async def stream(server: RawServer, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        while (request := await server.read_request(reader)) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(5):
                writer.write(chunked(b"%s:%d;" % (path_of(request), i))[:-5])
                await asyncio.sleep(0.002)
            writer.write(b"0\r\n\r\n")

    async def one(http: httpx.AsyncClient, url: str) -> bytes:
        async with http.stream("POST", url, json=CHAT) as response:
            return b"".join([chunk async for chunk in response.aiter_bytes()])

    async with RawServer(stream) as server, client() as http:
        bodies = await asyncio.gather(*(one(http, f"{server.url}/s{k}") for k in range(50)))
        again = await asyncio.gather(*(one(http, f"{server.url}/s{k}") for k in range(50)))
    for k, body in enumerate(bodies):
        assert body == b"".join(b"/s%d:%d;" % (k, i) for i in range(5))
    assert again == bodies
    assert server.connections == 50  # the second round reused all of them


async def test_aclose_closes_every_connection_and_refuses_new_requests() -> None:
    transport = AiohttpTransport()
    async with RawServer(keep_alive(lambda r: ok(b"x"))) as server:
        http = httpx.AsyncClient(transport=transport)
        await http.get(server.url)
        await transport.aclose()
        await asyncio.wait_for(server.client_closed.wait(), 1)
        with pytest.raises(RuntimeError, match="closed"):
            await transport.handle_async_request(httpx.Request("GET", server.url))


# ---------------------------------------------------------------- failures


async def test_truncated_body_is_a_read_error() -> None:
    async def truncated(server: RawServer, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")

    async with RawServer(truncated) as server, client() as http:
        with pytest.raises(httpx.ReadError, match="before the response body was complete"):
            await http.get(server.url)


async def test_truncated_chunked_stream_is_a_read_error() -> None:
    async def truncated(server: RawServer, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndata\r\n")

    async with RawServer(truncated) as server, client() as http, \
            http.stream("GET", server.url) as response:
        chunks = response.aiter_bytes()
        assert await chunks.__anext__() == b"data"
        with pytest.raises(httpx.ReadError):
            await chunks.__anext__()


async def test_garbage_status_line_is_a_remote_protocol_error() -> None:
    async with RawServer(keep_alive(lambda r: b"HTTP/1.1 OK 200 wrong\r\n\r\n")) as server, \
            client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="Bad status line") as err:
            await http.get(server.url)
    assert err.value.request.url.port == server.port


async def test_an_endless_header_is_refused() -> None:
    huge = b"HTTP/1.1 200 OK\r\nX-Filler: %s\r\n\r\n" % (b"f" * 200_000)
    async with RawServer(keep_alive(lambda r: huge)) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="more than 8190 bytes"):
            await http.get(server.url)


async def test_nothing_listening_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with client() as http:
        with pytest.raises(httpx.ConnectError, match=f"127.0.0.1:{port}"):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_silent_server_is_a_read_timeout_and_the_connection_is_closed() -> None:
    async def silent(server: RawServer, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await server.saw_eof(reader)

    async with RawServer(silent) as server, client() as http:
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx.ReadTimeout):
            await http.get(server.url, timeout=0.2)
        assert 0.15 < asyncio.get_running_loop().time() - started < 1.0
        await asyncio.wait_for(server.client_closed.wait(), 1)


async def test_read_timeout_is_the_longest_silence_not_the_total_time() -> None:
    async def steady(server: RawServer, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(7):
                await asyncio.sleep(0.06)
                writer.write(chunked(b"tick")[:-5])
            writer.write(b"0\r\n\r\n")

    async with RawServer(steady) as server, client() as http:
        response = await http.get(server.url, timeout=0.3)  # 0.42 s in all, gaps of 0.06
        assert response.content == b"tick" * 7
        with pytest.raises(httpx.ReadTimeout):  # and a short one still fires, same connection
            await http.get(server.url, timeout=0.03)


async def test_cancelled_mid_response_does_not_return_the_connection() -> None:
    first_chunk = asyncio.Event()

    async def stalls(server: RawServer, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        request = await server.read_request(reader)
        assert request is not None
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
        if path_of(request) == b"/stall":
            await server.saw_eof(reader)
        else:
            writer.write(b"0\r\n\r\n")

    limits = httpx.Limits(max_connections=1)
    async with RawServer(stalls) as server, client(limits=limits) as http:
        async def read_all() -> None:
            request = http.build_request("GET", f"{server.url}/stall")
            response = await http.send(request, stream=True)
            async for _ in response.aiter_bytes():
                first_chunk.set()

        task = asyncio.create_task(read_all())
        await first_chunk.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The response was never closed by its reader, yet the connection is gone and
        # its slot free: the next request gets a new connection at once.
        await asyncio.wait_for(server.client_closed.wait(), 1)
        response = await http.get(f"{server.url}/done",
                                  timeout=httpx.Timeout(5, pool=0.5, connect=0.5))
        assert response.content == b"hi"
    assert server.connections == 2


# ---------------------------------------------------------------- TLS


async def test_https_with_a_certificate_from_a_trusted_private_ca(
        private_ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    private_ca.issue_cert("127.0.0.1").configure_cert(server_context)
    trusting = ssl.create_default_context()
    private_ca.configure_trust(trusting)
    server = RawServer(keep_alive(lambda r: ok(b"secret " + path_of(r))))
    server._ssl = server_context
    async with server, client(ssl_context=trusting) as http:
        first = await http.post(f"{server.url}/a", json=CHAT)
        second = await http.get(f"{server.url}/b")
        assert (first.content, second.content) == (b"secret /a", b"secret /b")
        assert server.connections == 1
        async with client() as untrusting:  # certifi's CAs do not know this certificate
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await untrusting.get(server.url)

# ---------------------------------------------------------------- the same on uvloop

# The router runs on uvloop (uvicorn's default when installed), whose transports are
# not asyncio's: every test above runs again on a uvloop loop.


@pytest.mark.parametrize("case", uvloop_cases(globals()), ids=lambda f: f.__name__[5:])
def test_on_uvloop(case: Callable[..., Awaitable[None]], request: pytest.FixtureRequest) -> None:
    on_uvloop(case, request)
