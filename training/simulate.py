"""The closed loop, end to end over real loopback sockets: serve, log, feed back, retrain.

`Simulation` replays an outcome table (every model's recorded quality per prompt,
e.g. `../shared/data/arena_bench_v1.csv.gz`) as live traffic:

1. The table's prompts are split once (seeded) into a fixed **held-out part**
   (`eval_frac`, never sent as traffic, never trained on) and a **traffic pool**.
2. An **initial router** is trained on `initial_frac` of the pool prompts (all
   models' outcomes for them: a small offline benchmark), registered and promoted
   in a registry in the work folder. A **full-data router**, trained on every pool
   prompt's full outcomes, is the target the loop should move towards.
3. The fake provider (`router.fake_upstream`) answers from the table: each answer
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
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.catalog import Catalog
from router.errors import ConfigError, DataError, RouterError
from router.registry import Registry
from training.data import conversations, write_outcomes
from training.evaluate import outcome_matrices, report_from_predictions

__all__ = [
    "SimulationConfig",
    "RoundResult",
    "SimulationResult",
    "Simulation",
    "simulate",
    "format_result",
    "catalog_toml",
]

log = logging.getLogger(__name__)

_MIN_PROMPTS = 10
_READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SimulationConfig:
    """How the loop runs; see the module docstring.

    `bar` is the quality bar of every request (`model: "router:<bar>"`), fixed so
    rounds served by different versions compare; None sends `model: "router"`
    (each version's own default bar). `tolerance` is the gate's. `window_rounds` limits each
    retrain to the log of the last N rounds (None: the whole log). `model_options`
    are `QualityModel` keyword arguments for every model trained here (e.g.
    smaller `n_components` for quick tests).
    """

    rounds: int = 5
    requests_per_round: int = 200
    initial_frac: float = 0.1
    eval_frac: float = 0.2
    exploration: float = 0.1
    seed: int = 0
    bar: float | None = 0.7
    tolerance: float = 0.01
    window_rounds: int | None = None
    model_options: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """`ConfigError` naming the option for any value outside its range."""
        checks = [
            (self.rounds >= 1, "--rounds", self.rounds, "at least 1"),
            (self.requests_per_round >= 1, "--requests-per-round", self.requests_per_round,
             "at least 1"),
            (0 < self.initial_frac < 1, "--initial-frac", self.initial_frac,
             "a share in (0, 1), e.g. 0.1"),
            (0 < self.eval_frac < 1, "--eval-frac", self.eval_frac,
             "a share in (0, 1), e.g. 0.2"),
            (0 <= self.exploration <= 0.5, "--exploration", self.exploration,
             "a share of traffic in [0, 0.5], e.g. 0.1"),
            (self.bar is None or 0 <= self.bar <= 1, "--bar", self.bar, "a number in [0, 1]"),
            (self.tolerance >= 0, "--tolerance", self.tolerance, ">= 0"),
            (self.window_rounds is None or self.window_rounds >= 1, "window_rounds",
             self.window_rounds, "at least 1"),
        ]
        for ok, name, value, wanted in checks:
            if not ok:
                raise ConfigError(f"{name} must be {wanted}, got {value!r}")


@dataclass
class RoundResult:
    """One round of traffic and the retrain after it.

    `model_version` served the round; `promoted` says whether the retrain at the
    end of the round replaced it (by `challenger`). `quality` and `cost_usd` are
    means over the served requests; `aiq` is `model_version`'s AIQ on the held-out
    part. `shares` is the served traffic per model; `mismatched` counts answers
    whose quality differed from the table's (should be 0).
    """

    round: int
    model_version: str
    promoted: bool
    requests: int
    quality: float
    cost_usd: float
    aiq: float
    challenger: str | None = None
    challenger_aiq: float | None = None
    gate_reason: str = ""
    explored: int = 0
    shares: dict[str, float] = field(default_factory=dict)
    mismatched: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Exactly the keys `router simulate --json` prints per round."""
        return {"round": self.round, "model_version": self.model_version,
                "promoted": self.promoted, "requests": self.requests,
                "quality": self.quality, "cost_usd": self.cost_usd, "aiq": self.aiq}


@dataclass
class SimulationResult:
    """Every round plus the reference points the rounds are read against."""

    rounds: list[RoundResult]
    full_data_aiq: float
    initial_aiq: float
    final_version: str
    final_aiq: float
    zero_router_aiq: float
    oracle_quality: float
    full_data_quality: float
    full_data_cost_usd: float
    n_eval_prompts: int
    n_pool_prompts: int
    n_initial_prompts: int
    models: list[str]
    workdir: str

    def to_json(self) -> dict[str, Any]:
        """`{"rounds": [...], "full_data_aiq": x}`: what `router simulate --json` prints."""
        return {"rounds": [r.summary() for r in self.rounds],
                "full_data_aiq": self.full_data_aiq}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


class _HeldOut:
    """The held-out part as matrices, ready to score any model's AIQ on it."""

    def __init__(self, table: pd.DataFrame) -> None:
        ids, convs = conversations(table)
        self.models = sorted(table["model"].astype(str).unique())
        quality, cost = outcome_matrices(table, self.models, ids)
        complete = np.isfinite(quality).all(axis=1) & np.isfinite(cost).all(axis=1)
        if complete.sum() < 2:
            raise DataError(f"only {int(complete.sum())} held-out prompts have every model's "
                            "outcome; AIQ needs full information",
                            hint="use a table where each prompt is answered by every model, "
                                 "or raise --eval-frac")
        self.convs = [c for c, ok in zip(convs, complete, strict=True) if ok]
        self.quality, self.cost = quality[complete], cost[complete]

    def at_bar(self, model: Any, bar: float | None) -> tuple[float, float]:
        """Mean realised (quality, cost) of `model`'s decisions at `bar` (None: its default)."""
        from router.policy import choose
        from router.service import FALLBACK_DEFAULT_BAR

        if bar is None:
            bar = (getattr(model, "metadata", None) or {}).get("default_bar")
            bar = FALLBACK_DEFAULT_BAR if bar is None else float(bar)
        pred = model.predict(self.convs)
        names = [str(m) for m in pred.models]
        use = [m for m in self.models if m in names]
        data_cols = [self.models.index(m) for m in use]
        pred_cols = [names.index(m) for m in use]
        pick = choose(np.asarray(pred.quality, dtype=np.float64)[:, pred_cols],
                      np.asarray(pred.cost_usd, dtype=np.float64)[:, pred_cols], bar=bar)
        rows = np.arange(len(self.convs))
        return (float(self.quality[:, data_cols][rows, pick].mean()),
                float(self.cost[:, data_cols][rows, pick].mean()))

    def report(self, model: Any) -> Any:
        pred = model.predict(self.convs)
        names = [str(m) for m in pred.models]
        use = [m for m in self.models if m in names]
        if not use:
            raise DataError("the model predicts none of the held-out part's models")
        data_cols = [self.models.index(m) for m in use]
        pred_cols = [names.index(m) for m in use]
        return report_from_predictions(
            use, self.quality[:, data_cols], self.cost[:, data_cols],
            np.asarray(pred.quality, dtype=np.float64)[:, pred_cols],
            np.asarray(pred.cost_usd, dtype=np.float64)[:, pred_cols])


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
        self.held_out = _HeldOut(self.eval_table)
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
        for column in ("prompt_id", "messages", "model", "quality", "cost_usd"):
            if column not in self.table:
                raise DataError(f"outcome table: missing column {column!r}",
                                hint="load it with training.data.load_outcomes")
        self.table = self._one_id_per_text(self.table)
        ids = self.table["prompt_id"].astype(str).drop_duplicates().to_numpy()
        if len(ids) < _MIN_PROMPTS:
            raise DataError(f"the table has {len(ids)} prompts; the simulation needs at least "
                            f"{_MIN_PROMPTS} (held-out part, initial set, traffic)",
                            hint="use a larger table, e.g. `router demo-data --prompts 300`")
        order = np.random.default_rng(cfg.seed).permutation(len(ids))
        self.n_eval = max(2, int(round(cfg.eval_frac * len(ids))))
        eval_ids = ids[order[:self.n_eval]]
        self.pool_ids = [str(p) for p in ids[order[self.n_eval:]]]
        n_init = max(2, int(round(cfg.initial_frac * len(self.pool_ids))))
        if n_init >= len(self.pool_ids):
            raise ConfigError(f"--initial-frac {cfg.initial_frac} leaves no traffic prompt "
                              "that the initial router has not seen",
                              hint="use a smaller share, e.g. 0.1")
        self.initial_ids = self.pool_ids[:n_init]
        key = self.table["prompt_id"].astype(str)
        self.eval_table = self.table[key.isin(set(eval_ids))].reset_index(drop=True)
        self._eval_original = self.eval_table.copy()
        self.pool_table = self.table[key.isin(set(self.pool_ids))].reset_index(drop=True)
        self.initial_table = self.table[key.isin(set(self.initial_ids))].reset_index(drop=True)
        firsts = self.pool_table.drop_duplicates("prompt_id")
        self._messages = {str(p): json.loads(m)
                          for p, m in zip(firsts["prompt_id"], firsts["messages"], strict=True)}
        self._rng = random.Random(cfg.seed)
        self._queue: list[str] = []

    def _one_id_per_text(self, table: pd.DataFrame) -> pd.DataFrame:
        """Drop prompts whose conversation repeats an earlier prompt's.

        The provider answers by conversation, so two ids with one text would share
        one recorded outcome, and the same text could sit both in the held-out part
        and in the traffic: the first id per text is kept.
        """
        from router.conversation import parse_conversation

        firsts = table.drop_duplicates("prompt_id")
        seen: set[str] = set()
        keep: set[str] = set()
        for pid, messages in zip(firsts["prompt_id"].astype(str), firsts["messages"],
                                 strict=True):
            digest = parse_conversation(json.loads(messages), where=f"prompt_id {pid!r}").digest
            if digest not in seen:
                seen.add(digest)
                keep.add(pid)
        dropped = len(firsts) - len(keep)
        if not dropped:
            return table
        self.echo(f"dropped {dropped} prompts whose text repeats an earlier prompt's "
                  "(the simulated provider answers by text)")
        return table[table["prompt_id"].astype(str).isin(keep)].reset_index(drop=True)

    def _fit(self, table: pd.DataFrame, seed: int) -> Any:
        from router.predictor import QualityModel

        # 10% of prompts held out, as `router retrain` does, so every model here is
        # trained the same way and its meta.json carries held-out metrics.
        return QualityModel(**dict(self.config.model_options)).fit(
            table, catalog=self.catalog, seed=seed, holdout_frac=0.1, progress=False)

    def _start_servers(self) -> None:
        import httpx

        from router.app import create_app
        from router.fake_upstream import create_fake_upstream
        from router.settings import Settings
        from router.threaded_server import serve_in_thread

        cfg = self.config
        fake = create_fake_upstream(outcomes=self.outcomes_path, seed=cfg.seed)
        self.fake_url = self._stack.enter_context(
            serve_in_thread(fake, lifespan="off", name="fake-upstream"))
        # Settings given explicitly (not `load_settings`) so no ROUTER_* variable of
        # the caller's shell (keys, a model folder, a Redis cache) changes the run.
        settings = Settings(
            model_dir=None, registry_dir=self.registry.root, catalog=self.catalog_path,
            upstream_base_url=f"{self.fake_url}/v1", default_quality_bar=None,
            exploration=cfg.exploration, exploration_seed=cfg.seed, api_keys=[],
            log_url=self.log_url, log_flush_interval_s=0.05, cache_url=None,
            cache_ttl_s=0.0, semantic_cache=False, privacy_mode=False, max_retries=0,
            backoff_s=0.0, reload_interval_s=0.05)
        self.app = create_app(settings, reload=True)
        self.router_url = self._stack.enter_context(
            serve_in_thread(self.app, lifespan="on", name="router"))
        self.client = self._stack.enter_context(
            httpx.Client(base_url=self.router_url, timeout=60.0, trust_env=False))
        self.echo(f"fake provider on {self.fake_url}, router on {self.router_url}")
        self._wait_for(self.registry.current_version())

    def close(self) -> None:
        self._stack.close()

    # -- the loop ---------------------------------------------------------------------

    @property
    def serving_version(self) -> str:
        """The model version the running router reports on `/readyz`."""
        response = self.client.get("/readyz")
        return str(response.json().get("model_version"))

    def _wait_for(self, version: str | None) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            response = self.client.get("/readyz")
            if response.status_code == 200 and response.json().get("model_version") == version:
                return
            if time.monotonic() > deadline:
                raise RouterError(f"the router did not switch to model {version} within "
                                  f"{_READY_TIMEOUT_S:.0f} s (it reports "
                                  f"{response.json().get('model_version')})",
                                  hint=f"check the registry at {self.registry.root}")
            time.sleep(0.05)

    def _next_prompt(self) -> str:
        if not self._queue:
            # Each pass over the pool is a fresh shuffle: every prompt is asked as often.
            self._queue = list(self.pool_ids)
            self._rng.shuffle(self._queue)
        return self._queue.pop()

    def _model_name(self) -> str:
        bar = self.config.bar
        return "router" if bar is None else f"router:{bar:g}"

    def send(self, prompt_id: str) -> tuple[str, float, float, str]:
        """One chat request plus its feedback: (served model, quality, cost USD, request id)."""
        messages = self._messages[prompt_id]
        response = self.client.post("/v1/chat/completions",
                                    json={"model": self._model_name(), "messages": messages})
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

    def _expected(self, prompt_id: str, model: str) -> float | None:
        recorded = self._truth.get((prompt_id, model))
        if recorded is None:
            return None
        return min(1.0, max(0.0, recorded - self.degradation.get(model, 0.0)))

    def run_round(self) -> RoundResult:
        """Send one round of traffic with feedback, then retrain, gate and maybe promote."""
        from tqdm import tqdm

        from training.retrain import retrain

        cfg = self.config
        number = len(self.rounds) + 1
        started = time.monotonic()
        self._round_started.append(time.time())
        version = self.serving_version
        served: list[str] = []
        qualities: list[float] = []
        costs: list[float] = []
        mismatched = 0
        bar = tqdm(total=cfg.requests_per_round, desc=f"round {number}/{cfg.rounds}",
                   unit="req", leave=False, disable=not (self.progress and sys.stderr.isatty()))
        try:
            for _ in range(cfg.requests_per_round):
                prompt_id = self._next_prompt()
                model, quality, cost, _rid = self.send(prompt_id)
                expected = self._expected(prompt_id, model)
                if expected is not None and abs(expected - quality) > 1e-9:
                    mismatched += 1
                served.append(model)
                qualities.append(quality)
                costs.append(cost)
                bar.update()
        finally:
            bar.close()
        if mismatched:
            log.warning("round %d: %d answers did not carry the table's quality", number,
                        mismatched)
        if not self.app.state.ctx.store.flush_sync(timeout=60):
            raise RouterError("the router's outcome log did not flush within 60 s")
        explored = self._explored_in_round(number)

        now = datetime.now(UTC)
        since = None
        if cfg.window_rounds is not None:
            first = self._round_started[max(0, len(self._round_started) - cfg.window_rounds)]
            since = timedelta(seconds=now.timestamp() - first + 1.0)
        lines: list[str] = []
        result = retrain(
            registry=self.registry, log_url=self.log_url, since=since,
            base=[self.initial_path], eval_data=self.eval_table, catalog=self.catalog,
            tolerance=cfg.tolerance, seed=cfg.seed + number,
            now=now, fit=lambda table, _catalog, seed: self._fit(table, seed),
            echo=lines.append)
        for line in lines:
            log.debug("retrain: %s", line)
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
            mismatched=mismatched, seconds=time.monotonic() - started)
        self.rounds.append(outcome)
        verdict = (f"promoted {result.version_id}" if result.promoted
                   else f"kept it ({outcome.gate_reason})")
        self.echo(f"round {number}: {outcome.requests} requests served by {version}: quality "
                  f"{outcome.quality:.4f}, ${outcome.cost_usd:.6f}/request, AIQ "
                  f"{outcome.aiq:.4f}; retrain {verdict}")
        return outcome

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
        self.held_out = _HeldOut(table)

    def route_shares(self, prompt_ids: Sequence[str] | None = None) -> dict[str, float]:
        """Share of `prompt_ids` (default: every traffic prompt) per model by `/v1/route`.

        `/v1/route` never explores, so the same prompts under the same model
        always give the same shares: a clean before/after comparison.
        """
        ids = list(prompt_ids) if prompt_ids is not None else list(self.pool_ids)
        counts: Counter[str] = Counter()
        for prompt_id in ids:
            payload: dict[str, Any] = {"messages": self._messages[prompt_id]}
            if self.config.bar is not None:
                payload["quality_bar"] = self.config.bar
            response = self.client.post("/v1/route", json=payload)
            if response.status_code != 200:
                raise RouterError(f"/v1/route answered {response.status_code}: "
                                  f"{response.text[:300]}")
            counts[response.json()["model"]] += 1
        return {m: counts[m] / len(ids) for m in self.models}

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
            workdir=str(self.workdir))


