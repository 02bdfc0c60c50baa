"""The `--workers` supervisor: start, replace, stop, and its metrics folder.

The workers here are small functions (spawned, like the router's) that record
what happened to them in files, so each test reads what every process saw.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from router.metrics import MULTIPROC_DIR_ENV
from router.supervisor import STARTUP_FAILURE, Supervisor
from tests.router.app_fixtures import wait_for


def serving_worker(folder: str, ready: Any) -> None:
    """Serves until SIGTERM, then writes `stopped-<pid>`."""
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    pid = os.getpid()
    (Path(folder) / f"started-{pid}").write_text(os.environ.get(MULTIPROC_DIR_ENV, ""))
    ready.set()
    stopped.wait(60)
    (Path(folder) / f"stopped-{pid}").write_text("")


def failing_worker(folder: str, ready: Any) -> None:
    (Path(folder) / f"started-{os.getpid()}").write_text("")
    sys.exit(STARTUP_FAILURE)


def worker_failing_once_told(folder: str, ready: Any) -> None:
    if (Path(folder) / "fail").exists():
        failing_worker(folder, ready)
    serving_worker(folder, ready)


def pids(folder: Path, state: str) -> set[int]:
    return {int(p.name.split("-")[1]) for p in folder.glob(f"{state}-*")}


def test_a_first_worker_that_cannot_start_stops_everything(
        tmp_path: Path) -> None:
    supervisor = Supervisor(failing_worker, (str(tmp_path),), workers=3,
                            stop_timeout_s=10, poll_s=0.05)
    assert supervisor.run() == 1
    assert len(pids(tmp_path, "started")) == 1  # said once, not by every worker
    assert MULTIPROC_DIR_ENV not in os.environ


def test_a_dead_worker_is_replaced_and_sigterm_stops_every_worker(
        tmp_path: Path) -> None:
    supervisor = Supervisor(serving_worker, (str(tmp_path),), workers=2,
                            stop_timeout_s=30, poll_s=0.05)
    killed: list[int] = []

    def drive() -> None:
        assert wait_for(lambda: len(pids(tmp_path, "started")) == 2, timeout=30)
        killed.append(min(pids(tmp_path, "started")))
        os.kill(killed[0], signal.SIGKILL)
        assert wait_for(lambda: len(pids(tmp_path, "started")) == 3, timeout=30)
        os.kill(os.getpid(), signal.SIGTERM)  # as `docker stop` or systemd would

    driver = threading.Thread(target=drive)
    driver.start()
    assert supervisor.run() == 0
    driver.join()
    started = pids(tmp_path, "started")
    assert len(started) == 3 and killed[0] in started
    assert pids(tmp_path, "stopped") == started - set(killed)
    # Every worker got the same private metrics folder, gone once the server stopped.
    folders = {(tmp_path / f"started-{pid}").read_text() for pid in started}
    assert len(folders) == 1 and "router-metrics-" in next(iter(folders))
    assert not Path(next(iter(folders))).exists()
    assert MULTIPROC_DIR_ENV not in os.environ


def test_a_replacement_that_cannot_start_is_not_retried_and_none_left_stops(
        tmp_path: Path) -> None:
    supervisor = Supervisor(worker_failing_once_told, (str(tmp_path),), workers=2,
                            stop_timeout_s=30, poll_s=0.05)
    first: list[int] = []

    def drive() -> None:
        assert wait_for(lambda: len(pids(tmp_path, "started")) == 2, timeout=30)
        first.extend(sorted(pids(tmp_path, "started")))
        (tmp_path / "fail").write_text("")  # e.g. the model on disk went bad
        os.kill(first[0], signal.SIGKILL)
        assert wait_for(lambda: len(pids(tmp_path, "started")) == 3, timeout=30)
        time.sleep(0.5)  # several polls: a retry would show as a 4th start
        assert len(pids(tmp_path, "started")) == 3
        os.kill(first[1], signal.SIGKILL)

    driver = threading.Thread(target=drive)
    driver.start()
    assert supervisor.run() == 1  # no worker left
    driver.join()
    assert len(pids(tmp_path, "started")) == 4
