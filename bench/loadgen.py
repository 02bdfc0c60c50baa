"""The load side of `bench/serve.py`: closed-loop clients in their own process,
the server's CPU per request from /proc, and interleaved rounds over several servers.

The client is a small raw HTTP/1.1 keep-alive client on asyncio, so its own cost
stays far below a server's (httpx costs ~10x more per request).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Target", "cpu_seconds", "interleave", "run_load", "show", "summarise"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of process `pid` and its descendants (Linux /proc)."""
    ticks, todo = 0, [pid]
    while todo:
        proc = Path(f"/proc/{todo.pop()}")
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
            for task in (proc / "task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue  # exited meanwhile
    return ticks / os.sysconf("SC_CLK_TCK")


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
    result: dict[str, Any] = {"latencies": [], "heads": [], "errors": 0, "served": 0}
    start_at = time.perf_counter() + ramp + warmup
    stop_at = start_at + duration

    async def worker(offset: int) -> None:
        # Client k starts k/concurrency of the ramp late; with ramp 0 they all start
        # at once, a burst every closed-loop client then keeps in step with.
        await asyncio.sleep(ramp * offset / concurrency)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while (t0 := time.perf_counter()) < stop_at:
            writer.write(requests[i % len(requests)])
            i += concurrency
            marks: list[float] = []
            status = await _read_response(reader, marks)
            result["served"] += 1
            if t0 >= start_at:
                result["latencies"].append(time.perf_counter() - t0)
                result["heads"].append(marks[0] - t0)
                result["errors"] += status >= 400
        writer.close()

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return result


def loadgen(port: int, requests: list[bytes], concurrency: int, duration: float,
            warmup: float, ramp: float, out: Any) -> None:
    out.put(asyncio.run(_load(port, requests, concurrency, duration, warmup, ramp)))


def run_load(port: int, requests: list[bytes], concurrency: int, duration: float, *,
             server_pid: int, warmup: float = 1.0, ramp: float = 0.0) -> dict[str, Any]:
    """One closed-loop run; the server's CPU spent over it, over every request it
    served (warm-up included, since the CPU sample covers it too)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=loadgen, args=(port, requests, concurrency, duration, warmup,
                                             ramp, queue))
    proc.start()
    cpu0 = cpu_seconds(server_pid)
    result = queue.get(timeout=duration + warmup + ramp + 120)
    result["cpu_s"] = cpu_seconds(server_pid) - cpu0
    result["duration"] = duration
    proc.join()
    return result


@dataclass
class Target:
    """A server under load: `requests(round)` gives the requests of each round."""

    name: str
    port: int
    pid: int
    requests: Callable[[int], list[bytes]]


def summarise(runs: list[dict[str, Any]]) -> dict[str, float]:
    lat = sorted(x for r in runs for x in r["latencies"])
    heads = sorted(x for r in runs for x in r["heads"])
    if not lat:
        raise RuntimeError("no request completed")
    n = len(lat)
    return {"rps": n / sum(r["duration"] for r in runs), "n": n,
            "errors": sum(r["errors"] for r in runs),
            "p50_ms": 1000 * lat[n // 2], "p99_ms": 1000 * lat[int(n * 0.99)],
            "head_p50_ms": 1000 * heads[n // 2], "head_p99_ms": 1000 * heads[int(n * 0.99)],
            "cpu_ms": 1000 * sum(r["cpu_s"] for r in runs) / sum(r["served"] for r in runs)}


def interleave(targets: list[Target], *, rounds: int, concurrency: int, duration: float,
               ramp: float = 0.0, heads: bool = False) -> dict[str, dict[str, float]]:
    """Every target once per round, in order, `rounds` times; one summary per target."""
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for k in range(rounds):
        for t in targets:
            runs[t.name].append(run_load(t.port, t.requests(k), concurrency, duration,
                                         server_pid=t.pid, ramp=ramp))
    results = {name: summarise(r) for name, r in runs.items()}
    for name, r in results.items():
        show(name, r, heads=heads)
    return results


def show(name: str, r: dict[str, float], *, heads: bool = False) -> None:
    head = (f"  head p50 {r['head_p50_ms']:7.2f} p99 {r['head_p99_ms']:7.2f}" if heads
            else "")
    print(f"  {name:<34} {r['rps']:>6.0f} req/s  p50 {r['p50_ms']:7.2f} ms  "
          f"p99 {r['p99_ms']:7.2f} ms{head}  server CPU {r['cpu_ms']:6.3f} ms/req  "
          f"(n={r['n']}, errors={r['errors']})", flush=True)