def simulate(table: pd.DataFrame, *, catalog: Catalog, workdir: str | Path,
             config: SimulationConfig | None = None,
             echo: Callable[[str], None] | None = None,
             progress: bool = False) -> SimulationResult:
    """Run `config.rounds` rounds of the loop on `table` (from `load_outcomes`)."""
    sim = Simulation(table, catalog=catalog, workdir=workdir, config=config, echo=echo,
                     progress=progress)
    with sim:
        for _ in range(sim.config.rounds):
            sim.run_round()
        return sim.result()


def format_result(result: SimulationResult) -> str:
    """The human table of `router simulate`."""
    lines = [f"{'round':>5}  {'served by':<24} {'requests':>8} {'quality':>8} "
             f"{'cost/req':>11} {'AIQ':>7}  retrain"]
    for r in result.rounds:
        retrain_note = f"promoted {r.challenger}" if r.promoted else "kept"
        lines.append(f"{r.round:>5}  {r.model_version:<24} {r.requests:>8} {r.quality:>8.4f} "
                     f"{'$' + format(r.cost_usd, '.6f'):>11} {r.aiq:>7.4f}  {retrain_note}")
    lines += [
        "",
        f"initial router ({result.n_initial_prompts} prompts): AIQ {result.initial_aiq:.4f}",
        f"after the last retrain ({result.final_version}): AIQ {result.final_aiq:.4f}",
        f"full-data router ({result.n_pool_prompts} prompts, every model's outcome): AIQ "
        f"{result.full_data_aiq:.4f}; on the held-out prompts at the traffic's bar: quality "
        f"{result.full_data_quality:.4f}, ${result.full_data_cost_usd:.6f}/request",
        f"Zero router (single models mixed): AIQ {result.zero_router_aiq:.4f}; oracle quality "
        f"{result.oracle_quality:.4f}",
        f"AIQ is measured on {result.n_eval_prompts} held-out prompts never sent as traffic; "
        "quality and cost are the served traffic's means (exploration included).",
        f"work folder: {result.workdir}",
    ]
    return "\n".join(lines)
