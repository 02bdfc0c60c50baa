"""Serving benchmark: route throughput, proxy overhead, outcome-log writes.

Every server runs in its own process (uvicorn, one worker) and the load comes from
another process: a small raw HTTP/1.1 keep-alive client on asyncio, so the
client's own cost stays far below the server's (httpx costs ~10x more per request).

(a) `POST /v1/route` at concurrency 64 for `--duration` seconds, varied prompts,
    against the router with a real LightGBM quality model; the ceiling, measured in
    the same run with the same client: a bare FastAPI app whose `POST /v1/route`
    parses the JSON body and returns a constant decision.
    Targets: >= 1,500 requests/s and >= 50% of the bare endpoint.
    Also with every prompt distinct, so the router's decision cache never hits
    (the cost of a full prediction per request).
(b) Proxy overhead: 100 concurrent streaming chat completions, first straight to the
    fake upstream, then through the router (pass-through model and `router`); the
    overhead is the difference of the latency percentiles (time to the response
    head, and to the end of the stream), same run. Streams last as LLM streams do,
    longer than their first byte: 20 ms to the first event, then `--chunk-delay-ms`
    between chunks (default 100 ms, ~1 s per stream), so 100 concurrent streams are
    ~110 streams/s. The 100 clients start spread over `--ramp-s` (1 s, one
    stream's length), so what is measured is 100 streams in steady state.
    Targets: p50 <= 2 ms, p99 <= 10 ms.
    (b-herd) The same with all 100 clients starting at the same instant: each
    round of streams then arrives as one burst (closed-loop clients whose streams
    last alike stay in step), so every server queues the burst, and the router,
    doing more per stream than the fake, queues it for longer.
    Then the same with no delay between chunks: a closed loop as fast as the
    servers go, which saturates the 2 cores the fake, the router and the client
    share. Its latency is queueing, not overhead; what it measures is streams/s
    through the router against the fake alone.
(c) Outcome-log write throughput (SQLite), with `bench/outcome_log.py`'s harness.

Every line also gives the server's CPU time per request (from /proc), which
depends far less on other load on the machine than requests/s and latency do.

    python bench/serve.py                       # everything, ~1.5 minutes
    python bench/serve.py --duration 10 --loop asyncio
    python bench/serve.py --model models/demo --skip-log
    python bench/serve.py --route-only          # only (a)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response

REPO = Path(__file__).resolve().parents[1]
TOPICS = ("prove that the sum of two even numbers is even", "write a haiku about autumn rain",
          "translate 'good morning, how are you' into French",
          "fix the off-by-one bug in this python loop: for i in range(len(xs)+1): print(xs[i])",
          "summarise the causes of the first world war in three bullet points",
          "classify the sentiment of: the food was cold but the staff were lovely",
          "explain quicksort and its worst case", "what is the capital of Australia?")


def prompts(n: int = 256) -> list[str]:
    return [f"{TOPICS[i % len(TOPICS)]} (variant {i}) " + "please be precise. " * (i % 7)
            for i in range(n)]


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _uvicorn(app: Any, port: int, loop: str) -> None:
    import logging

    import uvicorn

    logging.basicConfig(level=logging.WARNING)
    # "auto" is what `router serve` runs: uvloop and httptools when installed.
    http = {"auto": "auto", "uvloop": "httptools", "asyncio": "h11"}[loop]
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop=loop, http=http)


def serve_bare(port: int, loop: str) -> None:
    app = FastAPI()
    answer = json.dumps({"request_id": "x", "model": "m", "quality_bar": 0.8,
                         "expected_quality": 0.9, "expected_cost_usd": 0.001,
                         "candidates": [], "model_version": "bare"}).encode()

    @app.post("/v1/route")
    async def route(request: Request) -> Response:
        json.loads(await request.body())
        return Response(answer, media_type="application/json")

    _uvicorn(app, port, loop)


def serve_fake(port: int, loop: str, latency_ms: float) -> None:
    from router.catalog import load_catalog
    from router.fake import create_fake_upstream

    _uvicorn(create_fake_upstream(catalog=load_catalog(), latency_ms=latency_ms), port, loop)


def serve_router(port: int, loop: str, model_dir: str, upstream: str, log_url: str) -> None:
    from router.app import create_app
    from router.settings import load_settings

    settings = load_settings(model_dir=model_dir, upstream_base_url=upstream, log_url=log_url,
                             exploration=0.0, cache_ttl_s=0, reload_interval_s=0)
    _uvicorn(create_app(settings), port, loop)


def start(target: Any, *args: Any) -> mp.Process:
    proc = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def wait_ready(port: int, path: str = "/healthz", timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}").status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


# --------------------------------------------------------------------------- load


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` so far (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _request(path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def _read_response(reader: asyncio.StreamReader, marks: list[float]) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    marks.append(time.perf_counter())
    status = int(head[9:12])
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return status
    index = lower.find(b"content-length:")
    length = int(lower[index + 15:lower.find(b"\r\n", index)])
    await reader.readexactly(length)
    return status


async def _load(port: int, requests: list[bytes], concurrency: int, duration: float,
                warmup: float, ramp: float) -> dict[str, Any]:
    latencies: list[float] = []
    heads: list[float] = []
    errors = 0
    start_at = time.perf_counter() + ramp + warmup
    stop_at = start_at + duration

    async def worker(offset: int) -> None:
        nonlocal errors
        # Client k starts k/concurrency of the ramp late; with ramp 0 they all start
        # at once, a burst every closed-loop client then keeps in step with.
        await asyncio.sleep(ramp * offset / concurrency)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            writer.write(requests[i % len(requests)])
            i += concurrency
            marks: list[float] = []
            status = await _read_response(reader, marks)
            t1 = time.perf_counter()
            if t0 >= start_at:
                latencies.append(t1 - t0)
                heads.append(marks[0] - t0)
                errors += status >= 400
        writer.close()

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return {"latencies": latencies, "heads": heads, "errors": errors, "duration": duration}


def loadgen(port: int, requests: list[bytes], concurrency: int, duration: float,
            warmup: float, ramp: float, out: Any) -> None:
    out.put(asyncio.run(_load(port, requests, concurrency, duration, warmup, ramp)))


def run_load(port: int, requests: list[bytes], concurrency: int, duration: float,
             warmup: float = 1.0, server_pid: int | None = None,
             ramp: float = 0.0) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=loadgen, args=(port, requests, concurrency, duration, warmup,
                                             ramp, queue))
    proc.start()
    cpu0 = cpu_seconds(server_pid) if server_pid else None
    result = queue.get(timeout=duration + warmup + ramp + 120)
    cpu1 = cpu_seconds(server_pid) if server_pid else None
    proc.join()
    lat = sorted(result["latencies"])
    heads = sorted(result["heads"])
    if not lat:
        raise RuntimeError("no request completed")
    out = {"rps": len(lat) / result["duration"], "n": len(lat), "errors": result["errors"],
           "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
           "head_p50_ms": 1000 * heads[len(heads) // 2],
           "head_p99_ms": 1000 * heads[int(len(heads) * 0.99)],
           "mean_ms": 1000 * statistics.fmean(lat), "cpu_ms": float("nan")}
    if cpu0 is not None and cpu1 is not None:
        # Warm-up requests used CPU too: spread it over everything served meanwhile.
        served = len(lat) * (duration + warmup + ramp) / duration
        out["cpu_ms"] = 1000 * (cpu1 - cpu0) / served
    return out


def show(name: str, r: dict[str, float], *, heads: bool = False) -> None:
    head = (f"  head p50 {r['head_p50_ms']:7.2f} p99 {r['head_p99_ms']:7.2f}" if heads
            else "")
    print(f"  {name:<36} {r['rps']:>7.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
          f"p99 {r['p99_ms']:7.2f} ms{head}  server CPU {r['cpu_ms']:.3f} ms/req  "
          f"(n={r['n']}, errors={r['errors']})", flush=True)


# --------------------------------------------------------------------------- model


def train_model(out: Path) -> Path:
    """A LightGBM quality model on a synthetic table (400 prompts x 4 models)."""
    import numpy as np
    import pandas as pd

    from router.catalog import load_catalog
    from router.predictor import QualityModel

    catalog = load_catalog()
    models = ("glm-4-plus", "deepseek-v4-flash", "deepseek-v4-pro", "gpt-4o")
    rng = np.random.default_rng(0)
    rows = []
    for i, prompt in enumerate(prompts(400)):
        hard = i % len(TOPICS) in (0, 3, 6)
        for j, model in enumerate(models):
            out_tokens = float(60 + 30 * j + rng.integers(0, 40))
            tokens = len(prompt) // 4 + 4
            rows.append({"prompt_id": f"p{i}",
                         "messages": json.dumps([{"role": "user", "content": prompt}]),
                         "model": model,
                         "quality": float(rng.random() < 0.35 + 0.15 * j - 0.25 * hard),
                         "input_tokens": float(tokens), "output_tokens": out_tokens,
                         "cost_usd": catalog[model].cost_usd(tokens, out_tokens),
                         "weight": 1.0})
    model = QualityModel(num_boost_round=200, min_valid_prompts=10_000)
    model.fit(pd.DataFrame(rows), catalog=catalog)
    model.save(out)
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: train a small one)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--upstream-latency-ms", type=float, default=20.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=100.0,
                        help="fake upstream's delay between stream chunks in (b)'s overhead "
                             "measurement")
    parser.add_argument("--ramp-s", type=float, default=1.0,
                        help="(b): the stream clients start spread over this many seconds "
                             "(about one stream's length), so the load is 100 streams in "
                             "steady state; (b-herd) repeats it with all starting at once")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                        help="server event loop: auto (what `router serve` runs: uvloop and "
                             "httptools when installed), asyncio (+h11), uvloop (+httptools)")
    parser.add_argument("--skip-log", action="store_true", help="skip (c)")
    parser.add_argument("--route-only", action="store_true",
                        help="run only (a), the /v1/route measurement")
    args = parser.parse_args(argv)
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        parser.error("--loop uvloop needs `pip install uvloop httptools`")
    loop = args.loop
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model_dir = Path(args.model) if args.model else train_model(tmp / "model")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"bench/serve.py on {os.cpu_count()} cores (load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}), server loop {loop}, model {model_dir}", flush=True)
    procs: list[mp.Process] = []
    try:
        fake_port, router_port, bare_port = free_port(), free_port(), free_port()
        procs.append(start(serve_fake, fake_port, loop, args.upstream_latency_ms))
        procs.append(start(serve_router, router_port, loop, str(model_dir),
                           f"http://127.0.0.1:{fake_port}/v1", f"sqlite:///{tmp}/log.db"))
        procs.append(start(serve_bare, bare_port, loop))
        fake_pid, router_pid, bare_pid = (p.pid for p in procs)
        for port in (fake_port, router_port, bare_port):
            wait_ready(port, "/v1/models" if port == fake_port else "/healthz")

        def route_requests(texts: list[str]) -> list[bytes]:
            return [_request("/v1/route", {"messages": [{"role": "user", "content": t}],
                                           "quality_bar": 0.7}) for t in texts]

        print(f"\n(a) POST /v1/route, concurrency {args.concurrency}, {args.duration:g} s each")
        bare = run_load(bare_port, route_requests(prompts()), args.concurrency, args.duration,
                        server_pid=bare_pid)
        show("bare FastAPI endpoint (ceiling)", bare)
        routed = run_load(router_port, route_requests(prompts()), args.concurrency,
                          args.duration, server_pid=router_pid)
        show("router /v1/route (256 prompts)", routed)
        # Distinct prompts beyond what the run can send: every decision is predicted.
        unique = run_load(router_port, route_requests(
            [f"{t} #{k}" for k, t in enumerate(prompts(40_000))]), args.concurrency,
            args.duration, server_pid=router_pid)
        show("router /v1/route (all distinct)", unique)
        for name, r in (("256 prompts", routed), ("all distinct", unique)):
            print(f"  -> {name}: {r['rps']:.0f} req/s (target >= 1500), "
                  f"{100 * r['rps'] / bare['rps']:.0f}% of the bare endpoint (target >= 50%)")
        if args.route_only:
            return 0

        def chat(model: str) -> list[bytes]:
            return [_request("/v1/chat/completions", {
                "model": model, "stream": True,
                "messages": [{"role": "user", "content": t}]}) for t in prompts()]

        def control(**changes: Any) -> None:
            import httpx

            httpx.post(f"http://127.0.0.1:{fake_port}/_control", json=changes).raise_for_status()

        def streams(title: str, ramp: float) -> tuple[dict[str, float], ...]:
            print(title)
            # The fake answers only /v1/...; the router proxies to it under the same path.
            direct = run_load(fake_port, chat("gpt-4o"), args.streams, args.duration,
                              server_pid=fake_pid, ramp=ramp)
            show("straight to the fake upstream", direct, heads=True)
            proxied = run_load(router_port, chat("gpt-4o"), args.streams, args.duration,
                               server_pid=router_pid, ramp=ramp)
            show("through the router (pass-through)", proxied, heads=True)
            routed_chat = run_load(router_port, chat("router:0.7"), args.streams,
                                   args.duration, server_pid=router_pid, ramp=ramp)
            show("through the router (model router)", routed_chat, heads=True)
            return direct, proxied, routed_chat

        def overheads(direct: dict[str, float], proxied: dict[str, float],
                      routed_chat: dict[str, float]) -> None:
            for name, r in (("pass-through", proxied), ("routed", routed_chat)):
                print(f"  -> overhead {name}: p50 {r['p50_ms'] - direct['p50_ms']:+.2f} ms "
                      f"(target <= 2), p99 {r['p99_ms'] - direct['p99_ms']:+.2f} ms "
                      f"(target <= 10); first byte p50 "
                      f"{r['head_p50_ms'] - direct['head_p50_ms']:+.2f} ms, p99 "
                      f"{r['head_p99_ms'] - direct['head_p99_ms']:+.2f} ms")

        control(chunk_delay_ms=args.chunk_delay_ms)
        overheads(*streams(
            f"\n(b) streaming chat, {args.streams} concurrent streams, upstream latency "
            f"{args.upstream_latency_ms:g} ms, {args.chunk_delay_ms:g} ms between chunks, "
            f"clients starting over {args.ramp_s:g} s", args.ramp_s))
        overheads(*streams(
            f"\n(b-herd) the same, all {args.streams} clients starting at once (a burst "
            f"that recurs: closed-loop clients whose streams last alike stay in step)", 0.0))
        control(chunk_delay_ms=0)
        direct, proxied, routed_chat = streams(
            f"\n(b') the same, no delay between chunks: saturated closed loop (latency here is "
            f"queueing on {os.cpu_count()} shared cores)", 0.0)
        for name, r in (("pass-through", proxied), ("routed", routed_chat)):
            print(f"  -> {name}: {r['rps']:.0f} streams/s, "
                  f"{100 * r['rps'] / direct['rps']:.0f}% of the fake alone; router CPU "
                  f"{r['cpu_ms']:.2f} ms/stream (the fake's: {direct['cpu_ms']:.2f})")
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(timeout=10)

    if not args.skip_log:
        print("\n(c) outcome-log writes (bench/outcome_log.py, SQLite)", flush=True)
        spec = importlib.util.spec_from_file_location("bench_outcome_log",
                                                      REPO / "bench" / "outcome_log.py")
        if spec is None or spec.loader is None:
            print("  bench/outcome_log.py not found; skipped")
        else:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            module.main(["--n", "50000", "--no-postgres"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
