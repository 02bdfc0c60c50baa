"""`router retrain`: retrain on logged outcomes, gate, register, promote if not worse.

Once, or on a schedule in a long-running process (`--every 24h`, `--cron EXPR`).
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime

from router.cli import add_command
from router.errors import ConfigError
from router.registry import Registry
from training.commands.train import add_dask_arguments, dask_from_args

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "retrain",
        help="retrain on logged outcomes; promote the new model only if it is not worse",
        description=(
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
            "`router train --dask` does."),
        examples=[
            "router retrain --log sqlite:///outcomes.db --since 7d --eval-data eval.csv.gz",
            "router retrain --base demo.csv.gz --registry models   # a first version, no log",
            "router retrain --log postgresql://router@db/router --last-days 14 "
            "--base ../shared/data/arena_bench_v1.csv.gz --registry /srv/models",
            "router retrain --log sqlite:///outcomes.db --every 24h",
            "router retrain --log sqlite:///outcomes.db --cron '0 3 * * *'",
            "router retrain --log sqlite:///outcomes.db --base big/ --dask tcp://10.0.0.5:8786",
        ],
        handler=_run,
    )
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
    parser.add_argument("--eval-data", metavar="FILE", default=None,
                        help="fixed evaluation table for the gate (every model's outcome per "
                             "prompt)")
    parser.add_argument("--prices", metavar="FILE", default=None,
                        help="prices.csv for models not in the catalog")
    parser.add_argument("--min-tolerance", metavar="Q", type=float, default=0.01,
                        help="promote unless the challenger's quality at equal cost is worse "
                             "than the champion's by more than Q (default 0.01)")
    parser.add_argument("--holdout", metavar="FRAC", type=float, default=0.2,
                        help="most recent share of logged rows held out for the gate "
                             "(default 0.2)")
    parser.add_argument("--max-weight", metavar="W", type=float, default=20.0,
                        help="clip inverse-propensity weights at W (default 20)")
    parser.add_argument("--min-rows", metavar="N", type=int, default=50,
                        help="refuse to train on fewer rows (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    schedule = parser.add_mutually_exclusive_group()
    schedule.add_argument("--every", metavar="DURATION", default=None,
                          help="keep running and retrain every DURATION (e.g. 24h)")
    schedule.add_argument("--cron", metavar="EXPR", default=None,
                          help="keep running and retrain on a crontab schedule, "
                               "e.g. '0 3 * * *'")
    parser.add_argument("--json", action="store_true",
                        help="print the result of each run as one JSON line")
    add_dask_arguments(parser)


def _run(args: argparse.Namespace) -> int:
    from training.scheduler import parse_duration, run_scheduled

    since = None
    if args.since is not None:
        since = parse_duration(args.since, option="--since")
    elif args.last_days is not None:
        if args.last_days <= 0:
            raise ConfigError(f"--last-days must be positive, got {args.last_days!r}")
        since = parse_duration(f"{args.last_days}d", option="--last-days")
    if args.log is None and not args.base:
        raise ConfigError("nothing to train on: pass --log URL and/or --base FILE",
                          hint="e.g. router retrain --log sqlite:///outcomes.db --since 7d")
    if args.min_tolerance < 0:
        raise ConfigError(f"--min-tolerance must be >= 0, got {args.min_tolerance!r}")
    registry = Registry(args.registry)

    def once() -> dict:
        from training.retrain import retrain

        catalog = _catalog(args.prices)
        with dask_from_args(args) as dask:
            result = retrain(
                registry=registry, log_url=args.log, since=since, base=args.base,
                eval_data=args.eval_data, catalog=catalog, tolerance=args.min_tolerance,
                holdout_frac=args.holdout, max_weight=args.max_weight,
                min_rows=args.min_rows, seed=args.seed, now=datetime.now(UTC),
                dask=dask, dask_options={"partitions_dir": args.dask_partitions},
                echo=(lambda _text: None) if args.json else print,
            )
        summary = {"version_id": result.version_id, "promoted": result.promoted,
                   "current": registry.current_version(), "train_rows": result.train_rows,
                   "holdout_rows": result.holdout_rows, "log": result.counts.to_dict(),
                   "gate": result.gate.to_dict() if result.gate else None}
        if args.json:
            print(json.dumps(summary, default=str), flush=True)
        return summary

    if args.every is None and args.cron is None:
        once()
        return 0
    report = run_scheduled(once, every=args.every, cron=args.cron, run_now=True)
    log.info("scheduler stopped after %d run(s), %d failed", report.runs, report.failures)
    return 0


def _catalog(prices: str | None):
    from router.catalog import load_catalog, load_prices_csv

    catalog = load_catalog()
    return catalog.with_prices(load_prices_csv(prices)) if prices else catalog
