"""Dependencies split by side: the base install serves; the offline side is an extra.

A serving-only environment is simulated by blocking every offline-only module
(`sys.modules[name] = None` makes its import fail as if it were not installed)
before `router` is imported; `training` is blocked too, as in the serving
Docker image, which leaves it out.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from router.cli import OFFLINE_EXTRA, OFFLINE_MODULES
from tests.conftest import REPO_ROOT
from tests.router import app_fixtures
from tests.router.app_fixtures import wait_until_ready

tiny_artifact = app_fixtures.tiny_artifact

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
# Distributions whose import name differs from theirs.
IMPORT_NAMES = {"scikit-learn": "sklearn", "pyspellchecker": "spellchecker",
                "psycopg[binary]": "psycopg", "prometheus-client": "prometheus_client",
                "pydantic-settings": "pydantic_settings", "dask[distributed]": "dask"}
SERVING_ONLY = (f"import sys\nfor name in {sorted(OFFLINE_MODULES)!r}:\n"
                f"    sys.modules[name] = None\n"
                f"from router.cli import main\nsys.exit(main(sys.argv[1:]))\n")


def _module(requirement: str) -> str | None:
    if requirement.startswith("cost-aware-router"):
        return None  # an extra that pulls in another extra
    name = re.split(r"[<>=;~! ]", requirement, maxsplit=1)[0].strip()
    return IMPORT_NAMES.get(name, name.replace("-", "_"))


def _modules(requirements: list[str]) -> set[str]:
    return {m for m in map(_module, requirements) if m is not None}


def test_the_base_install_has_no_offline_library_and_the_cli_knows_the_extras() -> None:
    extras = PYPROJECT["optional-dependencies"]
    offline = _modules(extras["train"]) | _modules(extras["dask"])
    assert offline & _modules(PYPROJECT["dependencies"]) == set()
    assert {"pandas", "matplotlib", "apscheduler", "dask"} <= offline
    # What the CLI treats as "not installed here": exactly the extras, plus the offline
    # package itself and dask's scheduler package.
    assert offline | {"training", "distributed"} == OFFLINE_MODULES
    assert OFFLINE_EXTRA == "cost-aware-router[train]" and "train" in extras
    assert "cost-aware-router[train,dask]" in extras["test"]


def _router(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SERVING_ONLY, *argv], capture_output=True,
                          text=True, timeout=120, cwd=REPO_ROOT, **kwargs)  # type: ignore


def test_router_help_lists_the_online_commands_and_names_the_missing_side() -> None:
    done = _router("--help")
    assert done.returncode == 0, done.stderr
    listed = re.findall(r"^    (\S+)\s", done.stdout, flags=re.M)
    assert {"route", "serve", "fake-upstream"} <= set(listed)
    assert "train" not in listed and "WARNING" not in done.stderr
    assert f"not installed here (the offline side, pip install '{OFFLINE_EXTRA}'): " \
           in done.stdout and "quickstart" in done.stdout.split("not installed here")[1]

    done = _router("train", "--data", "x.csv", "--out", "m")
    assert done.returncode == 1
    assert re.search(r"^error: command 'train' is not installed here \(no module "
                     r"'training[\w.]*'\): it is part of the offline side$", done.stderr,
                     flags=re.M), done.stderr
    assert f"hint: pip install '{OFFLINE_EXTRA}'" in done.stderr


def test_an_offline_command_without_its_libraries_says_which_extra() -> None:
    # A serving-only pip install has the `training` package but not pandas.
    script = SERVING_ONLY.replace(repr(sorted(OFFLINE_MODULES)),
                                  repr(sorted(OFFLINE_MODULES - {"training"})))
    done = subprocess.run([sys.executable, "-c", script, "demo-data", "--out", "demo.csv"],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 1
    assert "offline side and not installed here" in done.stderr, done.stderr
    assert f"hint: pip install '{OFFLINE_EXTRA}'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_router_serve_routes_and_proxies_without_the_offline_side(
        tiny_artifact: Path, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVING_ONLY, "serve", "--model", str(tiny_artifact),
         "--port", str(port), "--fake-upstream", "--log-url", str(tmp_path / "log.db")],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, proc, timeout_s=60)
        route = httpx.post(f"{url}/v1/route", timeout=10, json={
            "messages": [{"role": "user", "content": "prove that 2 + 2 = 4"}]})
        assert route.status_code == 200, route.text
        meta = json.loads((tiny_artifact / "meta.json").read_text())
        assert route.json()["model_version"] == meta["version_id"]
        assert route.json()["model"] in meta["models"]
        chat = httpx.post(f"{url}/v1/chat/completions", timeout=10, json={
            "model": "router", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"]
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output


def _imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Top-level modules imported at module level, and inside functions."""
    at_top: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [child.module]
            (lazy if inner else at_top).update(n.split(".")[0] for n in names)
            visit(child, inner)

    visit(tree, False)
    return at_top, lazy


def test_router_imports_only_what_the_base_install_has() -> None:
    """A module-level import of anything outside the base install breaks serving-only
    installs; an offline library may only be imported inside a function (offline paths)."""
    base = _modules(PYPROJECT["dependencies"])
    # Modules installed by a base dependency under another name.
    provided = {"starlette": "fastapi", "pydantic_core": "pydantic", "yarl": "aiohttp",
                "multidict": "aiohttp"}
    # Reached only from offline paths (training, the fake provider's recorded tables), and
    # lazily: they read outcome-table files with pandas.
    offline_packages = ("router/outcome_tables/",)
    unlisted: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / "router").rglob("*.py")):
        where = str(path.relative_to(REPO_ROOT))
        at_top, lazy = _imports(ast.parse(path.read_text(encoding="utf-8")))
        if where.startswith(offline_packages):
            at_top, lazy = set(), at_top | lazy
        for module in at_top | lazy:
            if module in sys.stdlib_module_names or module == "router" or \
                    provided.get(module) in base or module in base:
                continue
            if module in OFFLINE_MODULES - {"training"} and module not in at_top:
                continue  # an offline path, imported when used
            unlisted.setdefault(module, set()).add(where)
    assert unlisted == {}, "imported by router/ but not in the base dependencies"
