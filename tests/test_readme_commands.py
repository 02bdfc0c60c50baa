"""Every command the README tells a newcomer to run works as written.

Blocks marked `<!-- test: run -->` or `<!-- test: with-server -->` (the comment on the
line before the fence) run in document order, each in a fresh `bash -e` (or `python`
for a python block), all in one temporary folder with `ROUTER_REGISTRY` pointing at a
temporary registry. The set-up stands in for the README's first command, minus its
endless serve: `router quickstart --no-serve`. Before the first `with-server` block a
real `router serve --fake-upstream` starts in that folder on a free port, which replaces
`127.0.0.1:8000` in the blocks. The configuration table must equal
`router.settings.options_table()`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
MARKED = re.compile(r"<!-- test: (run|with-server) -->\n```(bash|python)\n(.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    mode: str  # "run" or "with-server"
    language: str  # "bash" or "python"
    code: str


def readme_blocks(text: str) -> list[Block]:
    return [Block(mode, lang, code) for mode, lang, code in MARKED.findall(text)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(block: Block, cwd: Path, env: dict[str, str], port: int | None) -> str:
    code = block.code if port is None else block.code.replace("127.0.0.1:8000",
                                                              f"127.0.0.1:{port}")
    argv = ["bash", "-e", "-o", "pipefail", "-c", code] if block.language == "bash" \
        else [sys.executable, "-c", code]
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (f"README block failed (exit {done.returncode}):\n{code}\n"
                                  f"--- stdout\n{done.stdout[-3000:]}\n"
                                  f"--- stderr\n{done.stderr[-3000:]}")
    return done.stdout


def test_readme_marks_the_tour_blocks():
    blocks = readme_blocks(README.read_text())
    modes = [b.mode for b in blocks]
    assert modes.count("run") >= 1 and modes.count("with-server") >= 5
    assert any(b.language == "python" and "OpenAI(base_url=" in b.code for b in blocks)


def test_readme_configuration_table_is_the_generated_one():
    from router.settings import options_table

    text = README.read_text()
    match = re.search(r"<!-- settings:begin -->\n(.*?)\n<!-- settings:end -->", text, re.S)
    assert match, "README lost its <!-- settings:begin/end --> markers"
    assert match.group(1).strip() == options_table().strip(), (
        "README configuration table differs from `python -m router.settings`; paste its output")


@pytest.mark.slow
def test_readme_commands_work_as_written(tmp_path):
    pytest.importorskip("openai", reason="the README's OpenAI-client block needs `openai` "
                                         "(in the test extra)")
    env = {**os.environ, "ROUTER_REGISTRY": str(tmp_path / "registry"), "NO_COLOR": "1"}
    for var in ("ROUTER_LOG_URL", "ROUTER_CACHE_URL", "ROUTER_CONFIG", "ROUTER_API_KEYS",
                "ROUTER_MODEL_DIR", "ROUTER_REGISTRY_DIR", "ROUTER_PORT"):
        env.pop(var, None)
    # The blocks run from a clone's root: the files they read from the repository too.
    examples = tmp_path / "training" / "examples"
    examples.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "training" / "examples" / "prompts.csv", examples)
    setup = subprocess.run(["router", "quickstart", "--no-serve"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=240)
    assert setup.returncode == 0, setup.stderr[-3000:]
    assert "AIQ: router" in setup.stdout and "promoted v" in setup.stdout

    outputs: list[str] = []
    server: subprocess.Popen[bytes] | None = None
    port: int | None = None
    try:
        for block in readme_blocks(README.read_text()):
            if block.mode == "with-server" and server is None:
                port = _free_port()
                server_log = tmp_path / "serve.log"
                with server_log.open("wb") as sink:
                    server = subprocess.Popen(
                        ["router", "serve", "--fake-upstream", "--port", str(port)],
                        cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT)
                _wait_ready(port, server, server_log)
            outputs.append(_run(block, tmp_path, env, port if block.mode == "with-server"
                                else None))
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    joined = "\n".join(outputs)
    # What a newcomer sees: the eval table, a decision, the routed answer's headers,
    # feedback accepted, a retrain verdict, the registry and the saving report.
    assert (tmp_path / "tour" / "eval.png").stat().st_size > 10_000
    assert "AIQ: router" in joined and '"candidates"' in joined
    assert "x-router-model:" in joined.lower()
    assert "data: [DONE]" in joined
    assert "routed to " in joined
    assert '"status":"accepted"' in joined.replace(" ", "")
    assert "decision: PROMOTE" in joined or "decision: REFUSE" in joined
    assert "* v" in joined  # `router models list` marks the current version
    assert 'router_requests_total{endpoint="chat"' in joined
    assert "had every request gone to" in joined
    assert '"full_data_aiq"' in joined and (tmp_path / "tour" / "loop.png").is_file()
    assert "24 pairs run" in joined  # router collect over the shipped example prompts
    # Everything the tour writes stays under tour/ (and the quickstart's demo/).
    written = {p.name for p in tmp_path.iterdir()} - {"training", "registry", "serve.log"}
    assert written <= {"tour", "demo", "models", "router_outcomes.db", "router_outcomes.db-wal",
                       "router_outcomes.db-shm"}, written
    routes = (tmp_path / "tour" / "routes.csv").read_text().splitlines()
    assert routes[0] == "prompt_id,bar,model,expected_quality,expected_cost_usd"
    assert len(routes) == 1 + 2 * 250


def _wait_ready(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"router serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("router serve did not become ready within 60 s")


def test_every_file_the_readme_names_exists():
    text = README.read_text()
    named = set(re.findall(r"`((?:deploy|bench|notebooks|models|tests|training|router)/"
                           r"[\w./-]+\.(?:py|yaml|yml|json|toml|md))", text))
    named |= {"Dockerfile", ".dockerignore"}
    missing = sorted(p for p in named if not (REPO_ROOT / p).exists())
    assert not missing, f"README names files that do not exist: {missing}"
    assert len(named) >= 12
