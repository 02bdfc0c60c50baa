"""The sockets of `router simulate`: start the fake provider and the router, send traffic.

`start_servers` is step 3 of the loop described in `training.simulate` (the fake
answers from the table, the router in front of it logs, explores and hot-reloads);
`Traffic` is the simulated users of step 4: chat requests for pool prompts, each
followed by its feedback, and `/v1/route` questions, which never explore.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.catalog import Catalog
from router.errors import RouterError

__all__ = ["READY_TIMEOUT_S", "Servers", "Traffic", "catalog_toml", "start_servers"]

READY_TIMEOUT_S = 60.0


def catalog_toml(catalog: Catalog, models: Sequence[str]) -> str:
    """A catalog TOML with `models` only, no providers and no fallbacks.

    The simulated router calls everything through the fake's base URL, and a
    fallback to a model the table has no outcome for would answer made-up quality.
    """
    lines = ["# written by `router simulate`: the table's models and their prices"]
    for name in models:
        spec = catalog[name]
        lines += ["", f"[models.{json.dumps(name)}]",
                  f"input_usd_per_mtok = {float(spec.input_usd_per_mtok)!r}",
                  f"output_usd_per_mtok = {float(spec.output_usd_per_mtok)!r}",
                  f"context_tokens = {int(spec.context_tokens)}"]
    return "\n".join(lines) + "\n"


@dataclass
class Servers:
    """The two running servers and an HTTP client of the router."""

    fake_url: str
    app: Any
    router_url: str
    client: Any


def start_servers(stack: ExitStack, *, outcomes_path: Path, catalog_path: Path,
                  registry_root: Path, log_url: str, exploration: float, seed: int,
                  latency_scale: float | None = None,
                  max_latency_ms: float | None = None) -> Servers:
    """Start the fake provider, then the router in front of it; `stack` stops both.

    `latency_scale`: the fake answers after the table's recorded latencies times
    it (None: at once); `max_latency_ms`: the router's default latency limit."""
    import httpx

    from router.app import create_app
    from router.fake import create_fake_upstream, serve_in_thread
    from router.settings import Settings

    fake = create_fake_upstream(outcomes=outcomes_path, seed=seed, latency_scale=latency_scale)
    fake_url = stack.enter_context(serve_in_thread(fake, lifespan="off", name="fake-upstream"))
    # Settings given explicitly (not `load_settings`) so no ROUTER_* variable of
    # the caller's shell (keys, a model folder, a Redis cache) changes the run.
    settings = Settings(
        model_dir=None, registry_dir=registry_root, catalog=catalog_path,
        upstream_base_url=f"{fake_url}/v1", default_quality_bar=None,
        exploration=exploration, exploration_seed=seed, api_keys=[],
        log_url=log_url, log_flush_interval_s=0.05, cache_url=None,
        cache_ttl_s=0.0, semantic_cache=False, privacy_mode=False, max_retries=0,
        backoff_s=0.0, reload_interval_s=0.05, max_latency_ms=max_latency_ms)
    app = create_app(settings, reload=True)
    router_url = stack.enter_context(serve_in_thread(app, lifespan="on", name="router"))
    client = stack.enter_context(
        httpx.Client(base_url=router_url, timeout=60.0, trust_env=False))
    return Servers(fake_url=fake_url, app=app, router_url=router_url, client=client)


class Traffic:
    """Requests for the pool's prompts, as the simulated users send them.

    Every request names the same bar (`bar`, None: each version's own default),
    so rounds served by different versions compare.
    """

    def __init__(self, client: Any, *, catalog: Catalog, messages: dict[str, Any],
                 pool_ids: Sequence[str], bar: float | None, seed: int) -> None:
        self.client = client
        self.catalog = catalog
        self.messages = messages
        self.pool_ids = list(pool_ids)
        self.bar = bar
        self._rng = random.Random(seed)
        self._queue: list[str] = []

    def serving_version(self) -> str:
        """The model version the running router reports on `/readyz`."""
        response = self.client.get("/readyz")
        return str(response.json().get("model_version"))

    def wait_for(self, version: str | None, *, registry_root: Path) -> None:
        """Wait until the router serves `version` (hot reload polls the registry)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            response = self.client.get("/readyz")
            if response.status_code == 200 and response.json().get("model_version") == version:
                return
            if time.monotonic() > deadline:
                raise RouterError(f"the router did not switch to model {version} within "
                                  f"{READY_TIMEOUT_S:.0f} s (it reports "
                                  f"{response.json().get('model_version')})",
                                  hint=f"check the registry at {registry_root}")
            time.sleep(0.05)

    def next_prompt(self) -> str:
        if not self._queue:
            # Each pass over the pool is a fresh shuffle: every prompt is asked as often.
            self._queue = list(self.pool_ids)
            self._rng.shuffle(self._queue)
        return self._queue.pop()

    def model_name(self) -> str:
        bar = self.bar
        return "router" if bar is None else f"router:{bar:g}"

    def send(self, prompt_id: str) -> tuple[str, float, float, str]:
        """One chat request plus its feedback: (served model, quality, cost USD, request id)."""
        messages = self.messages[prompt_id]
        response = self.client.post("/v1/chat/completions",
                                    json={"model": self.model_name(), "messages": messages})
        if response.status_code != 200:
            raise RouterError(f"the router answered {response.status_code} for prompt "
                              f"{prompt_id!r}: {response.text[:300]}",
                              hint="run with --debug and look at the router's log lines")
        served = response.headers["x-router-model"]
        request_id = response.headers["x-request-id"]
        body = response.json()
        quality = float(body["router_quality"])
        usage = body.get("usage") or {}
        cost = self.catalog[served].cost_usd(float(usage.get("prompt_tokens", 0)),
                                             float(usage.get("completion_tokens", 0)))
        feedback = self.client.post("/v1/feedback",
                                    json={"request_id": request_id, "quality": quality})
        if feedback.status_code != 202:
            raise RouterError(f"feedback for request {request_id} answered "
                              f"{feedback.status_code}: {feedback.text[:300]}")
        return served, quality, cost, request_id

    def route_shares(self, prompt_ids: Sequence[str], models: Sequence[str]
                     ) -> dict[str, float]:
        """Share of `prompt_ids` per model (every one of `models`) by `/v1/route`.

        `/v1/route` never explores, so the same prompts under the same model
        always give the same shares: a clean before/after comparison.
        """
        ids = list(prompt_ids)
        counts: Counter[str] = Counter()
        for prompt_id in ids:
            payload: dict[str, Any] = {"messages": self.messages[prompt_id]}
            if self.bar is not None:
                payload["quality_bar"] = self.bar
            response = self.client.post("/v1/route", json=payload)
            if response.status_code != 200:
                raise RouterError(f"/v1/route answered {response.status_code}: "
                                  f"{response.text[:300]}")
            counts[response.json()["model"]] += 1
        return {m: counts[m] / len(ids) for m in models}
