"""Run a job (a retrain) on a schedule in a long-running process: `--every 24h` or `--cron EXPR`.

Built on APScheduler 3.x's `BlockingScheduler`, so `router retrain --every 24h`
is one foreground process that a supervisor (systemd, Kubernetes, a terminal)
owns; for hosts that prefer their own scheduler, deploy/cron/ has crontab,
systemd timer and Kubernetes CronJob examples that run one retrain per call.

Choices that matter in production:
* one instance at a time (`max_instances=1`) and `coalesce=True`: a retrain that
  overruns its interval is not stacked on top of itself, and missed runs after a
  suspend collapse into one;
* a failing run is logged and the schedule continues (the next run may succeed;
  the registry keeps the last good model serving meanwhile);
* SIGTERM stops the scheduler cleanly (what `systemctl stop` and Kubernetes send).
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from router.errors import ConfigError

__all__ = ["parse_duration", "build_trigger", "run_scheduled", "ScheduleReport"]

log = logging.getLogger(__name__)

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str, *, option: str = "--every") -> timedelta:
    """`"24h"`, `"30m"`, `"1h30m"`, `"7d"`, `"0.5s"` -> timedelta; ConfigError otherwise."""
    cleaned = str(text).strip().lower().replace(" ", "")
    parts = _PART.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise ConfigError(f"{option}: cannot read duration {text!r}",
                          hint="use a number and a unit s, m, h, d or w, e.g. 24h, 30m, 1h30m, 7d")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"{option}: duration {text!r} must be positive")
    return timedelta(seconds=seconds)


def build_trigger(*, every: str | timedelta | None = None, cron: str | None = None,
                  timezone: str = "UTC") -> BaseTrigger:
    """An APScheduler trigger from exactly one of `every` and a 5-field crontab `cron`."""
    if (every is None) == (cron is None):
        raise ConfigError("pass exactly one of --every and --cron",
                          hint="e.g. --every 24h, or --cron '0 3 * * *' (03:00 every day)")
    if every is not None:
        interval = every if isinstance(every, timedelta) else parse_duration(every)
        return IntervalTrigger(seconds=interval.total_seconds(), timezone=timezone)
    try:
        return CronTrigger.from_crontab(cron, timezone=timezone)
    except ValueError as exc:
        raise ConfigError(f"--cron: invalid expression {cron!r} ({exc})",
                          hint="five fields: minute hour day-of-month month day-of-week, "
                               "e.g. '0 3 * * *'") from None


class ScheduleReport:
    """What happened while the scheduler ran: run count and failures (for tests and logs)."""

    def __init__(self) -> None:
        self.runs = 0
        self.failures = 0
        self.results: list[Any] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ScheduleReport(runs={self.runs}, failures={self.failures})"

    def record(self, event: JobExecutionEvent) -> int:
        """Count one finished run (a failure is logged); returns the runs so far."""
        with self._lock:
            self.runs += 1
            if event.exception is not None:
                self.failures += 1
                log.error("scheduled run %d failed: %s", self.runs, event.exception)
            else:
                self.results.append(event.retval)
            return self.runs


def _run_once_now(job: Callable[[], Any]) -> JobExecutionEvent:
    """The start-up run, in this thread, reported like a scheduled one."""
    log.info("start-up run")
    try:
        retval, error = job(), None
    except Exception as exc:  # the schedule must survive a failed run
        retval, error = None, exc
    return JobExecutionEvent(EVENT_JOB_ERROR if error else EVENT_JOB_EXECUTED,
                             "retrain", None, None, exception=error, retval=retval)


@contextlib.contextmanager
def _sigterm_stops(scheduler: BlockingScheduler, handle_signals: bool) -> Iterator[None]:
    """SIGTERM (what `systemctl stop` and Kubernetes send) stops the scheduler cleanly;
    only the main thread may set a handler."""
    if not handle_signals or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        log.info("signal %d received; stopping the scheduler", signum)
        if scheduler.running:
            scheduler.shutdown(wait=False)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_scheduled(
    job: Callable[[], Any],
    *,
    every: str | timedelta | None = None,
    cron: str | None = None,
    trigger: BaseTrigger | None = None,
    run_now: bool = False,
    max_runs: int | None = None,
    scheduler: BlockingScheduler | None = None,
    timezone: str = "UTC",
    handle_signals: bool = True,
) -> ScheduleReport:
    """Run `job` on the schedule until interrupted (or after `max_runs` runs); block.

    `trigger` overrides `every`/`cron` (tests inject one); `run_now` also runs the
    job once at start-up, so a freshly deployed retrainer does not wait a day for
    its first run; `scheduler` lets a caller supply a configured BlockingScheduler.
    """
    trigger = trigger or build_trigger(every=every, cron=cron, timezone=timezone)
    scheduler = scheduler or BlockingScheduler(timezone=timezone)
    report = ScheduleReport()

    def on_event(event: JobExecutionEvent) -> None:
        runs = report.record(event)
        if max_runs is not None and runs >= max_runs and scheduler.running:
            scheduler.shutdown(wait=False)

    if run_now:
        # Before the scheduler starts: a freshly deployed retrainer does its first
        # run at once, and counts it like any other.
        runs = report.record(_run_once_now(job))
        if max_runs is not None and runs >= max_runs:
            return report
    scheduler.add_listener(on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.add_job(job, trigger, id="retrain", name="retrain", max_instances=1,
                      coalesce=True, misfire_grace_time=3600, replace_existing=True)
    job_ref = scheduler.get_job("retrain")
    next_run = getattr(job_ref, "next_run_time", None) if job_ref else None
    log.info("scheduler started: %s%s", trigger, f", next run {next_run}" if next_run else "")
    with _sigterm_stops(scheduler, handle_signals):
        scheduler.start()
    return report
