"""Fault-injection run: what each fault costs clients and the outcome log, real processes.

For each fault, one at a time, a fresh `router fake-upstream` process and a fresh
`router serve --upstream-base-url ...` process (SQLite outcome log in a temp
folder, default log settings) are started on loopback, and bounded mixed traffic
is sent: `--requests` routed chat requests (`model: router`, every third one
streamed, every prompt distinct) at concurrency `--concurrency`. The faults:

- none: the baseline; its most-served model becomes the victim of the next ones;
- 401 / 429 / 503: the victim always answers that status (fake's run-time control);
- frozen: the victim never answers (the router's read timeout is set to 2 s);
- dies mid-stream: the victim drops the connection after 2 chunks of a stream
  (its non-streamed answers are fine);
- SIGTERM / SIGKILL: the router gets the signal once half the requests are answered.

A fake that resets connections before answering is not simulated (the fake
upstream cannot do it); connection failures are covered by tests/router/upstream/test_client.py.

Per fault, one row: requests sent, client errors (no response, non-2xx, or a
stream without a clean end: an error event or no `[DONE]`), 5xx (status, or the
status of a stream's error event), requests answered (response read to its end),
their records in the outcome log, records lost (answered, not in the log), and
how many answers the victim model served.
The log is read after the router has stopped (SIGTERM after the traffic, or the
fault's own signal). Everything stops by itself: ~1-2 minutes in all.

    python bench/faults.py
    python bench/faults.py --requests 400 --concurrency 16 --model models/demo
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
FAULTS = ("none", "401", "429", "503", "frozen", "dies mid-stream", "SIGTERM", "SIGKILL")
TOPICS = ("prove that the sum of two even numbers is even", "write a haiku about autumn rain",
          "translate 'good morning' into French", "fix the off-by-one bug in this loop",
          "summarise the causes of the first world war", "classify the sentiment of a review",
          "explain quicksort and its worst case", "what is the capital of Australia?")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_model(out: Path) -> Path:
    """The small synthetic LightGBM model bench/serve.py trains."""
    spec = importlib.util.spec_from_file_location("bench_serve", REPO / "bench" / "serve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.train_model(out)


@dataclass
class Outcome:
    sent: int = 0
    client_errors: int = 0
    server_errors: int = 0
    answered_ids: list[str] = field(default_factory=list)
    served: Counter[str] = field(default_factory=Counter)
    logged: set[str] = field(default_factory=set)


@dataclass
class Servers:
    fake: subprocess.Popen[bytes]
    router: subprocess.Popen[bytes]
    fake_url: str
    router_url: str
    log_path: Path

    def stop(self) -> None:
        # The router gets its grace period; the fake, whose frozen requests would
        # hold a graceful stop for minutes, only a moment.
        for proc, grace in ((self.router, 30), (self.fake, 2)):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not ready after {timeout:g} s")


def start_servers(model_dir: Path, folder: Path, latency_ms: float,
                  chunk_delay_ms: float) -> Servers:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    env.update({"ROUTER_EXPLORATION": "0", "ROUTER_CACHE_TTL_S": "0",
                "ROUTER_UPSTREAM_READ_TIMEOUT_S": "2", "ROUTER_SHUTDOWN_GRACE_S": "5",
                "ROUTER_RELOAD_INTERVAL_S": "0"})
    fake_port, router_port = free_port(), free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    cli = [sys.executable, "-m", "router.cli"]
    fake = subprocess.Popen([*cli, "fake-upstream", "--port", str(fake_port),
                             "--latency-ms", f"{latency_ms:g}",
                             "--chunk-delay-ms", f"{chunk_delay_ms:g}"], env=env, **quiet)
    log_path = folder / "outcomes.db"
    router = subprocess.Popen([*cli, "serve", "--model", str(model_dir), "--port",
                               str(router_port), "--upstream-base-url",
                               f"http://127.0.0.1:{fake_port}/v1", "--log-url", str(log_path)],
                              env=env, **quiet)
    servers = Servers(fake, router, f"http://127.0.0.1:{fake_port}",
                      f"http://127.0.0.1:{router_port}", log_path)
    try:
        wait_ready(f"{servers.fake_url}/v1/models", fake)
        wait_ready(f"{servers.router_url}/readyz", router)
    except BaseException:
        servers.stop()
        raise
    return servers


async def one_request(client: httpx.AsyncClient, i: int, outcome: Outcome) -> None:
    stream = i % 3 == 0
    body = {"model": "router", "stream": stream, "messages": [
        {"role": "user", "content": f"{TOPICS[i % len(TOPICS)]} (request {i})"}]}
    outcome.sent += 1
    ok, status = False, 0
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            status = response.status_code
            request_id = response.headers.get("x-request-id")
            if not stream:
                await response.aread()
                ok = status < 300
            else:
                done, errored, error_status = False, False, 0
                async for line in response.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: ") and '"error"' in line[:20]:
                        errored = True
                        error_status = int(json.loads(line[6:])["error"].get("status") or 0)
                status = error_status or status
                ok = status < 300 and done and not errored
                if not done:
                    raise httpx.RemoteProtocolError("stream ended without [DONE]")
            if request_id:
                outcome.answered_ids.append(request_id)
            outcome.served[response.headers.get("x-router-model", "?")] += ok
    except httpx.HTTPError:
        ok = False
    outcome.client_errors += not ok
    outcome.server_errors += status >= 500


async def traffic(url: str, n: int, concurrency: int, on_half: Any = None) -> Outcome:
    outcome = Outcome()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    signalled = False

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal signalled
        while not queue.empty():
            await one_request(client, queue.get_nowait(), outcome)
            if on_half is not None and not signalled and len(outcome.answered_ids) >= n // 2:
                signalled = True
                on_half()

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.wait_for(asyncio.gather(*(worker(client) for _ in range(concurrency))),
                               timeout=300)
    return outcome


def control(servers: Servers, **changes: Any) -> None:
    httpx.post(f"{servers.fake_url}/_control", json=changes, timeout=5).raise_for_status()


def logged_ids(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT request_id FROM requests")}


def run_fault(fault: str, victim: str, args: argparse.Namespace, model_dir: Path,
              folder: Path) -> Outcome:
    folder.mkdir(parents=True)
    servers = start_servers(model_dir, folder, args.latency_ms, args.chunk_delay_ms)
    on_half = None
    try:
        if fault in ("401", "429", "503"):
            control(servers, model=victim, fail_status=int(fault))
        elif fault == "frozen":
            control(servers, model=victim, latency_ms=600_000)
        elif fault == "dies mid-stream":
            control(servers, model=victim, stream_fail_after=2)
        elif fault in ("SIGTERM", "SIGKILL"):
            sig = signal.SIGTERM if fault == "SIGTERM" else signal.SIGKILL
            on_half = lambda: servers.router.send_signal(sig)  # noqa: E731
        outcome = asyncio.run(traffic(servers.router_url, args.requests, args.concurrency,
                                      on_half))
    finally:
        servers.stop()
    outcome.logged = logged_ids(servers.log_path)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: train a small one)")
    parser.add_argument("--requests", type=int, default=200, help="requests per fault")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=50.0,
                        help="the fake's delay before each answer")
    parser.add_argument("--chunk-delay-ms", type=float, default=20.0,
                        help="the fake's delay between stream chunks")
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS))
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    model_dir = Path(args.model) if args.model else train_model(tmp / "model")
    print(f"bench/faults.py: {args.requests} routed chat requests per fault (1 in 3 "
          f"streamed, distinct prompts), concurrency {args.concurrency}, fake latency "
          f"{args.latency_ms:g} ms + {args.chunk_delay_ms:g} ms between chunks; logs in {tmp}",
          flush=True)
    victim = "deepseek-v4-flash"
    header = (f"{'fault':<28} {'sent':>5} {'client errors':>14} {'5xx':>5} {'answered':>9} "
              f"{'in log':>7} {'lost':>5} {'served by victim':>17}")
    rows = []
    for k, fault in enumerate(args.faults):
        started = time.monotonic()
        outcome = run_fault(fault, victim, args, model_dir, tmp / f"fault{k}")
        if fault == "none" and outcome.served:
            victim = outcome.served.most_common(1)[0][0]
        answered = set(outcome.answered_ids)
        logged = outcome.logged
        name = fault if fault in ("none", "SIGTERM", "SIGKILL") else f"{victim}: {fault}"
        if fault == "none":
            name = f"none (victim next: {victim})"
        row = (f"{name:<28} {outcome.sent:>5} {outcome.client_errors:>14} "
               f"{outcome.server_errors:>5} {len(answered):>9} {len(answered & logged):>7} "
               f"{len(answered - logged):>5} {outcome.served[victim]:>17}")
        rows.append(row)
        print(f"  {fault}: done in {time.monotonic() - started:.1f} s", flush=True)
    print("\n" + header)
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
