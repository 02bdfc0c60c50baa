"""Upstream client benchmark: the router's HTTP client on each of its transports.

The router proxies every chat completion through one `httpx.AsyncClient`
(`router.upstream.build_http_client`); this measures what that client costs on each
of `router.upstream.TRANSPORTS` (ROUTER_UPSTREAM_TRANSPORT): aiohttp's client (the
default) and httpx's own transport (httpcore + h11 + anyio). A fake upstream (uvicorn serving
`router.fake.create_fake_upstream(latency_ms=0)`) runs in its own process; in this
process the same load goes through each client in turn, same limits, same bodies:

(a) non-streaming `POST /v1/chat/completions` (JSON), at concurrency 1 and 64;
(b) streaming (`"stream": true`, read with `aiter_bytes`), at concurrency 1 and 100.

Each line gives requests/s, p50/p99 latency and the CPU time of THIS (the client)
process per request, from `time.process_time()` over the measured window: that is
the number the transport changes; req/s and latency mostly show the fake upstream,
which shares the machine. The `->` lines compare each with the default. httpx's
own transport re-scans its whole pool on every request start and end, so under
100 concurrent streams it is far slower: give it time (`--duration`).

    python bench/upstream_client.py                   # ~1 minute
    python bench/upstream_client.py --duration 10 --loop asyncio
    python bench/upstream_client.py --chunk-delay-ms 100   # streams as long as LLM ones
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing as mp
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from router.upstream import TRANSPORTS, build_http_client

TOPICS = ("prove that the sum of two even numbers is even", "write a haiku about autumn rain",
          "translate 'good morning, how are you' into French",
          "explain quicksort and its worst case", "what is the capital of Australia?")


def bodies(stream: bool, n: int = 128) -> list[dict[str, Any]]:
    return [{"model": "gpt-4o", "stream": stream,
             "messages": [{"role": "user",
                           "content": f"{TOPICS[i % len(TOPICS)]} (variant {i})"}]}
            for i in range(n)]


# --------------------------------------------------------------------------- the upstream


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_fake(port: int, loop: str) -> None:
    import logging

    import uvicorn

    from router.catalog import load_catalog
    from router.fake import create_fake_upstream

    logging.basicConfig(level=logging.WARNING)
    http = {"auto": "auto", "uvloop": "httptools", "asyncio": "h11"}[loop]
    uvicorn.run(create_fake_upstream(catalog=load_catalog(), latency_ms=0), host="127.0.0.1",
                port=port, log_level="warning", access_log=False, loop=loop, http=http)


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the fake upstream did not start at {url}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc), NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the load


async def one_json(http: Any, url: str, body: dict[str, Any]) -> bool:
    response = await http.post(url, json=body)
    return response.status_code == 200 and b'"choices"' in response.content


async def one_stream(http: Any, url: str, body: dict[str, Any]) -> bool:
    request = http.build_request("POST", url, json=body)
    response = await http.send(request, stream=True)
    tail = b""
    try:
        async for chunk in response.aiter_bytes():
            tail = chunk
    finally:
        await response.aclose()
    return response.status_code == 200 and tail.endswith(b"data: [DONE]\n\n")


async def run(make_client: Callable[[], Any], url: str,
              one: Callable[..., Any], requests: list[dict[str, Any]], concurrency: int,
              duration: float, warmup: float, server_pid: int) -> dict[str, float]:
    """`concurrency` closed-loop workers for warmup + duration s; stats of the window."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    marks: dict[str, float] = {}
    start_at = time.perf_counter() + warmup  # uvloop's loop.time() counts whole ms
    stop_at = start_at + duration

    def mark(name: str) -> None:
        marks[name] = time.process_time()
        marks[name + "_server"] = cpu_seconds(server_pid)

    loop.call_later(warmup, mark, "start")
    loop.call_later(warmup + duration, mark, "stop")

    async def worker(offset: int) -> None:
        nonlocal errors
        i = offset
        while (t0 := time.perf_counter()) < stop_at:
            try:
                good = await one(http, url, requests[i % len(requests)])
            except httpx.HTTPError:
                good = False
            i += concurrency
            t1 = time.perf_counter()
            if start_at <= t0 and t1 <= stop_at:
                latencies.append(t1 - t0)
                errors += not good

    async with make_client() as http:
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    if not latencies:  # too slow to finish one in the window: say so, do not stop
        nan = float("nan")
        return {"rps": 0.0, "n": 0, "errors": errors, "p50_ms": nan, "p99_ms": nan,
                "cpu_ms": nan, "server_cpu_ms": nan}
    latencies.sort()
    n = len(latencies)
    return {"rps": n / duration, "n": n, "errors": errors,
            "p50_ms": 1000 * latencies[n // 2], "p99_ms": 1000 * latencies[int(n * 0.99)],
            "cpu_ms": 1000 * (marks["stop"] - marks["start"]) / n,
            "server_cpu_ms": 1000 * (marks["stop_server"] - marks["start_server"]) / n}


def show(name: str, r: dict[str, float]) -> None:
    print(f"    {name:<15} {r['rps']:>7.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
          f"p99 {r['p99_ms']:7.2f} ms  client CPU {r['cpu_ms']:6.3f} ms/req  "
          f"(upstream {r['server_cpu_ms']:.3f}; n={r['n']}, errors={r['errors']})",
          flush=True)


async def bench(url: str, args: argparse.Namespace, server_pid: int) -> None:
    clients = {name: (lambda name=name: build_http_client(transport=name))
               for name in TRANSPORTS}
    default = TRANSPORTS[0]
    plan = [("(a) non-streaming POST /v1/chat/completions", one_json, bodies(False),
             (1, args.concurrency)),
            ("(b) streaming chat completions, read with aiter_bytes", one_stream,
             bodies(True), (1, args.streams))]
    for title, one, requests, levels in plan:
        if one is one_stream and args.chunk_delay_ms:
            title += f", {args.chunk_delay_ms:g} ms between chunks"
            async with httpx.AsyncClient(trust_env=False) as control:
                answer = await control.post(url.replace("/v1/chat/completions", "/_control"),
                                            json={"chunk_delay_ms": args.chunk_delay_ms})
                answer.raise_for_status()
        print(f"\n{title}", flush=True)
        for concurrency in levels:
            print(f"  concurrency {concurrency}")
            results = {}
            for name, make in clients.items():
                results[name] = await run(make, url, one, requests, concurrency,
                                          args.duration, args.warmup, server_pid)
                show(name, results[name])
            ours = results[default]
            for name in TRANSPORTS[1:]:
                other = results[name]
                print(f"    -> {name}/{default}: client CPU per request "
                      f"{other['cpu_ms'] / ours['cpu_ms']:.2f}x, req/s "
                      f"{other['rps'] / ours['rps']:.2f}x, p50 "
                      f"{other['p50_ms'] / ours['p50_ms']:.2f}x", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0,
                        help="measured seconds per line (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5,
                        help="seconds of load before each measurement (default 0.5)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="the non-streaming high-concurrency level (default 64)")
    parser.add_argument("--streams", type=int, default=100,
                        help="the streaming high-concurrency level (default 100)")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0,
                        help="the fake upstream's delay between stream chunks in (b) "
                             "(default 0: as fast as it goes; 10 makes every SSE event "
                             "its own read, as LLM streams are)")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                        help="event loop of the client and of the fake upstream: auto "
                             "(uvloop when installed, as `router serve` runs), asyncio, uvloop")
    args = parser.parse_args(argv)
    loop = args.loop
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    elif loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        parser.error("--loop uvloop needs `pip install uvloop`")

    port = free_port()
    proc = mp.get_context("spawn").Process(target=serve_fake, args=(port, loop), daemon=True)
    proc.start()
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        wait_ready(f"http://127.0.0.1:{port}/v1/models")
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        print(f"bench/upstream_client.py on {os.cpu_count()} cores (load average "
              f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}), loop {loop}, httpx "
              f"{httpx.__version__}, {args.duration:g} s per line after {args.warmup:g} s "
              f"warm-up; fake upstream pid {proc.pid}", flush=True)
        if loop == "uvloop":
            import uvloop

            uvloop.run(bench(url, args, proc.pid))
        else:
            asyncio.run(bench(url, args, proc.pid))
    finally:
        proc.terminate()
        proc.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
