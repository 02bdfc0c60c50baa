"""`router serve --workers N` against one worker: requests/s and CPU per request.

Two `router serve` processes run side by side on the same fake provider (20 ms),
one with `--workers 1`, one with `--workers N` (2), each exactly as a user starts
it; the load client, the fake provider and the routers share the machine's cores.
The targets are measured interleaved (1, N, 1, N, ... for `--rounds` rounds), so
drift on the shared machine hits both alike. CPU per request is the server's whole
process tree (the supervisor and its workers) over the requests it served.

route   `POST /v1/route`, every prompt distinct (a full prediction per request),
        at concurrency `--concurrency` (64): the router's own CPU is the bottleneck.
chat    Streaming chat completions routed with distinct prompts (`router:0.7`), no
        delay between chunks, concurrency `--concurrency`: the fake provider and the
        client take their share of the cores too.

Target: `--workers 2` serves >= 1.3x the requests/s of one worker on a 2-core
machine, with no rise in CPU per request.

    python bench/workers.py                     # ~1.5 minutes
    python bench/workers.py --rounds 5 --duration 5 --workers 2
    python bench/workers.py --model models/demo --sections route

The load client, the CPU sampling and the interleaving are bench/loadgen.py's (the
servers and requests bench/serve.py's).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import serve as bench  # bench/serve.py and bench/loadgen.py: this script's folder is on sys.path
from loadgen import Target, interleave

SECTIONS = ("route", "chat")


def start_router(port: int, workers: int, model_dir: Path, upstream: str,
                 folder: Path) -> subprocess.Popen[bytes]:
    """`router serve --workers N` as a user runs it (settings as bench/serve.py's router)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    env.update(ROUTER_EXPLORATION="0", ROUTER_CACHE_TTL_S="0", ROUTER_RELOAD_INTERVAL_S="0")
    return subprocess.Popen(
        [sys.executable, "-m", "router.cli", "serve", "--model", str(model_dir),
         "--port", str(port), "--workers", str(workers), "--upstream-base-url", upstream,
         "--log-url", f"sqlite:///{folder}/log-{workers}.db"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_workers(port: int, workers: int, proc: subprocess.Popen[bytes],
                 timeout: float = 120.0) -> None:
    """Until every worker serves: one `router_model_info` series per live worker."""
    bench.wait_ready(port, "/readyz", lambda: proc.poll() is None, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        if len(re.findall(r"^router_model_info\{.*\} 1\.0$", text, flags=re.M)) >= workers:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{workers} workers on port {port} did not all start")


def requests_of(kind: str, workers: int) -> Callable[[int], list[bytes]]:
    """The requests of each round: prompts no server has seen in this run."""
    def requests(k: int) -> list[bytes]:
        if kind == "route":
            return bench.route_requests(bench.distinct(f"route-{workers}-{k}", 40_000))
        return bench.chat_requests("router:0.7", bench.distinct(f"chat-{workers}-{k}", 20_000))

    return requests


def compare(title: str, targets: list[Target], args: argparse.Namespace) -> None:
    print(f"\n{title}; {args.rounds} rounds of {args.duration:g} s, interleaved", flush=True)
    one, many = targets
    results = interleave(targets, rounds=args.rounds, concurrency=args.concurrency,
                               duration=args.duration)
    a, b = results[one.name], results[many.name]
    print(f"  -> {args.workers} workers / 1: {b['rps'] / a['rps']:.2f}x requests/s "
          f"(target >= 1.3), CPU per request {b['cpu_ms'] / a['cpu_ms']:.2f}x "
          f"(target: no rise)", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: train a small one)")
    parser.add_argument("--workers", type=int, default=2, help="N of the second server")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--upstream-latency-ms", type=float, default=20.0)
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}")
    if args.workers < 2:
        parser.error("--workers: compare 1 worker with 2 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    model_dir = Path(args.model) if args.model else bench.train_model(folder / "model")
    load = os.getloadavg()
    print(f"bench/workers.py on {os.cpu_count()} cores (load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}), 1 vs {args.workers} workers, model {model_dir}",
          flush=True)
    fake_port = bench.free_port()
    fake = bench.start(bench.serve_fake, fake_port, "auto", args.upstream_latency_ms)
    routers: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}
    try:
        bench.wait_ready(fake_port, "/v1/models", fake.is_alive)
        upstream = f"http://127.0.0.1:{fake_port}/v1"
        for n in (1, args.workers):
            port = bench.free_port()
            routers[n] = (port, start_router(port, n, model_dir, upstream, folder))
        for n, (port, proc) in routers.items():
            wait_workers(port, n, proc)

        def targets(kind: str) -> list[Target]:
            return [Target(f"{kind}, {n} worker{'s' if n > 1 else ''}", port, proc.pid,
                                 requests_of(kind, n))
                    for n, (port, proc) in routers.items()]

        if "route" in args.sections:
            compare(f"route: POST /v1/route, every prompt distinct, concurrency "
                    f"{args.concurrency}", targets("route"), args)
        if "chat" in args.sections:
            compare(f"chat: streaming chat completions routed, distinct prompts, concurrency "
                    f"{args.concurrency}, upstream {args.upstream_latency_ms:g} ms",
                    targets("chat"), args)
    finally:
        for _, proc in routers.values():
            proc.terminate()
        for _, proc in routers.values():
            proc.wait(timeout=60)
        fake.terminate()
        fake.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
