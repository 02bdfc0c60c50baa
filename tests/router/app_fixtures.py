"""Fixtures for the serving-app tests: a router on a real loopback socket.

Import the fixtures you use into the test module (`from tests.router.app_fixtures
import router_factory, ...`). `tests/router/conftest.py` (the fake upstream) is
owned by the upstream tests; this module builds on its `fake_upstream_server`.

- `StubModel`: a deterministic stand-in for `QualityModel` (quality falls with
  prompt length, rises with price), so decisions are predictable and fast.
- `run_router(app)`: uvicorn with the lifespan on, in a thread, on a free port.
- `router_factory(**settings)`: builds `Settings` (log in tmp_path, the fake
  upstream as base URL, no exploration, reload every 50 ms) and serves the app;
  returns a `RouterServer` with `.url`, `.app`, `.ctx` and an httpx client.
- `tiny_artifact`: a real `QualityModel` trained once per session on a small
  synthetic table and saved, for hot-reload tests.
- `post_both(client, path, body)`: the same body sent with a Content-Length and
  chunked (which the body limit reads itself and hands on): both must be answered
  alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from router.app import create_app
from router.catalog import DEFAULT_CATALOG_PATH, load_catalog
from router.conversation import Conversation
from router.fake import serve_in_thread
from router.policy import BarCalibration
from router.settings import load_settings

__all__ = [
    "StubModel",
    "StubPrediction",
    "RouterServer",
    "run_router",
    "router_factory",
    "tiny_artifact",
    "STUB_MODELS",
    "post_both",
]

STUB_MODELS = ("glm-4-plus", "deepseek-v4-flash", "deepseek-v4-pro", "gpt-4o")


@dataclass
class StubPrediction:
    models: list[str]
    quality: np.ndarray
    output_tokens: np.ndarray
    cost_usd: np.ndarray
    latency_ms: np.ndarray | None = None


@dataclass
class StubModel:
    """Quality of model i is `base[i] - 0.001 * len(last user message)`, clipped.

    `latency` (ms per model, in `models` order) makes it predict latency, the same
    for every conversation; without it the model predicts none, like an artifact
    trained on outcomes without a latency column.
    """

    version: str = "stub-1"
    models: Sequence[str] = STUB_MODELS
    base: Sequence[float] = (0.55, 0.7, 0.85, 0.95)
    default_bar: float = 0.8
    latency: Sequence[float] | None = None
    metadata: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.catalog = load_catalog(DEFAULT_CATALOG_PATH)
        self.metadata = {"version_id": self.version, "default_bar": self.default_bar,
                         "models": list(self.models), "feature_schema_version": 1}
        # Calibrated on prompts of many lengths, as training calibrates on held-out ones.
        probes = [Conversation.from_prompt("x" * n) for n in range(0, 50, 5)]
        pred = StubModel.predict(self, probes)  # not counted by subclasses that count
        self.metadata["bar_calibration"] = BarCalibration.fit(
            pred.quality, pred.cost_usd, source="stub probes").to_dict()

    def predict(self, conversations: Sequence[Conversation],
                models: Sequence[str] | None = None) -> StubPrediction:
        names = list(models or self.models)
        n, m = len(conversations), len(names)
        quality = np.zeros((n, m))
        cost = np.zeros((n, m))
        out = np.full((n, m), 100.0)
        for i, conv in enumerate(conversations):
            for j, name in enumerate(names):
                base = self.base[list(self.models).index(name)]
                quality[i, j] = min(1.0, max(0.0, base - 0.001 * len(conv.last_user)))
                cost[i, j] = self.catalog[name].cost_usd(conv.input_tokens, 100)
        latency = None
        if self.latency is not None:
            latency = np.tile([self.latency[list(self.models).index(name)] for name in names],
                              (n, 1)).astype(np.float64)
        return StubPrediction(names, quality, out, cost, latency)


@contextmanager
def run_router(app: FastAPI) -> Iterator[str]:
    """Serve `app` (lifespan on) in a thread on a free loopback port; yields the base URL."""
    with serve_in_thread(app, lifespan="on", name="router") as url:
        yield url


@dataclass
class RouterServer:
    url: str
    app: FastAPI
    client: httpx.Client

    @property
    def ctx(self) -> Any:
        return self.app.state.ctx

    def flush_log(self) -> None:
        assert self.ctx.store.flush_sync(timeout=10)


@pytest.fixture
def router_factory(tmp_path: Path, fake_upstream_server: tuple[str, Any]
                   ) -> Iterator[Callable[..., RouterServer]]:
    """Start routers: `router_factory(model=StubModel(), api_keys="...", ...)`.

    Keyword arguments are `Settings` options, plus `model=`, `store=`, `cache=`
    passed to `create_app`. Defaults: the fake upstream, an SQLite log in
    tmp_path, exploration 0, fast cooldowns, no retries backoff.
    """
    base_url, _control = fake_upstream_server
    managers: list[Any] = []

    def start(**options: Any) -> RouterServer:
        inject = {k: options.pop(k) for k in ("model", "store", "cache", "upstream")
                  if k in options}
        if "model" not in inject and "model_dir" not in options and \
                "registry_dir" not in options:
            from tests.router.app_fixtures import StubModel as _Stub

            inject["model"] = _Stub()
        defaults = {"upstream_base_url": base_url,
                    "log_url": str(tmp_path / f"outcomes{len(managers)}.db"),
                    "log_flush_interval_s": 0.02, "exploration": 0.0, "backoff_s": 0.0,
                    "reload_interval_s": 0.05, "exploration_seed": 7}
        settings = load_settings(**{**defaults, **options})
        app = create_app(settings, **inject)
        manager = run_router(app)
        url = manager.__enter__()
        managers.append(manager)
        client = httpx.Client(base_url=url, timeout=30)
        managers.append(_Closer(client))
        return RouterServer(url, app, client)

    yield start
    for manager in reversed(managers):
        manager.__exit__(None, None, None)


class _Closer:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def __exit__(self, *exc: object) -> None:
        self.client.close()


def _synthetic_table(n_prompts: int = 80, seed: int = 0) -> Any:
    import json

    import pandas as pd

    catalog = load_catalog(DEFAULT_CATALOG_PATH)
    rng = np.random.default_rng(seed)
    topics = ["prove the theorem about primes", "write a haiku about rain",
              "translate this sentence to French", "fix the bug in this python function",
              "summarise the article in two lines", "classify the sentiment of the review"]
    rows = []
    for i in range(n_prompts):
        prompt = f"{topics[i % len(topics)]} number {i} " + "detail " * int(rng.integers(0, 30))
        hard = (i % len(topics)) in (0, 3)
        for j, model in enumerate(STUB_MODELS):
            p = 0.35 + 0.15 * j - (0.25 if hard else 0.0)
            quality = float(rng.random() < p)
            out_tokens = float(50 + 20 * j + rng.integers(0, 20))
            rows.append({
                "prompt_id": f"p{i}", "messages": json.dumps([{"role": "user",
                                                               "content": prompt}]),
                "model": model, "quality": quality,
                "input_tokens": float(len(prompt) // 4 + 4), "output_tokens": out_tokens,
                "cost_usd": catalog[model].cost_usd(len(prompt) // 4 + 4, out_tokens),
                "weight": 1.0,
            })
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `QualityModel` trained once per session on a small synthetic table."""
    from router.predictor import QualityModel

    out = tmp_path_factory.mktemp("tiny-model") / "artifact"
    model = QualityModel(num_boost_round=20, n_components=8, min_valid_prompts=10_000,
                         params={"num_leaves": 7, "min_data_in_leaf": 5})
    model.fit(_synthetic_table(), catalog=load_catalog(DEFAULT_CATALOG_PATH))
    model.save(out)
    return out


def post_both(client: httpx.Client, path: str, body: Any
              ) -> tuple[httpx.Response, httpx.Response]:
    """(response to the body sent with a Content-Length, response to it sent chunked).

    A chunked body (no Content-Length) is read by the body limit middleware, up to
    the limit, and handed on to the endpoint.
    """
    data = json.dumps(body).encode()

    def chunks() -> Iterator[bytes]:
        yield data

    lean = client.post(path, content=data, headers={"content-type": "application/json"})
    full = client.post(path, content=chunks(), headers={"content-type": "application/json"})
    return lean, full


def wait_until_ready(url: str, proc: Any, timeout_s: float = 30.0) -> None:
    """Wait for a `router serve` subprocess at `url` to answer /readyz with 200; fail
    with its output if it exits first or takes longer than `timeout_s`."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"router serve exited ({proc.returncode}): {out}")
        assert time.monotonic() < deadline, "router serve did not become ready"
        time.sleep(0.1)


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    """True as soon as `predicate()` is, polling every 50 ms; False after `timeout` s."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
