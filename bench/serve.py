"""Serving benchmark: the router beside a bare endpoint, the fake provider and LiteLLM.

Every server runs in its own process and the load comes from another one: a small
raw HTTP/1.1 keep-alive client on asyncio, so the client's own cost stays far below
a server's. Within a section the targets are measured interleaved, A B C D A B C D
... for `--rounds` rounds, so drift on the shared machine hits all alike; each line
pools its rounds. Every line gives the server's CPU time per request (its process
tree's user + system time from /proc over the run, divided by the requests it
served), which depends far less on other load on the machine than req/s and
latency do, and p50/p99 latency.

route   `POST /v1/route` at concurrency `--concurrency` (64): a bare FastAPI endpoint
        that parses the body and returns a constant (the ceiling), the router with
        256 prompts (its decision cache hits), the router with every prompt distinct.
        Targets: >= 1,500 requests/s and >= 50% of the bare endpoint.
overhead 100 concurrent streaming chat completions in steady state: 20 ms to the
        first event, then `--chunk-delay-ms` (100) between chunks (~1 s per stream),
        the clients starting spread over `--ramp-s` (1 s). Straight to the fake
        provider, through the router pass-through (`gpt-4o`) and routed (`router:0.7`,
        every prompt distinct); the overhead is the difference of the percentiles.
        Targets: p50 <= 2 ms, p99 <= 10 ms.
peer    Streaming chat completions at concurrency `--peer-concurrency` (32), no delay
        between chunks: straight to the fake provider, the router pass-through and
        routed (distinct prompts), and the LiteLLM proxy (1.81.13, one worker, no
        database; `bench/litellm_peer.py` builds its own venv, .venv-litellm,
        on first use). Target: router CPU per request <= 1/5 of LiteLLM's.
log     Outcome-log writes (SQLite), with `bench/outcome_log.py`'s harness.

`--transports aiohttp,httpx` runs one router per upstream transport
(ROUTER_UPSTREAM_TRANSPORT) in the same run, so the overhead and peer lines also
compare the router's CPU per proxied stream on each (the first is the reference).

    python bench/serve.py                          # every section, ~4 minutes
    python bench/serve.py --sections peer --rounds 5
    python bench/serve.py --sections overhead,peer --transports aiohttp,httpx
    python bench/serve.py --no-peer --duration 3   # without LiteLLM
    python bench/serve.py --model models/demo --loop asyncio
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from loadgen import Target, interleave

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("route", "overhead", "peer", "log")
TOPICS = ("prove that the sum of two even numbers is even", "write a haiku about autumn rain",
          "translate 'good morning, how are you' into French",
          "fix the off-by-one bug in this python loop: for i in range(len(xs)+1): print(xs[i])",
          "summarise the causes of the first world war in three bullet points",
          "classify the sentiment of: the food was cold but the staff were lovely",
          "explain quicksort and its worst case", "what is the capital of Australia?")


def prompts(n: int = 256) -> list[str]:
    return [f"{TOPICS[i % len(TOPICS)]} (variant {i}) " + "please be precise. " * (i % 7)
            for i in range(n)]


def distinct(tag: object, n: int) -> list[str]:
    """`n` prompts never sent before in this run: no cache can answer them."""
    return [f"{text} #{tag}-{k}" for k, text in enumerate(prompts(n))]


def _request(path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def route_requests(texts: list[str]) -> list[bytes]:
    return [_request("/v1/route", {"messages": [{"role": "user", "content": t}],
                                   "quality_bar": 0.7}) for t in texts]


def chat_requests(model: str, texts: list[str]) -> list[bytes]:
    return [_request("/v1/chat/completions", {
        "model": model, "stream": True, "messages": [{"role": "user", "content": t}]})
        for t in texts]


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


def serve_router(port: int, loop: str, model_dir: str, upstream: str, log_url: str,
                 transport: str) -> None:
    from router.app import create_app
    from router.settings import load_settings

    settings = load_settings(model_dir=model_dir, upstream_base_url=upstream, log_url=log_url,
                             exploration=0.0, cache_ttl_s=0, reload_interval_s=0,
                             upstream_transport=transport)
    _uvicorn(create_app(settings), port, loop)


def start(target: Any, *args: Any) -> mp.Process:
    proc = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def wait_ready(port: int, path: str, alive: Callable[[], bool], timeout: float = 90.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server for port {port} exited while starting (see above)")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}").status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not answer {path} in {timeout:g} s")


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


# --------------------------------------------------------------------------- sections


@dataclass
class Servers:
    """(port, pid) of every server of the run; `routers` by upstream transport."""

    fake: tuple[int, int]
    bare: tuple[int, int]
    routers: dict[str, tuple[int, int]]
    peer: tuple[int, int] | None = None

    def control(self, **changes: Any) -> None:
        import httpx

        httpx.post(f"http://127.0.0.1:{self.fake[0]}/_control",
                   json=changes).raise_for_status()

    def direct(self) -> Target:
        # The fake answers only /v1/...; the router proxies to it under the same path.
        return Target("straight to the fake provider", *self.fake,
                      lambda k: chat_requests("gpt-4o", prompts()))

    def router_chat(self, tag: str) -> list[Target]:
        targets = []
        for transport, (port, pid) in self.routers.items():
            label = f" [{transport}]" if len(self.routers) > 1 else ""
            targets += [
                Target(f"router pass-through{label}", port, pid,
                       lambda k: chat_requests("gpt-4o", prompts())),
                Target(f"router routed, distinct{label}", port, pid,
                       lambda k, t=transport: chat_requests(
                           "router:0.7", distinct(f"{tag}-{t}-{k}", 20_000)))]
        return targets


def section_route(servers: Servers, args: argparse.Namespace) -> None:
    print(f"\nroute: POST /v1/route, concurrency {args.concurrency}, {args.rounds} rounds of "
          f"{args.duration:g} s, interleaved", flush=True)
    port, pid = next(iter(servers.routers.values()))
    results = interleave([
        Target("bare FastAPI endpoint (ceiling)", *servers.bare,
               lambda k: route_requests(prompts())),
        Target("router /v1/route (256 prompts)", port, pid,
               lambda k: route_requests(prompts())),
        Target("router /v1/route (all distinct)", port, pid,
               lambda k: route_requests(distinct(f"route-{k}", 40_000)))],
        rounds=args.rounds, concurrency=args.concurrency, duration=args.duration)
    bare = results["bare FastAPI endpoint (ceiling)"]
    for name in ("router /v1/route (256 prompts)", "router /v1/route (all distinct)"):
        r = results[name]
        print(f"  -> {name}: {r['rps']:.0f} req/s (target >= 1500), "
              f"{100 * r['rps'] / bare['rps']:.0f}% of the bare endpoint (target >= 50%)")


def section_overhead(servers: Servers, args: argparse.Namespace) -> None:
    print(f"\noverhead: {args.streams} concurrent streaming chat completions, upstream "
          f"latency {args.upstream_latency_ms:g} ms, {args.chunk_delay_ms:g} ms between chunks, "
          f"clients starting over {args.ramp_s:g} s; {args.rounds} rounds of {args.duration:g} "
          f"s, interleaved", flush=True)
    servers.control(chunk_delay_ms=args.chunk_delay_ms)
    direct = servers.direct()
    results = interleave([direct, *servers.router_chat("overhead")], rounds=args.rounds,
                         concurrency=args.streams, duration=args.duration, ramp=args.ramp_s,
                         heads=True)
    base = results.pop(direct.name)
    for name, r in results.items():
        print(f"  -> overhead, {name}: p50 {r['p50_ms'] - base['p50_ms']:+.2f} ms (target <= 2), "
              f"p99 {r['p99_ms'] - base['p99_ms']:+.2f} ms (target <= 10); first byte p50 "
              f"{r['head_p50_ms'] - base['head_p50_ms']:+.2f} ms, p99 "
              f"{r['head_p99_ms'] - base['head_p99_ms']:+.2f} ms")


def section_peer(servers: Servers, args: argparse.Namespace) -> None:
    from litellm_peer import PEER_VERSION

    print(f"\npeer: streaming chat completions, concurrency {args.peer_concurrency}, upstream "
          f"latency {args.upstream_latency_ms:g} ms, no delay between chunks; {args.rounds} "
          f"rounds of {args.duration:g} s, interleaved", flush=True)
    servers.control(chunk_delay_ms=0)
    targets = [servers.direct(), *servers.router_chat("peer")]
    peer_name = f"LiteLLM proxy {PEER_VERSION}"
    if servers.peer is not None:
        targets.append(Target(peer_name, *servers.peer,
                              lambda k: chat_requests("gpt-4o", prompts())))
    results = interleave(targets, rounds=args.rounds, concurrency=args.peer_concurrency,
                         duration=args.duration)
    peer = results.get(peer_name)
    for target in targets[1:]:
        r = results[target.name]
        if peer is not None and target.name != peer_name:
            print(f"  -> {target.name} / LiteLLM: CPU per request "
                  f"{r['cpu_ms'] / peer['cpu_ms']:.3f}x (target <= 0.2), p50 "
                  f"{r['p50_ms']:.1f} vs {peer['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} vs "
                  f"{peer['p99_ms']:.1f} ms")
    reference, *others = servers.routers
    for other in others:
        for kind in ("pass-through", "routed, distinct"):
            ref, alt = (results[f"router {kind} [{t}]"] for t in (reference, other))
            print(f"  -> upstream transport, {kind}: {other} {alt['cpu_ms']:.3f} ms, "
                  f"{reference} {ref['cpu_ms']:.3f} ms of router CPU per stream: "
                  f"{other}/{reference} {alt['cpu_ms'] / ref['cpu_ms']:.2f}x")


def section_log() -> None:
    print("\nlog: outcome-log writes (bench/outcome_log.py, SQLite)", flush=True)
    spec = importlib.util.spec_from_file_location("bench_outcome_log",
                                                  REPO / "bench" / "outcome_log.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--n", "50000", "--no-postgres"])


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--sections", default=",".join(SECTIONS),
        help=f"comma-separated, from {', '.join(SECTIONS)} (default: all)")
    add("--model", help="model folder (default: train a small one)")
    add("--rounds", type=int, default=3, help="interleaved rounds per section (default 3)")
    add("--duration", type=float, default=4.0, help="measured seconds per target and round")
    add("--concurrency", type=int, default=64, help="route: concurrent clients")
    add("--streams", type=int, default=100, help="overhead: concurrent streams")
    add("--peer-concurrency", type=int, default=32, help="peer: concurrent clients")
    add("--upstream-latency-ms", type=float, default=20.0)
    add("--chunk-delay-ms", type=float, default=100.0,
        help="overhead: the fake provider's delay between stream chunks")
    add("--ramp-s", type=float, default=1.0,
        help="overhead: the stream clients start spread over this many seconds")
    add("--transports", default="aiohttp",
        help="upstream transports to run a router with, comma-separated, the reference "
             "first (ROUTER_UPSTREAM_TRANSPORT values; default aiohttp)")
    add("--no-peer", action="store_true", help="peer: leave LiteLLM out")
    add("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
        help="server event loop: auto (what `router serve` runs: uvloop and httptools when "
             "installed), asyncio (+h11), uvloop (+httptools)")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown or not args.transports:
        parser.error(f"unknown section(s) {sorted(unknown)}; known: {', '.join(SECTIONS)}"
                     if unknown else "--transports names no transport")
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        parser.error("--loop uvloop needs `pip install uvloop httptools`")
    if args.loop == "auto":
        args.loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return args


def start_peer(fake_port: int, folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    from litellm_peer import PeerUnavailable, ensure_litellm, start_litellm

    try:
        exe = ensure_litellm()
    except PeerUnavailable as exc:
        sys.exit(f"error: cannot build LiteLLM's environment for the peer section: {exc}\n"
                 "hint: check that PyPI is reachable, or run with --no-peer")
    port = free_port()
    return start_litellm(exe, port, f"http://127.0.0.1:{fake_port}/v1", folder), port


def header(args: argparse.Namespace, model_dir: Path) -> None:
    load = os.getloadavg()
    commit = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %cI"],
                            capture_output=True, text=True).stdout.strip()
    print(f"bench/serve.py on {os.cpu_count()} cores (load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}), commit {commit or '?'}, server loop {args.loop}, "
          f"router transports {', '.join(args.transports)}, model {model_dir}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model_dir = Path(args.model) if args.model else train_model(tmp / "model")
    header(args, model_dir)
    procs: list[mp.Process] = []
    peer: subprocess.Popen[bytes] | None = None
    try:
        fake_port, bare_port = free_port(), free_port()
        procs += [start(serve_fake, fake_port, args.loop, args.upstream_latency_ms),
                  start(serve_bare, bare_port, args.loop)]
        routers: dict[str, tuple[int, int]] = {}
        for transport in args.transports:
            port = free_port()
            procs.append(start(serve_router, port, args.loop, str(model_dir),
                               f"http://127.0.0.1:{fake_port}/v1",
                               f"sqlite:///{tmp}/log-{transport}.db", transport))
            routers[transport] = (port, procs[-1].pid or 0)
        servers = Servers((fake_port, procs[0].pid or 0), (bare_port, procs[1].pid or 0),
                          routers)
        if "peer" in args.sections and not args.no_peer:
            peer, peer_port = start_peer(fake_port, tmp)
            servers.peer = (peer_port, peer.pid)
        for proc, (port, path) in zip(procs, [(fake_port, "/v1/models"), (bare_port, "/healthz"),
                                              *((p, "/healthz") for p, _ in routers.values())],
                                      strict=True):
            wait_ready(port, path, proc.is_alive)
        if peer is not None and servers.peer is not None:
            wait_ready(servers.peer[0], "/health/liveliness", lambda: peer.poll() is None)
        for name, run in (("route", section_route), ("overhead", section_overhead),
                          ("peer", section_peer)):
            if name in args.sections:
                run(servers, args)
    finally:
        if peer is not None:
            peer.terminate()
            peer.wait(timeout=30)
        for proc in procs:
            proc.terminate()
            proc.join(timeout=10)
    if "log" in args.sections:
        section_log()
    return 0


if __name__ == "__main__":
    sys.exit(main())
