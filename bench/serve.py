"""Serving benchmark: route throughput, proxy overhead, outcome-log writes.

Every server runs in its own process (uvicorn, one worker) and the load comes from
another process: a small raw HTTP/1.1 keep-alive client on asyncio, so the
client's own cost stays far below the server's (httpx costs ~10x more per request).

(a) `POST /v1/route` at concurrency 64 for `--duration` seconds, varied prompts,
    against the router with a real LightGBM quality model; the ceiling, measured in
    the same run with the same client: a bare FastAPI app whose `POST /v1/route`
    parses the JSON body and returns a constant decision.
    Targets: >= 1,500 requests/s and >= 50% of the bare endpoint.
(b) Proxy overhead: 100 concurrent streaming chat completions, first straight to the
    fake upstream, then through the router (pass-through model and `router`); the
    overhead is the difference of the latency percentiles, same run.
    Targets: p50 <= 2 ms, p99 <= 10 ms.
(c) Outcome-log write throughput (SQLite), with `bench/outcome_log.py`'s harness.

    python bench/serve.py                       # everything, ~1 minute
    python bench/serve.py --duration 10 --loop uvloop
    python bench/serve.py --model models/demo --skip-log
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
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop=loop, http="httptools" if loop == "uvloop" else "h11")


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
    from router.fake_upstream import create_fake_upstream

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


def _request(path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
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
                warmup: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    start_at = time.perf_counter() + warmup
    stop_at = start_at + duration

    async def worker(offset: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            writer.write(requests[i % len(requests)])
            i += concurrency
            status = await _read_response(reader)
            t1 = time.perf_counter()
            if t0 >= start_at:
                latencies.append(t1 - t0)
                errors += status >= 400
        writer.close()

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return {"latencies": latencies, "errors": errors, "duration": duration}


def loadgen(port: int, requests: list[bytes], concurrency: int, duration: float,
            warmup: float, out: Any) -> None:
    out.put(asyncio.run(_load(port, requests, concurrency, duration, warmup)))


def run_load(port: int, requests: list[bytes], concurrency: int, duration: float,
             warmup: float = 1.0) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=loadgen, args=(port, requests, concurrency, duration, warmup,
                                             queue))
    proc.start()
    result = queue.get(timeout=duration + warmup + 120)
    proc.join()
    lat = sorted(result["latencies"])
    if not lat:
        raise RuntimeError("no request completed")
    return {"rps": len(lat) / result["duration"], "n": len(lat), "errors": result["errors"],
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
            "mean_ms": 1000 * statistics.fmean(lat)}


def show(name: str, r: dict[str, float]) -> None:
    print(f"  {name:<34} {r['rps']:>8.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
          f"p99 {r['p99_ms']:7.2f} ms  (n={r['n']}, errors={r['errors']})", flush=True)


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
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="server event loop (uvloop also switches to httptools)")
    parser.add_argument("--skip-log", action="store_true", help="skip (c)")
    args = parser.parse_args(argv)
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        parser.error("--loop uvloop needs `pip install uvloop httptools`")

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model_dir = Path(args.model) if args.model else train_model(tmp / "model")
    print(f"bench/serve.py on {os.cpu_count()} cores, server loop {args.loop}, model "
          f"{model_dir}", flush=True)
    procs: list[mp.Process] = []
    try:
        fake_port, router_port, bare_port = free_port(), free_port(), free_port()
        procs.append(start(serve_fake, fake_port, args.loop, args.upstream_latency_ms))
        procs.append(start(serve_router, router_port, args.loop, str(model_dir),
                           f"http://127.0.0.1:{fake_port}/v1", f"sqlite:///{tmp}/log.db"))
        procs.append(start(serve_bare, bare_port, args.loop))
        for port in (fake_port, router_port, bare_port):
            wait_ready(port, "/v1/models" if port == fake_port else "/healthz")

        texts = prompts()
        route_reqs = [_request("/v1/route", {"messages": [{"role": "user", "content": t}],
                                             "quality_bar": 0.7}) for t in texts]
        print(f"\n(a) POST /v1/route, concurrency {args.concurrency}, {args.duration:g} s each")
        bare = run_load(bare_port, route_reqs, args.concurrency, args.duration)
        show("bare FastAPI endpoint (ceiling)", bare)
        routed = run_load(router_port, route_reqs, args.concurrency, args.duration)
        show("router /v1/route", routed)
        share = routed["rps"] / bare["rps"]
        print(f"  -> {routed['rps']:.0f} req/s (target >= 1500), {100 * share:.0f}% of the bare "
              f"endpoint (target >= 50%)")

        print(f"\n(b) streaming chat, {args.streams} concurrent streams, upstream latency "
              f"{args.upstream_latency_ms:g} ms")

        def chat(model: str) -> list[bytes]:
            return [_request("/v1/chat/completions", {
                "model": model, "stream": True,
                "messages": [{"role": "user", "content": t}]}) for t in texts]

        # The fake answers only /v1/...; the router proxies to it under the same path.
        direct = run_load(fake_port, chat("gpt-4o"), args.streams, args.duration)
        show("straight to the fake upstream", direct)
        proxied = run_load(router_port, chat("gpt-4o"), args.streams, args.duration)
        show("through the router (pass-through)", proxied)
        routed_chat = run_load(router_port, chat("router:0.7"), args.streams, args.duration)
        show("through the router (model router)", routed_chat)
        for name, r in (("pass-through", proxied), ("routed", routed_chat)):
            print(f"  -> overhead {name}: p50 {r['p50_ms'] - direct['p50_ms']:+.2f} ms "
                  f"(target <= 2), p99 {r['p99_ms'] - direct['p99_ms']:+.2f} ms (target <= 10)")
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
