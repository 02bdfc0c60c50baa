"""`router serve`: clear start-up errors, a real process with the fake upstream, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from router.cli import main
from router.outcome_log import open_outcome_log
from tests.router import app_fixtures
from tests.router.app_fixtures import wait_until_ready

# Fixtures shared by the app tests (pytest finds them as module attributes).
tiny_artifact = app_fixtures.tiny_artifact


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_port_in_use_is_one_clear_error(tiny_artifact: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["serve", "--model", str(tiny_artifact), "--port", str(port),
                     "--log-url", str(tmp_path / "log.db")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: port {port} on 127.0.0.1 is already in use" in err
    assert "Traceback" not in err


def test_a_port_another_workers_server_listens_on_is_refused_too(
        tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["serve", "--model", str(tiny_artifact), "--port", str(port),
                     "--workers", "2", "--log-url", str(tmp_path / "log.db")])
    assert code == 1
    assert f"error: port {port} on 127.0.0.1 is already in use" in capsys.readouterr().err


def test_nothing_to_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROUTER_REGISTRY", str(tmp_path))
    assert main(["serve", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "error: no model to serve: no --model and no current version in" in err
    assert "hint: train one" in err


def test_a_current_pointing_outside_the_registry_is_refused_not_loaded(
        tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    registry = tmp_path / "models"
    (registry / "versions").mkdir(parents=True)
    shutil.copytree(tiny_artifact, tmp_path / "elsewhere")  # a loadable model, not registered
    (registry / "CURRENT").write_text("../../elsewhere\n")
    assert main(["serve", "--registry", str(registry), "--port", "0",
                 "--log-url", str(tmp_path / "log.db")]) == 1
    err = capsys.readouterr().err
    assert "holds '../../elsewhere', which is not a version id" in err
    assert "Traceback" not in err


def test_corrupt_model_stops_start_up(tiny_artifact: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_artifact, broken)
    (broken / "quality.lgb").write_text("garbage")
    assert main(["serve", "--model", str(broken), "--port", "0",
                 "--log-url", str(tmp_path / "log.db")]) == 1
    assert "error: " in capsys.readouterr().err


@pytest.mark.slow
def test_serve_with_fake_upstream_then_graceful_stop_flushes_the_log(
        tiny_artifact: Path, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "outcomes.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    # A long flush interval: only the graceful shutdown can have written the rows.
    env["ROUTER_LOG_FLUSH_INTERVAL_S"] = "60"
    env["ROUTER_LOG_BATCH_SIZE"] = "1000"
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.cli", "serve", "--model", str(tiny_artifact),
         "--port", str(port), "--fake-upstream", "--log-url", str(log_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, proc)
        ids = []
        for content in ("hi", "prove that 2 + 2 = 4", "write a poem"):
            r = httpx.post(f"{url}/v1/chat/completions", timeout=10, json={
                "model": "router", "messages": [{"role": "user", "content": content}]})
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-request-id"])
        assert open_outcome_log(log_path).export_dataframe().empty
    finally:
        proc.send_signal(signal.SIGTERM)
        output: Any = proc.communicate(timeout=30)[0]
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output and "fake upstream mounted" in output
    assert sorted(open_outcome_log(log_path).export_dataframe()["request_id"]) == sorted(ids)


@pytest.mark.parametrize("auth", ["settings", "override"])
def test_streams_still_running_at_the_end_of_the_grace_period_get_an_error_event_and_503(
        tmp_path: Path, fake_upstream_server: Any, auth: str,
        caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import threading

    from router.app import create_app
    from router.deps import client_key
    from router.fake import serve_in_thread
    from router.settings import load_settings

    caplog.set_level(logging.INFO, logger="router.api._pipeline")
    base_url, control = fake_upstream_server
    control.configure(None, chunk_delay_ms=400)  # a long answer: outlives the grace period
    log_url = str(tmp_path / "outcomes.db")
    app = create_app(load_settings(upstream_base_url=base_url, log_url=log_url,
                                   exploration=0.0), model=app_fixtures.StubModel())
    if auth == "override":  # as tests swap the key check: the same path must serve
        app.dependency_overrides[client_key] = lambda: None
    received: list[str] = []
    first = threading.Event()

    def stream(url: str) -> None:
        body = {"model": "router", "stream": True,
                "messages": [{"role": "user", "content": "tell me a long story"}]}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                received.append(line)
                first.set()

    with serve_in_thread(app, name="router", shutdown_grace_s=1.0,
                         on_deadline=app.state.ctx.cut_streams) as url:
        client = threading.Thread(target=stream, args=(url,))
        client.start()
        assert first.wait(10)
        started = time.monotonic()
    took = time.monotonic() - started
    client.join(10)
    assert took < 5
    events = [line for line in received if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]", received
    assert '"code":"server_shutting_down"' in events[-2] and '"status":503' in events[-2]
    [row] = open_outcome_log(log_url).export_dataframe().to_dict("records")
    assert row["status"] == 503 and row["error"].startswith("server shutting down")
    assert "(stream, status 503)" in caplog.text  # the server log line, not 499


@pytest.mark.slow
def test_sigkill_loses_only_what_was_answered_in_the_last_flush_interval(
        tiny_artifact: Path, tmp_path: Path) -> None:
    from router.settings import Settings

    port = free_port()
    log_path = tmp_path / "outcomes.db"
    # The default batching: what the README's guarantee is stated for.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    flush_s = Settings.model_fields["log_flush_interval_s"].default
    batch = Settings.model_fields["log_batch_size"].default
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.cli", "serve", "--model", str(tiny_artifact),
         "--port", str(port), "--fake-upstream", "--log-url", str(log_path)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answered: list[tuple[str, float]] = []
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, proc)
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(30):
                if i == 20:
                    time.sleep(5 * flush_s)  # the first 20 are then long due
                r = client.post("/v1/chat/completions", json={
                    "model": "router", "messages": [{"role": "user", "content": f"q {i}"}]})
                assert r.status_code == 200, r.text
                answered.append((r.headers["x-request-id"], time.monotonic()))
    finally:
        proc.kill()
        proc.wait(timeout=30)
    killed = time.monotonic()
    logged = set(open_outcome_log(log_path).export_dataframe()["request_id"])
    lost = [(rid, at) for rid, at in answered if rid not in logged]
    assert len(lost) <= batch
    # Only requests answered within the last flush interval (plus a write's time) are lost.
    assert all(killed - at < flush_s + 1.0 for _, at in lost), (lost, killed)
    assert {rid for rid, _ in answered[:20]} <= logged


def test_workers_below_one_is_one_clear_error(tiny_artifact: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", str(tiny_artifact), "--port", "0", "--workers", "0",
                 "--log-url", str(tmp_path / "log.db")]) == 1
    err = capsys.readouterr().err
    assert "error: --workers 0: at least 1 process is needed" in err
    assert "hint: --workers 1 (the default)" in err


def test_workers_from_the_environment_are_checked_too(
        tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROUTER_WORKERS", "-2")
    assert main(["serve", "--model", str(tiny_artifact), "--port", "0",
                 "--log-url", str(tmp_path / "log.db")]) == 1
    assert "ROUTER_WORKERS: must be a positive integer, got -2" in capsys.readouterr().err


def test_every_worker_gets_the_settings_the_server_validated(tmp_path: Path) -> None:
    import pickle

    from router.commands.serve import WorkerSpec
    from router.settings import load_settings

    config = tmp_path / "router.toml"
    config.write_text('api_keys = ["client-key-1"]\nexploration = 0.1\n')
    # A settings class made for a TOML file does not pickle; the spec carries its values.
    settings = load_settings(config, log_url=str(tmp_path / "log.db"), workers=2,
                             upstream_base_url="http://127.0.0.1:9/v1")
    spec = pickle.loads(pickle.dumps(WorkerSpec(settings.model_dump(), fake_upstream=True,
                                                fake_latency_ms=5.0, debug=False)))
    again = spec.load_settings()
    assert again.model_dump() == settings.model_dump()
    assert again.api_key_digests == settings.api_key_digests and again.exploration == 0.1


def _start_workers(tmp_path: Path, *argv: str, workers: int = 2,
                   env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    full_env["TMPDIR"] = str(tmp_path)  # the metrics folder lands here, for the test to see
    full_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "router.cli", "serve", "--port", str(port), "--workers",
         str(workers), *argv], env=full_env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, proc, timeout_s=60)
    return proc, url


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    output: str = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    return output


def _metrics(url: str, name: str) -> dict[str, float]:
    import re

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {labels: float(value) for labels, value in
            re.findall(rf"^{name}\{{(.*?)\}} (\S+)$", text, flags=re.M)}


def _worker_pids_that_counted(tmp_path: Path) -> set[str]:
    return {p.stem.split("_")[-1] for p in tmp_path.glob("router-metrics-*/counter_*.db")}


@pytest.mark.slow
def test_two_workers_count_every_request_once_and_a_sigterm_flushes_both_logs(
        tiny_artifact: Path, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    log_path = tmp_path / "outcomes.db"
    # A long flush interval: only each worker's graceful shutdown can have written its rows.
    proc, url = _start_workers(tmp_path, "--model", str(tiny_artifact), "--log-url",
                               str(log_path), env={"ROUTER_LOG_FLUSH_INTERVAL_S": "60",
                                                   "ROUTER_LOG_BATCH_SIZE": "10000"})
    ids: list[str] = []
    try:
        def route(i: int) -> str:
            # A fresh connection each: the kernel picks the worker per connection.
            r = httpx.post(f"{url}/v1/route", timeout=10, json={
                "messages": [{"role": "user", "content": f"question {i}"}]})
            assert r.status_code == 200, r.text
            return r.headers["x-request-id"]

        with ThreadPoolExecutor(8) as pool:
            while len(_worker_pids_that_counted(tmp_path)) < 2 and len(ids) < 800:
                ids += pool.map(route, range(len(ids), len(ids) + 40))
        assert len(_worker_pids_that_counted(tmp_path)) == 2, "one worker served everything"
        counted = _metrics(url, "router_requests_total")
        assert sum(v for k, v in counted.items() if 'endpoint="route"' in k) == len(ids)
        assert open_outcome_log(log_path).export_dataframe().empty
    finally:
        output = _stop(proc)
    assert output.count("Application shutdown complete") == 2, output
    logged = open_outcome_log(log_path).export_dataframe()["request_id"]
    assert sorted(logged) == sorted(ids)
    assert not list(tmp_path.glob("router-metrics-*")), "the metrics folder outlived the server"


@pytest.mark.slow
def test_a_promoted_version_reaches_every_worker_and_a_dead_one_is_replaced(
        tiny_artifact: Path, tmp_path: Path) -> None:
    from router.registry import Registry
    from tests.router.app_fixtures import wait_for

    registry = Registry(tmp_path / "models")
    registry.add(tiny_artifact, version_id="v1")
    registry.promote("v1")
    proc, url = _start_workers(tmp_path, "--registry", str(registry.root), "--log-url",
                               str(tmp_path / "log.db"),
                               env={"ROUTER_RELOAD_INTERVAL_S": "0.2"})
    try:
        def serving(version: str) -> set[str]:
            try:
                info = _metrics(url, "router_model_info")
            except httpx.TransportError:
                # A connection the killed worker had queued but not accepted is reset
                # (each worker has its own SO_REUSEPORT queue); the next one is not.
                return set()
            return {labels for labels, value in info.items()
                    if f'version="{version}"' in labels and value == 1.0}

        # One series per worker (label pid); the second starts once the first serves.
        assert wait_for(lambda: len(serving("v1")) == 2, timeout=60)
        registry.add(tiny_artifact, version_id="v2")
        registry.promote("v2")
        assert wait_for(lambda: len(serving("v2")) == 2 and not serving("v1"), timeout=30)
        # A worker that dies is replaced; its live series go with it.
        killed = next(iter(serving("v2"))).split('"')[1]
        os.kill(int(killed), signal.SIGKILL)
        assert wait_for(lambda: len(serving("v2")) == 2 and f'pid="{killed}"' not in
                        " ".join(serving("v2")), timeout=60)
    finally:
        _stop(proc)
