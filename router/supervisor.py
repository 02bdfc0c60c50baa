"""Several worker processes serving one port: `router serve --workers N`.

`Supervisor(target, args, workers=N).run()` starts N processes that each call
`target(*args, ready)`, and returns the exit code. `router serve`'s workers
each listen on the port with `SO_REUSEPORT`, so the kernel spreads connections
evenly over them: with one shared listening socket the worker that wakes first
accepts a whole burst of connections (64 keep-alive clients connecting at once
all landed on one of two workers), and keep-alive clients then never move.

Why not uvicorn's own `--workers`: its supervisor builds each worker's server
from an import string, so a worker could not run what `router serve` runs in
one process (the app built from the already validated settings, the in-process
fake provider when asked, and `graceful_server`, which ends the streams still
running at the end of the grace period); and the Prometheus bookkeeping needs a
hook when a worker exits (`mark_process_dead`), which it has not. What is left
to own is small: spawn, watch, replace, stop.

- Workers are spawned, not forked: a fork would copy whatever threads and
  OpenMP state the parent has; a spawned worker imports and loads on its own.
- Metrics: a private `PROMETHEUS_MULTIPROC_DIR` per run, created empty and
  removed at the end, set in the environment the workers inherit (prometheus_client
  reads it when first imported); `router.metrics` adds up every worker's values.
- The first worker starts alone. If it fails before serving (it prints its
  error and exits `STARTUP_FAILURE`), nothing else starts and `run` returns 1,
  so a bad model or catalog is said once, not N times. The others start once it
  serves.
- A worker that dies later is replaced (its counts stay in the metrics totals;
  its live gauges are removed); one that cannot start is not retried (it says
  why; the others keep serving; with none left `run` returns 1).
- SIGTERM or SIGINT: every worker gets SIGTERM, finishes its requests within
  `ROUTER_SHUTDOWN_GRACE_S` and flushes its outcome log; the supervisor waits for
  all of them (SIGKILL after `stop_timeout_s`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from router.metrics import MULTIPROC_DIR_ENV

__all__ = ["Supervisor", "STARTUP_FAILURE", "usable_cores"]

log = logging.getLogger(__name__)

# The exit code of a worker that never served (uvicorn uses the same for its own).
STARTUP_FAILURE = 3


@dataclass(frozen=True)
class _Worker:
    proc: BaseProcess
    ready: Any  # a multiprocessing Event the worker sets once it serves


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Supervisor:
    """Start, watch, replace and stop `workers` processes (see the module docstring)."""

    def __init__(self, target: Callable[..., None], args: Sequence[Any], *, workers: int,
                 stop_timeout_s: float, poll_s: float = 0.5) -> None:
        self.target = target
        self.args = tuple(args)
        self.workers = workers
        self.stop_timeout_s = stop_timeout_s
        self.poll_s = poll_s
        self._mp = mp.get_context("spawn")
        self._stop = threading.Event()
        self._workers: list[_Worker] = []
        self.metrics_dir: str | None = None

    def run(self, on_serving: Callable[[], None] | None = None) -> int:
        """Serve until SIGTERM/SIGINT; 1 when the first worker cannot start, else 0.

        `on_serving` is called once the first worker serves.
        """
        with self._signals(), self._metrics_dir():
            first = self._start()
            self._workers.append(first)
            if not self._wait_serving(first):
                self._stop_all()
                return 0 if self._stop.is_set() else 1
            if on_serving is not None:
                on_serving()
            self._workers.extend(self._start() for _ in range(self.workers - 1))
            while not self._stop.wait(self.poll_s):
                self._replace_dead()
                if not self._workers:
                    log.error("no worker left: stopping")
                    return 1
            self._stop_all()
        return 0

    # -- one worker -----------------------------------------------------------------------

    def _start(self) -> _Worker:
        ready = self._mp.Event()
        proc = self._mp.Process(target=self.target, args=(*self.args, ready),
                                name="router-worker")
        proc.start()
        log.info("worker %s started", proc.pid)
        return _Worker(proc, ready)

    def _wait_serving(self, worker: _Worker) -> bool:
        """True once `worker` serves; False if it exits first or a stop is asked."""
        proc = worker.proc
        while not self._stop.is_set():
            if worker.ready.wait(self.poll_s):
                return True
            if not proc.is_alive():
                proc.join()
                self._forget(proc)
                if proc.exitcode != STARTUP_FAILURE:
                    log.error("worker %s exited with code %s before serving", proc.pid,
                              proc.exitcode)
                return False
        return False

    def _replace_dead(self) -> None:
        """Replace each worker that died; drop one that could not start (it said why),
        since its replacement would fail alike."""
        kept: list[_Worker] = []
        for worker in self._workers:
            proc = worker.proc
            if proc.is_alive() or self._stop.is_set():
                kept.append(worker)
                continue
            proc.join()
            self._forget(proc)
            if proc.exitcode == STARTUP_FAILURE:
                log.error("worker %s could not start (see its error above); not restarting "
                          "it", proc.pid)
                continue
            log.error("worker %s exited (code %s); starting a replacement", proc.pid,
                      proc.exitcode)
            kept.append(self._start())
        self._workers = kept

    def _forget(self, proc: BaseProcess) -> None:
        """Drop a dead worker's live gauges; its counters stay in the totals."""
        if self.metrics_dir is not None and proc.pid is not None:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(proc.pid, self.metrics_dir)

    # -- all of them ----------------------------------------------------------------------

    def _stop_all(self) -> None:
        procs = [worker.proc for worker in self._workers]
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(self.stop_timeout_s)
            if proc.is_alive():
                log.error("worker %s did not stop within %.0f s; killing it", proc.pid,
                          self.stop_timeout_s)
                proc.kill()
                proc.join()
            self._forget(proc)
        self._workers.clear()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self._workers))
            self._stop.set()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def _metrics_dir(self) -> Iterator[None]:
        previous = os.environ.get(MULTIPROC_DIR_ENV)
        self.metrics_dir = tempfile.mkdtemp(prefix="router-metrics-")
        os.environ[MULTIPROC_DIR_ENV] = self.metrics_dir
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(MULTIPROC_DIR_ENV, None)
            else:
                os.environ[MULTIPROC_DIR_ENV] = previous
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None
