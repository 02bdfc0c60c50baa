"""Streaming: fallback before the first event, whole events, usage, failures mid-stream;
then the client over a real loopback socket to the fake upstream (`fake_upstream_server`).
"""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import pytest

from router.catalog import Catalog, ModelSpec, estimate_tokens, load_catalog
from router.upstream import (
    TRANSPORTS,
    Cooldowns,
    UpstreamClient,
    UpstreamClientError,
    UpstreamTimeout,
    UpstreamUnavailable,
    build_http_client,
)
from tests.router.upstream.mock_upstream import (
    BODY,
    USAGE_CHUNK,
    Broken,
    Clock,
    Pieces,
    Upstream,
    delta,
    err,
    sse,
    streaming,
    summary,
)


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
