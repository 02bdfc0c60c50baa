"""The closed loop, end to end over real loopback sockets: serve, log, feed back, retrain.

`Simulation` replays an outcome table (every model's recorded quality per prompt,
e.g. `../shared/data/arena_bench_v1.csv.gz`) as live traffic:

1. The table's prompts are split once (seeded) into a fixed **held-out part**
   (`eval_frac`, never sent as traffic, never trained on) and a **traffic pool**.
2. An **initial router** is trained on `initial_frac` of the pool prompts (all
   models' outcomes for them: a small offline benchmark), registered and promoted
   in a registry in the work folder. A **full-data router**, trained on every pool
   prompt's full outcomes, is the target the loop should move towards.
3. The fake provider (`router.fake`) answers from the table: each answer
   carries the recorded quality of (prompt, model) in `router_quality`. The router
   app (`router.app.create_app`) runs on its own socket with an SQLite outcome log,
   exploration on, the fake as upstream, the work-folder registry as model source
   and hot reload on.
4. Each **round** sends `requests_per_round` chat requests (`model: "router"` or
   `router:<bar>`) for pool prompts through the router with httpx, reads the
   served model and the recorded quality from each answer, posts that quality to
   `/v1/feedback`, flushes the log, then runs `training.retrain.retrain` on the
   log plus the initial table, gated on the held-out part. A promoted challenger
   is waited for until the server reports it (hot reload).

Each round reports the model that served it (`model_version`), whether the
retrain at the end of the round promoted a new one (`promoted`), the served
traffic's mean quality and cost (`quality`, `cost_usd`, priced as the router
prices it: catalog prices x the answer's token usage) and that model's AIQ on the
held-out part (`aiq`, `training.evaluate.report_from_predictions`). Note the
gate also judges challengers on the held-out part, so a promoted model is never
much worse there by construction; the served quality and cost are measured on
traffic the gate never saw.

Drift: `degrade(model, amount)` lowers a model's recorded quality in the running
fake (`/_control`) and in the held-out part (the world changed; the offline
initial table did not), so the next retrain sees the drop in its feedback.

Latency: `router simulate --latency-incident` runs, instead of the rounds, a
model made slow mid-run under a latency limit, served by the initial router
without a retrain (`training.simulate_latency`).

The pieces live in their own modules: `training.simulate_config` (the options),
`training.simulate_data` (the split and the held-out scorer),
`training.simulate_traffic` (the servers and the requests sent to them),
`training.simulate_results` (what a run gives back and its table),
`training.simulate_plot` (the figure). This module is the loop itself;
every name it used to define is still importable from here.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.catalog import Catalog
from router.errors import ConfigError, RouterError
from router.registry import Registry
from training.data import write_outcomes
from training.simulate_config import SimulationConfig
from training.simulate_data import HeldOut, split_table
from training.simulate_latency import LatencyIncident, incident_limit, run_incident
from training.simulate_results import RoundResult, SimulationResult, format_result
from training.simulate_traffic import Traffic, catalog_toml, start_servers

__all__ = [
    "SimulationConfig",
    "RoundResult",
    "SimulationResult",
    "Simulation",
    "simulate",
    "format_result",
    "catalog_toml",
    "LatencyIncident",
]

log = logging.getLogger(__name__)


class Simulation:
    """The running loop: `with Simulation(...) as sim: sim.run_round()`.

    Entering splits the table, trains and promotes the initial router, trains the
    full-data reference and starts the fake provider and the router; leaving
    stops both servers (the router flushes its log). The work folder keeps
    everything: `outcomes.parquet` (what the fake answers from), `eval.parquet`,
    `initial.parquet`, `catalog.toml`, `outcomes.db` (the log), `models/` (the
    registry).
    """

    def __init__(self, table: pd.DataFrame, *, catalog: Catalog, workdir: str | Path,
                 config: SimulationConfig | None = None,
                 echo: Callable[[str], None] | None = None, progress: bool = False) -> None:
        self.table = table
        self.catalog = catalog
        self.workdir = Path(workdir).resolve()
        self.config = config or SimulationConfig()
        self.echo = echo or (lambda _text: None)
        self.progress = progress
        self.rounds: list[RoundResult] = []
        self.degradation: dict[str, float] = {}
        self._stack = ExitStack()
        self._round_started: list[float] = []
        self._aiq_cache: dict[tuple[str, str], float] = {}
        self._mismatched = 0
        self.incident: LatencyIncident | None = None

    # -- set-up -----------------------------------------------------------------------

    def __enter__(self) -> Simulation:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        cfg = self.config
        cfg.validate()
        self._check_workdir()
        self.max_latency_ms = (incident_limit(self.table, self.config)
                               if self.config.latency_incident else None)
        self._split()
        self.models = sorted(self.table["model"].astype(str).unique())
        missing = [m for m in self.models if m not in self.catalog]
        if missing:
            raise ConfigError(f"no price for model(s) {', '.join(missing)}: the simulated "
                              "router needs one to route and to price answers",
                              hint="pass --prices with a prices.csv listing them, e.g. "
                                   "../shared/data/prices.csv")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.outcomes_path = write_outcomes(self.table, self.workdir / "outcomes.parquet")
        self.initial_path = write_outcomes(self.initial_table, self.workdir / "initial.parquet")
        write_outcomes(self.eval_table, self.workdir / "eval.parquet")
        self.catalog_path = self.workdir / "catalog.toml"
        self.catalog_path.write_text(catalog_toml(self.catalog, self.models), encoding="utf-8")
        self.registry = Registry(self.workdir / "models")
        self.log_url = f"sqlite:///{self.workdir / 'outcomes.db'}"
        self._truth = {(p, m): float(q) for p, m, q in zip(
            self.table["prompt_id"].astype(str), self.table["model"].astype(str),
            self.table["quality"], strict=True)}

        self.echo(f"split: {self.n_eval} held-out prompts, {len(self.pool_ids)} traffic "
                  f"prompts, initial router trained on {len(self.initial_ids)} of them")
        initial = self._fit(self.initial_table, cfg.seed)
        staging = self.workdir / "initial_model"
        initial.save(staging)
        version = self.registry.add(staging, move=True,
                                    extra_meta={"simulation": "initial router"})
        self.registry.promote(version, reason=f"router simulate: initial router on "
                                               f"{len(self.initial_ids)} prompts")
        self.held_out = HeldOut(self.eval_table)
        self.initial_aiq = self.aiq_of(version)
        self.echo(f"initial router {version}: AIQ {self.initial_aiq:.4f} on the held-out part")
        full = self._fit(self.pool_table, cfg.seed)
        full_report = self.held_out.report(full)
        self.full_data_aiq = float(full_report.aiq)
        self.zero_router_aiq = float(full_report.zero_router_aiq)
        self.oracle_quality = float(full_report.oracle["quality"])
        self.full_data_quality, self.full_data_cost = self.held_out.at_bar(full, cfg.bar)
        self.echo(f"full-data router (all {len(self.pool_ids)} traffic prompts): AIQ "
                  f"{self.full_data_aiq:.4f}; Zero router {self.zero_router_aiq:.4f}")
        self._start_servers()

    def _check_workdir(self) -> None:
        if self.workdir.exists() and not self.workdir.is_dir():
            raise ConfigError(f"--workdir {self.workdir} is a file",
                              hint="pass a new or empty folder")
        if self.workdir.is_dir() and any(self.workdir.iterdir()):
            raise ConfigError(f"--workdir {self.workdir} is not empty: an earlier run's log "
                              "and registry would leak into this one",
                              hint="pass a new or empty folder (or omit --workdir for a "
                                   "temporary one)")

    def _split(self) -> None:
        cfg = self.config
        split = split_table(self.table, eval_frac=cfg.eval_frac, initial_frac=cfg.initial_frac,
                            seed=cfg.seed, echo=self.echo)
        self.table = split.table
        self.n_eval = split.n_eval
        self.pool_ids = split.pool_ids
        self.initial_ids = split.initial_ids
        self.eval_table = split.eval_table
        self._eval_original = self.eval_table.copy()
        self.pool_table = split.pool_table
        self.initial_table = split.initial_table
        self._messages = split.messages

    def _fit(self, table: pd.DataFrame, seed: int) -> Any:
        from router.predictor import QualityModel

        # 10% of prompts held out, as `router retrain` does, so every model here is
        # trained the same way and its meta.json carries held-out metrics.
        return QualityModel(**dict(self.config.model_options)).fit(
            table, catalog=self.catalog, seed=seed, holdout_frac=0.1, progress=False)

    def _start_servers(self) -> None:
        cfg = self.config
        incident = cfg.latency_incident
        servers = start_servers(
            self._stack, outcomes_path=self.outcomes_path, catalog_path=self.catalog_path,
            registry_root=self.registry.root, log_url=self.log_url,
            exploration=cfg.exploration, seed=cfg.seed,
            latency_scale=cfg.latency_scale if incident else None,
            max_latency_ms=self.max_latency_ms if incident else None)
        self.fake_url = servers.fake_url
        self.app = servers.app
        self.router_url = servers.router_url
        self.client = servers.client
        self.traffic = Traffic(self.client, catalog=self.catalog, messages=self._messages,
                               pool_ids=self.pool_ids, bar=cfg.bar, seed=cfg.seed)
        self.echo(f"fake provider on {self.fake_url}, router on {self.router_url}")
        self._wait_for(self.registry.current_version())

    def close(self) -> None:
        self._stack.close()

    # -- the loop ---------------------------------------------------------------------

    @property
    def serving_version(self) -> str:
        """The model version the running router reports on `/readyz`."""
        return self.traffic.serving_version()

    def _wait_for(self, version: str | None) -> None:
        self.traffic.wait_for(version, registry_root=self.registry.root)

    def send(self, prompt_id: str) -> tuple[str, float, float, str]:
        """One chat request plus its feedback: (served model, quality, cost USD, request id)."""
        return self.traffic.send(prompt_id)

    def _expected(self, prompt_id: str, model: str) -> float | None:
        recorded = self._truth.get((prompt_id, model))
        if recorded is None:
            return None
        return min(1.0, max(0.0, recorded - self.degradation.get(model, 0.0)))

    def run_round(self) -> RoundResult:
        """Send one round of traffic with feedback, then retrain, gate and maybe promote."""
        number = len(self.rounds) + 1
        started = time.monotonic()
        self._round_started.append(time.time())
        version = self.serving_version
        served, qualities, costs = self._send_round(number)
        if not self.app.state.ctx.store.flush_sync(timeout=60):
            raise RouterError("the router's outcome log did not flush within 60 s")
        explored = self._explored_in_round(number)
        result = self._retrain(number)
        if result.promoted:
            self._wait_for(result.version_id)
        counts = Counter(served)
        outcome = RoundResult(
            round=number, model_version=version, promoted=bool(result.promoted),
            requests=len(served), quality=float(np.mean(qualities)),
            cost_usd=float(np.mean(costs)), aiq=self.aiq_of(version),
            challenger=result.version_id,
            challenger_aiq=self.aiq_of(result.version_id) if result.version_id else None,
            gate_reason=getattr(result.gate, "reason", "") or "", explored=explored,
            shares={m: counts[m] / len(served) for m in sorted(counts)},
            mismatched=self._mismatched, seconds=time.monotonic() - started)
        self.rounds.append(outcome)
        verdict = (f"promoted {result.version_id}" if result.promoted
                   else f"refused the challenger, {version} keeps serving "
                        f"({outcome.gate_reason})")
        self.echo(f"round {number}: {outcome.requests} requests served by {version}: quality "
                  f"{outcome.quality:.4f}, ${outcome.cost_usd:.6f}/request, AIQ "
                  f"{outcome.aiq:.4f}; retrain {verdict}")
        return outcome

    def _send_round(self, number: int) -> tuple[list[str], list[float], list[float]]:
        """The round's traffic: (served model, quality, cost) per request; counts the
        answers whose quality is not the table's in `_mismatched`."""
        from tqdm import tqdm

        cfg = self.config
        served: list[str] = []
        qualities: list[float] = []
        costs: list[float] = []
        self._mismatched = 0
        bar = tqdm(total=cfg.requests_per_round, desc=f"round {number}/{cfg.rounds}",
                   unit="req", leave=False, disable=not (self.progress and sys.stderr.isatty()))
        try:
            for _ in range(cfg.requests_per_round):
                prompt_id = self.traffic.next_prompt()
                model, quality, cost, _rid = self.send(prompt_id)
                expected = self._expected(prompt_id, model)
                if expected is not None and abs(expected - quality) > 1e-9:
                    self._mismatched += 1
                served.append(model)
                qualities.append(quality)
                costs.append(cost)
                bar.update()
        finally:
            bar.close()
        if self._mismatched:
            log.warning("round %d: %d answers did not carry the table's quality", number,
                        self._mismatched)
        return served, qualities, costs

    def _retrain(self, number: int) -> Any:
        """`training.retrain.retrain` on the log (window) plus the initial table."""
        from training.retrain import RetrainSettings, retrain

        cfg = self.config
        now = datetime.now(UTC)
        since = None
        if cfg.window_rounds is not None:
            first = self._round_started[max(0, len(self._round_started) - cfg.window_rounds)]
            since = timedelta(seconds=now.timestamp() - first + 1.0)
        lines: list[str] = []
        settings = RetrainSettings(
            log_url=self.log_url, since=since, base=(self.initial_path,),
            eval_data=self.eval_table, tolerance=cfg.tolerance, seed=cfg.seed + number)
        result = retrain(
            settings, registry=self.registry, catalog=self.catalog, now=now,
            fit=lambda table, _catalog, seed: self._fit(table, seed), echo=lines.append)
        for line in lines:
            log.debug("retrain: %s", line)
        return result

    def run_latency_incident(self) -> LatencyIncident:
        """The latency incident (`training.simulate_latency`), on the serving model."""
        cfg = self.config
        self.incident = run_incident(
            self.traffic, self.fake_url, model=cfg.slow_model, slowdown=cfg.slowdown,
            max_latency_ms=float(self.max_latency_ms or 0.0), latency_scale=cfg.latency_scale,
            requests=cfg.incident_requests)
        self.echo(self.incident.summary())
        return self.incident

    def _explored_in_round(self, number: int) -> int:
        from router.outcome_log import open_outcome_log

        since = self._round_started[number - 1]
        frame = open_outcome_log(self.log_url).export_dataframe(since=since)
        if "explored" not in frame:
            return 0
        return int(frame["explored"].fillna(False).astype(bool).sum())

    def aiq_of(self, version: str) -> float:
        """AIQ of a registered version on the held-out part (as degraded so far)."""
        from router.predictor import QualityModel

        key = (version, json.dumps(self.degradation, sort_keys=True))
        if key not in self._aiq_cache:
            model = QualityModel.load(self.registry.path_of(version))
            self._aiq_cache[key] = float(self.held_out.report(model).aiq)
        return self._aiq_cache[key]

    # -- drift and inspection ---------------------------------------------------------

    def degrade(self, model: str, amount: float) -> None:
        """From now on `model`'s answers score `amount` lower (clipped to [0, 1]).

        Set in the running fake through `POST /_control` and applied to the
        held-out part, which describes the world as it is now.
        """
        import httpx

        if model not in self.models:
            raise ConfigError(f"cannot degrade {model!r}: not a model of the table",
                              hint="models: " + ", ".join(self.models))
        if not 0 <= amount <= 1:
            raise ConfigError(f"degradation must be in [0, 1], got {amount!r}")
        response = httpx.post(f"{self.fake_url}/_control",
                              json={"model": model, "degradation": amount}, trust_env=False)
        if response.status_code != 200:
            raise RouterError(f"the fake provider refused the degradation: {response.text}")
        self.degradation[model] = amount
        table = self._eval_original.copy()
        for name, drop in self.degradation.items():
            rows = table["model"].astype(str) == name
            table.loc[rows, "quality"] = (table.loc[rows, "quality"] - drop).clip(0.0, 1.0)
        self.eval_table = table
        self.held_out = HeldOut(table)

    def route_shares(self, prompt_ids: Sequence[str] | None = None) -> dict[str, float]:
        """Share of `prompt_ids` (default: every traffic prompt) per model by `/v1/route`.

        `/v1/route` never explores, so the same prompts under the same model
        always give the same shares: a clean before/after comparison.
        """
        ids = list(prompt_ids) if prompt_ids is not None else list(self.pool_ids)
        return self.traffic.route_shares(ids, self.models)

    def result(self) -> SimulationResult:
        final = self.registry.current_version() or ""
        return SimulationResult(
            rounds=list(self.rounds), full_data_aiq=self.full_data_aiq,
            initial_aiq=self.initial_aiq, final_version=final,
            final_aiq=self.aiq_of(final) if final else math.nan,
            zero_router_aiq=self.zero_router_aiq, oracle_quality=self.oracle_quality,
            full_data_quality=self.full_data_quality, full_data_cost_usd=self.full_data_cost,
            n_eval_prompts=len(self.held_out.convs), n_pool_prompts=len(self.pool_ids),
            n_initial_prompts=len(self.initial_ids), models=list(self.models),
            workdir=str(self.workdir), latency_incident=self.incident)


def simulate(table: pd.DataFrame, *, catalog: Catalog, workdir: str | Path,
             config: SimulationConfig | None = None,
             echo: Callable[[str], None] | None = None,
             progress: bool = False) -> SimulationResult:
    """Run `config.rounds` rounds of the loop on `table` (from `load_outcomes`), or
    with `config.latency_incident` the latency incident instead."""
    sim = Simulation(table, catalog=catalog, workdir=workdir, config=config, echo=echo,
                     progress=progress)
    with sim:
        if sim.config.latency_incident:
            sim.run_latency_incident()
        else:
            for _ in range(sim.config.rounds):
                sim.run_round()
        return sim.result()


