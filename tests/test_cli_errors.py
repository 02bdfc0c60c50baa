"""The common mistakes a newcomer makes end in one `error:` line and one `hint:` line.

Each case checks the exact first line (or its stable prefix where a driver message
follows), that a hint follows, the exit code 1, and that no traceback is printed;
`--debug` brings the traceback back. Offline commands run in-process through
`router.cli.main`; `serve` and `fake-upstream` run as real subprocesses, since
binding ports and starting servers is what they get wrong.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from router.cli import main


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, _error_lines(err)


def _error_lines(stderr: str) -> list[str]:
    # Log records (warnings with a timestamp) may precede the error; the error is ours.
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.startswith("error: ")), None)
    assert start is not None, f"no `error:` line in:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    return lines[start:]


def _assert_two_lines(lines: list[str], first: str, *, exact: bool = True) -> None:
    assert (lines[0] == first) if exact else lines[0].startswith(first), lines
    assert len(lines) == 2 and lines[1].startswith("hint: "), lines


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("ROUTER_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("ROUTER_REGISTRY", str(tmp_path / "registry"))
    return tmp_path


def test_wrong_path(in_tmp, capsys):
    code, lines = _cli(capsys, "train", "--data", "nope.csv", "--out", "model")
    assert code == 1
    _assert_two_lines(lines, "error: nope.csv: file not found")
    assert not (in_tmp / "model").exists()


def test_wrong_format(in_tmp, capsys):
    (in_tmp / "notes.txt").write_text("prompt_id,prompt,model,quality\n")
    code, lines = _cli(capsys, "train", "--data", "notes.txt", "--out", "model")
    assert code == 1
    _assert_two_lines(lines, "error: notes.txt: unknown file type")
    assert lines[1] == "hint: use one of .csv, .csv.gz, .parquet, .pq, .jsonl, .jsonl.gz, .ndjson"


def test_wrong_output_format(in_tmp, capsys):
    code, lines = _cli(capsys, "demo-data", "--out", "demo.txt", "--prompts", "5")
    assert code == 1
    _assert_two_lines(lines, "error: demo.txt: unknown output file type")
    assert not (in_tmp / "demo.txt").exists()


def test_missing_prices(in_tmp, capsys):
    (in_tmp / "outcomes.csv").write_text("prompt_id,prompt,model,quality\n"
                                         "p1,hi,mystery-model,1\np1,hi,gpt-4o,0\n")
    code, lines = _cli(capsys, "train", "--data", "outcomes.csv", "--out", "model")
    assert code == 1
    _assert_two_lines(lines, "error: outcomes.csv, row 1: model 'mystery-model' has no price: "
                             "it is not in the catalog and none of its rows has a cost_usd")
    assert "add a cost_usd column" in lines[1] and "--prices FILE" in lines[1]


def test_model_folder_not_found(in_tmp, capsys):
    code, lines = _cli(capsys, "route", "hello", "--model", "nope")
    assert code == 1
    _assert_two_lines(lines, "error: nope: model folder not found")


@pytest.mark.parametrize(("prompt", "first"), [
    ("", "error: prompt is blank: give a prompt with some text or a list of messages"),
    (" \n", "error: prompt is blank: give a prompt with some text or a list of messages"),
    ('[{"role": "user", "content": null}]',
     "error: prompt.0.content is missing or null: only an assistant message with tool_calls "
     "may have no content"),
])
def test_blank_prompt_is_refused_before_loading_a_model(in_tmp, capsys, prompt, first):
    code, lines = _cli(capsys, "route", prompt, "--model", "nope")
    assert code == 1
    _assert_two_lines(lines, first)


def test_outcome_log_not_found(in_tmp, capsys):
    code, lines = _cli(capsys, "report", "--log", "nope.db")
    assert code == 1
    _assert_two_lines(lines, "error: no outcome log at nope.db")
    assert not (in_tmp / "nope.db").exists()


def test_unreachable_postgres_for_retrain(in_tmp, capsys):
    code, lines = _cli(capsys, "retrain", "--log", "postgresql://127.0.0.1:1/x")
    assert code == 1
    _assert_two_lines(lines, "error: cannot connect to the outcome log at "
                             "postgresql://127.0.0.1:1/x: ", exact=False)
    assert "ROUTER_LOG_URL" in lines[1]


def test_mistyped_command_suggests_the_closest_one(in_tmp, capsys):
    code, lines = _cli(capsys, "trian", "--data", "demo.csv")
    assert code == 1
    assert lines == ["error: unknown command 'trian' (did you mean 'train'?)",
                     "hint: `router --help` lists the commands"]
    code, lines = _cli(capsys, "qickstart", "--port", "8001")
    assert code == 1 and lines[0] == (
        "error: unknown command 'qickstart' (did you mean 'quickstart'?)")


def test_unknown_command_with_no_close_match_lists_the_commands(in_tmp, capsys):
    code, lines = _cli(capsys, "xyzzy")
    assert code == 1 and lines[0] == "error: unknown command 'xyzzy'"
    assert lines[1].startswith("hint: commands: ") and "train" in lines[1]


def test_usage_errors_are_one_line_and_exit_1_like_every_failure(in_tmp, capsys):
    code, lines = _cli(capsys, "train", "--data", "demo.csv")
    assert code == 1
    assert lines == ["error: router train: the following arguments are required: --out",
                     "hint: `router train --help` shows the options, with examples"]
    code, lines = _cli(capsys, "route", "hi", "--bar", "high")
    assert code == 1
    _assert_two_lines(lines, "error: router route: argument --bar: invalid float value: 'high'")


def test_debug_shows_the_traceback(in_tmp, capsys):
    from router.errors import DataError

    with pytest.raises(DataError, match="file not found"):
        main(["--debug", "train", "--data", "nope.csv", "--out", "model"])


# --- servers: real subprocesses --------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _router(tmp_path: Path, *argv: str) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    env["ROUTER_REGISTRY"] = str(tmp_path / "registry")
    done = subprocess.run(["router", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    return done.returncode, _error_lines(done.stderr)


@pytest.fixture
def registry(tmp_path: Path) -> str:
    (tmp_path / "registry").mkdir()
    return str(tmp_path / "registry")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_port_in_use(tmp_path, registry, busy_port):
    code, lines = _router(tmp_path, "serve", "--registry", registry, "--port", str(busy_port))
    assert code == 1
    _assert_two_lines(lines, f"error: port {busy_port} on 127.0.0.1 is already in use")


def test_fake_upstream_port_in_use(tmp_path, busy_port):
    code, lines = _router(tmp_path, "fake-upstream", "--port", str(busy_port))
    assert code == 1
    _assert_two_lines(lines, f"error: port {busy_port} on 127.0.0.1 is already in use")


def test_serve_model_folder_not_found(tmp_path):
    code, lines = _router(tmp_path, "serve", "--model", "nope")
    assert code == 1
    _assert_two_lines(lines, "error: --model nope: no such folder")


@pytest.mark.parametrize(("option", "warning"), [
    ("--cache-url=redis://127.0.0.1:1/0", "the Redis cache at redis://127.0.0.1:1/0 does not "
                                          "answer"),
    ("cooldown_sync_url", "the breaker-sharing Redis at redis://127.0.0.1:1/0 does not answer"),
])
def test_serve_starts_without_an_unreachable_optional_redis(tmp_path, registry, option, warning):
    # Running replicas carry on without the cache or breaker sharing, so a starting one
    # must too: one warning, then it serves (and uses Redis once it answers).
    argv = ["router", "serve", "--registry", registry, "--port", str(port := _free_port())]
    if option == "cooldown_sync_url":
        (tmp_path / "router.toml").write_text('cooldown_sync_url = "redis://127.0.0.1:1/0"\n')
        argv += ["--config", str(tmp_path / "router.toml")]
    else:
        argv.append(option)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    server = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert server.poll() is None, server.stderr.read()
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert warning in err
    assert "error:" not in err


def test_serve_refuses_a_malformed_redis_url(tmp_path, registry):
    code, lines = _router(tmp_path, "serve", "--registry", registry, "--port", str(_free_port()),
                          "--cache-url", "notredis://127.0.0.1/0")
    assert code == 1
    assert lines[0].startswith("error: ") and "notredis://127.0.0.1/0" in lines[0]


def test_serve_unreachable_postgres(tmp_path, registry):
    code, lines = _router(tmp_path, "serve", "--registry", registry, "--port", str(_free_port()),
                          "--log-url", "postgresql://127.0.0.1:1/x")
    assert code == 1
    _assert_two_lines(lines, "error: cannot connect to the outcome log at "
                             "postgresql://127.0.0.1:1/x: ", exact=False)
    assert "ROUTER_LOG_URL" in lines[1]
