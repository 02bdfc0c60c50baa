"""`router retrain`: retrain on logged outcomes, gate, register, promote if not worse.

Once, or on a schedule in a long-running process (`--every 24h`, `--cron EXPR`).
The options of one retrain become one `training.retrain.RetrainSettings`,
checked before anything is read; its defaults are the ones `--help` shows.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from router.cli import add_command
from router.errors import ConfigError
from router.registry import Registry
from training.commands.train import add_dask_arguments, dask_from_args
from training.retrain import RetrainSettings

__all__ = ["register"]

log = logging.getLogger(__name__)

_DESCRIPTION = (
    "Build training rows from the outcome log and its feedback (weighted by inverse "
    "logged propensity), optionally merged with base outcome tables; train a "
    "challenger; compare it with the current model on held-out recent logs "
    "(doubly robust off-policy estimates; IPS, SNIPS and DR at the logged settings "
    "with standard errors and effective sample size, not judged below 30 effective "
    "rows) and on a fixed evaluation table; add it "
    "to the registry and promote it only if its quality at equal cost is not worse "
    "than the champion's by more than --min-tolerance. Servers hot-reload the "
    "promoted version. With --every or --cron it keeps running and retrains on "
    "that schedule. With --dask the challenger trains on a Dask cluster, as "
    "`router train --dask` does.")

_EXAMPLES = [
    "router retrain --log sqlite:///outcomes.db --since 7d --eval-data eval.csv.gz",
    "router retrain --base demo.csv.gz --registry models   # a first version, no log",
    "router retrain --log postgresql://router@db/router --last-days 14 "
    "--base ../shared/data/arena_bench_v1.csv.gz --registry /srv/models",
    "router retrain --log sqlite:///outcomes.db --every 24h",
    "router retrain --log sqlite:///outcomes.db --cron '0 3 * * *'",
    "router retrain --log sqlite:///outcomes.db --base big/ --dask tcp://10.0.0.5:8786",
]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "retrain",
        help="retrain on logged outcomes; promote the new model only if it is not worse",
        description=_DESCRIPTION, examples=_EXAMPLES, handler=_run)
    _add_data_arguments(parser)
    _add_gate_arguments(parser)
    _add_schedule_arguments(parser)
    add_dask_arguments(parser)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """What the challenger learns from, and where it is registered."""
    parser.add_argument("--log", metavar="URL", default=None,
                        help="outcome log: a SQLite path, sqlite:///file.db or postgresql://...")
    window = parser.add_mutually_exclusive_group()
    window.add_argument("--since", metavar="DURATION", default=None,
                        help="only requests newer than this, e.g. 7d, 36h")
    window.add_argument("--last-days", metavar="N", type=float, default=None,
                        help="only requests of the last N days")
    parser.add_argument("--base", metavar="FILE", nargs="+", default=[],
                        help="outcome tables to train on besides the log (CSV, Parquet, JSONL)")
    parser.add_argument("--registry", metavar="DIR", default=None,
                        help="model registry (default: $ROUTER_REGISTRY or the repo's models/)")
    parser.add_argument("--prices", metavar="FILE", default=None,
                        help="prices.csv for models not in the catalog")


def _add_gate_arguments(parser: argparse.ArgumentParser) -> None:
    """How the challenger is trained and judged; defaults are `RetrainSettings`'s."""
    default = RetrainSettings.default
    parser.add_argument("--eval-data", metavar="FILE", default=None,
                        help="fixed evaluation table for the gate (every model's outcome per "
                             "prompt)")
    parser.add_argument("--min-tolerance", metavar="Q", type=float, default=default("tolerance"),
                        help="promote unless the challenger's quality at equal cost is worse "
                             "than the champion's by more than Q (default %(default)s)")
    parser.add_argument("--holdout", metavar="FRAC", type=float, default=default("holdout_frac"),
                        help="most recent share of logged rows held out for the gate "
                             "(default %(default)s)")
    parser.add_argument("--max-weight", metavar="W", type=float, default=default("max_weight"),
                        help="clip inverse-propensity weights at W (default %(default)s)")
    parser.add_argument("--min-rows", metavar="N", type=int, default=default("min_rows"),
                        help="refuse to train on fewer rows (default %(default)s)")
    parser.add_argument("--min-logged-rows", metavar="N", type=int,
                        default=default("min_logged_rows"),
                        help="the gate does not judge the recent logs on fewer held-out rows "
                             "(default %(default)s)")
    parser.add_argument("--seed", type=int, default=default("seed"))


def _add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    schedule = parser.add_mutually_exclusive_group()
    schedule.add_argument("--every", metavar="DURATION", default=None,
                          help="keep running and retrain every DURATION (e.g. 24h)")
    schedule.add_argument("--cron", metavar="EXPR", default=None,
                          help="keep running and retrain on a crontab schedule, "
                               "e.g. '0 3 * * *'")
    parser.add_argument("--json", action="store_true",
                        help="print the result of each run as one JSON line")


def _since(args: argparse.Namespace) -> timedelta | None:
    from training.scheduler import parse_duration

    if args.since is not None:
        return parse_duration(args.since, option="--since")
    if args.last_days is not None:
        if args.last_days <= 0:
            raise ConfigError(f"--last-days must be positive, got {args.last_days!r}")
        return parse_duration(f"{args.last_days}d", option="--last-days")
    return None


def _settings_from_args(args: argparse.Namespace) -> RetrainSettings:
    """The `RetrainSettings` the command line asks for (`ConfigError` naming the option)."""
    return RetrainSettings(
        log_url=args.log, since=_since(args), base=tuple(args.base), eval_data=args.eval_data,
        tolerance=args.min_tolerance, holdout_frac=args.holdout, max_weight=args.max_weight,
        min_rows=args.min_rows, min_logged_rows=args.min_logged_rows, seed=args.seed,
        dask_partitions=args.dask_partitions)


def _run(args: argparse.Namespace) -> int:
    from training.scheduler import run_scheduled

    settings = _settings_from_args(args)
    registry = Registry(args.registry)

    def once() -> dict[str, Any]:
        return _retrain_once(settings, registry, args)

    if args.every is None and args.cron is None:
        once()
        return 0
    report = run_scheduled(once, every=args.every, cron=args.cron, run_now=True)
    log.info("scheduler stopped after %d run(s), %d failed", report.runs, report.failures)
    return 0


def _retrain_once(settings: RetrainSettings, registry: Registry, args: argparse.Namespace
                  ) -> dict[str, Any]:
    """One retrain (a fresh catalog and Dask client each run); its summary, printed as
    JSON with --json."""
    from training.retrain import retrain

    with dask_from_args(args) as dask:
        result = retrain(settings, registry=registry, catalog=_catalog(args.prices),
                         now=datetime.now(UTC), dask=dask,
                         echo=(lambda _text: None) if args.json else print)
    summary = {"version_id": result.version_id, "promoted": result.promoted,
               "current": registry.current_version(), "train_rows": result.train_rows,
               "holdout_rows": result.holdout_rows, "log": result.counts.to_dict(),
               "gate": result.gate.to_dict() if result.gate else None}
    if args.json:
        print(json.dumps(summary, default=str), flush=True)
    return summary


def _catalog(prices: str | None) -> Any:
    from router.catalog import load_catalog, load_prices_csv

    catalog = load_catalog()
    return catalog.with_prices(load_prices_csv(prices)) if prices else catalog
