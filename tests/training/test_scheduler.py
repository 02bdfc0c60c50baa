"""The retrain scheduler: durations, cron expressions, repeated runs, failures, SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from router.errors import ConfigError
from training.scheduler import build_trigger, parse_duration, run_scheduled


@pytest.mark.parametrize(("text", "seconds"), [
    ("24h", 86400), ("30m", 1800), ("1h30m", 5400), ("7d", 604800), ("0.5s", 0.5), ("2w", 1209600),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "24", "h", "1x", "0s", "-5m", "24h!"])
def test_bad_duration_names_the_option_and_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--every: "):
        parse_duration(text)


def test_cron_expression_gives_the_next_03_00() -> None:
    trigger = build_trigger(cron="0 3 * * *")
    now = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, now) == datetime(2025, 5, 2, 3, 0, tzinfo=UTC)


def test_invalid_cron_and_conflicting_options_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"--cron: invalid expression '61 \* \* \* \*'"):
        build_trigger(cron="61 * * * *")
    with pytest.raises(ConfigError, match="exactly one of --every and --cron"):
        build_trigger(every="1h", cron="0 3 * * *")
    with pytest.raises(ConfigError, match="exactly one of --every and --cron"):
        build_trigger()


def test_the_job_runs_repeatedly_on_a_tiny_interval() -> None:
    calls: list[float] = []

    def job() -> int:
        calls.append(time.monotonic())
        return len(calls)

    start = time.monotonic()
    report = run_scheduled(job, every="0.05s", max_runs=3, handle_signals=False)
    assert report.runs == 3 and report.failures == 0
    assert report.results == [1, 2, 3]
    assert time.monotonic() - start < 5
    assert all(b > a for a, b in zip(calls, calls[1:], strict=False))


def test_a_failing_run_is_counted_and_the_schedule_goes_on() -> None:
    calls = []

    def job() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("upstream log database down")
        return "ok"

    trigger = IntervalTrigger(seconds=0.05)
    report = run_scheduled(job, trigger=trigger, max_runs=2, handle_signals=False)
    assert (report.runs, report.failures, report.results) == (2, 1, ["ok"])


def test_run_now_runs_once_at_start_up_before_the_first_interval() -> None:
    start = time.monotonic()
    report = run_scheduled(lambda: "first", every="1h", run_now=True, max_runs=1,
                           handle_signals=False)
    assert report.results == ["first"]
    assert time.monotonic() - start < 5, "did not wait for the hourly interval"


def test_sigterm_stops_the_scheduler_cleanly() -> None:
    timer = threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGTERM))
    timer.start()
    previous = signal.getsignal(signal.SIGTERM)
    start = time.monotonic()
    report = run_scheduled(lambda: None, every="1h")
    timer.join()
    assert report.runs == 0
    assert time.monotonic() - start < 5
    assert signal.getsignal(signal.SIGTERM) is previous, "the old handler is restored"
