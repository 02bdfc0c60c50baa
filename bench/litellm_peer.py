"""The LiteLLM proxy as the peer `bench/serve.py` measures the router against.

LiteLLM is never a dependency of the project: it lives in the benchmark's own
virtual environment, `.venv-litellm` at the repository root (gitignored, and outside
the source folders that tools and tests walk), made on first use with
`python -m venv` and `pip install "litellm[proxy]==1.81.13"`. The version is
pinned exactly: the figures compare against one known release, and an exact pin
cannot drift onto a withdrawn one (1.82.7 and 1.82.8 were pulled from PyPI as
compromised).

The proxy runs as LiteLLM documents it for one process: `litellm --config`,
one uvicorn worker, no database (no DATABASE_URL), no master key, telemetry
off, its model-price map read from the package instead of fetched at start-up;
one model, `gpt-4o`, sent to the same fake provider the router calls.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["PEER_VERSION", "PeerUnavailable", "ensure_litellm", "start_litellm"]

PEER_VERSION = "1.81.13"
VENV = Path(__file__).resolve().parents[1] / ".venv-litellm"


class PeerUnavailable(RuntimeError):
    """The LiteLLM environment could not be built or started; the message says why."""


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    done = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                           "print(m.version('litellm'))"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_litellm(venv: Path = VENV, *, echo: bool = True) -> Path:
    """The `litellm` executable of `venv`, building the environment if it lacks
    LiteLLM `PEER_VERSION`. Raises `PeerUnavailable` with pip's last words."""
    python, exe = venv / "bin" / "python", venv / "bin" / "litellm"
    if _installed_version(python) == PEER_VERSION and exe.exists():
        return exe
    if echo:
        print(f"  building {venv} with litellm[proxy]=={PEER_VERSION} (first use, ~1 minute)",
              flush=True)
    steps = ([sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              f"litellm[proxy]=={PEER_VERSION}"])
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PeerUnavailable(f"`{' '.join(step)}` failed: {exc}") from exc
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise PeerUnavailable(f"`{' '.join(step)}` exited with {done.returncode}:\n    "
                                  + "\n    ".join(said))
    found = _installed_version(python)
    if found != PEER_VERSION or not exe.exists():
        raise PeerUnavailable(f"{venv} has litellm {found}, not {PEER_VERSION}; delete the "
                              "folder and run again")
    return exe


def start_litellm(exe: Path, port: int, upstream_base_url: str, folder: Path
                  ) -> subprocess.Popen[bytes]:
    """The proxy on 127.0.0.1:`port`, answering `gpt-4o` from `upstream_base_url`."""
    config = folder / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o\n"
        f"      api_base: {upstream_base_url}\n"
        "      api_key: sk-bench\n")
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "LITELLM_MASTER_KEY")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR",
               VIRTUAL_ENV=str(exe.parent.parent))
    log = (folder / "litellm.log").open("wb")
    return subprocess.Popen([str(exe), "--config", str(config), "--host", "127.0.0.1",
                             "--port", str(port), "--num_workers", "1", "--telemetry", "False"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
