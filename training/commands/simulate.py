"""`router simulate`: the closed loop end to end over real loopback sockets.

See `training.simulate` for what one round does and what each figure means.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from router.cli import add_command

__all__ = ["register"]

# Loggers that speak once per request or per reload: useful when serving, noise here.
_QUIET_LOGGERS = ("router", "httpx", "uvicorn", "uvicorn.error", "training")
# The "no client keys" start-up warning is moot on a loopback simulation; errors still show.
_ERRORS_ONLY = ("router.app",)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "simulate",
        help="run the closed loop (serve, log, feed back, retrain, promote) on an outcome "
             "table",
        description=(
            "Replay an outcome table as live traffic, over real sockets. The table's prompts "
            "are split into a fixed held-out part (--eval-frac, never traffic) and a traffic "
            "pool; a router is trained on --initial-frac of the pool (every model's outcome "
            "for those prompts) and promoted in a registry in the work folder. A simulated "
            "provider answers from the table (each answer carries the recorded quality), the "
            "router serves with exploration on and logs to SQLite. Each round sends "
            "--requests-per-round chat requests through the router, posts the recorded "
            "quality as feedback, retrains on the log plus the initial table, gates the "
            "challenger on the held-out part and hot-reloads it when promoted. Per round: "
            "the serving model, the served traffic's mean quality and cost, that model's AIQ "
            "on the held-out part, and whether the retrain promoted a new model; "
            "full_data_aiq is a router trained on every pool prompt's full outcomes, the "
            "target the loop moves towards. Realistic example: "
            "../shared/data/arena_bench_v1.csv.gz (300 Arena-Hard prompts x 15 models) "
            "with ../shared/data/prices.csv."),
        examples=[
            "router simulate --data ../shared/data/arena_bench_v1.csv.gz "
            "--prices ../shared/data/prices.csv --rounds 5",
            "router demo-data --out demo.csv --prompts 1000 && "
            "router simulate --data demo.csv --rounds 3 --json",
            "router simulate --data demo.csv --rounds 5 --requests-per-round 300 "
            "--plot loop.png --workdir sim-run",
            "router simulate --data demo.csv --latency-incident --plot incident.png",
        ],
        handler=_run,
    )
    _loop_options(parser)
    _incident_options(parser)


def _loop_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="FILE",
                        help="outcome table with every model's outcome per prompt "
                             "(CSV, CSV.gz, Parquet, JSONL)")
    parser.add_argument("--prices", metavar="FILE", default=None,
                        help="prices.csv for models not in the catalog")
    parser.add_argument("--rounds", type=int, default=5, metavar="K",
                        help="rounds of traffic + retrain (default 5)")
    parser.add_argument("--requests-per-round", type=int, default=200, metavar="N",
                        help="chat requests per round (default 200)")
    parser.add_argument("--initial-frac", type=float, default=0.1, metavar="F",
                        help="share of the traffic prompts the initial router is trained on "
                             "(default 0.1)")
    parser.add_argument("--eval-frac", type=float, default=0.2, metavar="F",
                        help="share of all prompts held out for AIQ and the gate (default 0.2)")
    parser.add_argument("--exploration", type=float, default=0.1, metavar="E",
                        help="share of routed requests sent to a random model, with its "
                             "propensity logged (default 0.1)")
    parser.add_argument("--bar", default="0.7", metavar="Q",
                        help="quality bar of every request (`model: router:Q`), the same in "
                             "every round so rounds compare (default 0.7); `default` sends "
                             "`model: router`, each version's own default bar")
    parser.add_argument("--tolerance", type=float, default=0.01, metavar="Q",
                        help="the gate's tolerance: quality at equal cost may be this much "
                             "worse (default 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, traffic, "
                        "exploration and training (default 0)")
    parser.add_argument("--json", action="store_true",
                        help='print {"rounds": [...], "full_data_aiq": x}')
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help="write cost and quality per round and AIQ vs full-data AIQ")
    parser.add_argument("--workdir", metavar="DIR", default=None,
                        help="new or empty folder to keep the log, registry and tables in "
                             "(default: a temporary folder, deleted at the end)")


def _incident_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "latency incident", "instead of the retrain rounds: the router serves under a latency "
        "limit, the fake answers after the table's recorded latencies (the table needs "
        "latency_ms), and one model is made slow mid-run; reported: how many requests and "
        "seconds of traffic until it lost its latency-limited traffic, without a retrain")
    group.add_argument("--latency-incident", nargs="?", const="", default=None,
                       metavar="MODEL", help="run the incident, slowing MODEL (default: the "
                                             "model serving most requests before it)")
    group.add_argument("--slowdown", type=float, default=5.0, metavar="F",
                       help="how many times slower the model gets (default 5)")
    group.add_argument("--max-latency-ms", type=float, default=None, metavar="MS",
                       help="the traffic's latency limit (default: the table's median "
                            "recorded latency_ms)")
    group.add_argument("--latency-scale", type=float, default=0.02, metavar="F",
                       help="answers take the recorded latency times F (default 0.02)")
    group.add_argument("--incident-requests", type=int, default=300, metavar="N",
                       help="requests before the slowdown, and as many after (default 300)")


def _bar(text: str) -> float | None:
    from router.errors import ConfigError

    if text.strip().lower() in ("default", "router"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--bar must be a number in [0, 1] or 'default', got {text!r}",
                          hint="e.g. --bar 0.7") from None


def _run(args: argparse.Namespace) -> int:
    from router.catalog import load_catalog, load_prices_csv
    from training.data import load_outcomes
    from training.simulate import SimulationConfig, format_result, simulate

    config = SimulationConfig(
        rounds=args.rounds, requests_per_round=args.requests_per_round,
        initial_frac=args.initial_frac, eval_frac=args.eval_frac,
        exploration=args.exploration, seed=args.seed, bar=_bar(args.bar),
        tolerance=args.tolerance, latency_incident=args.latency_incident is not None,
        slow_model=args.latency_incident or None, slowdown=args.slowdown,
        max_latency_ms=args.max_latency_ms, latency_scale=args.latency_scale,
        incident_requests=args.incident_requests)
    config.validate()  # before the (slow) load, so a typo costs nothing
    if args.plot is not None and not args.plot.lower().endswith(".png"):
        from router.errors import ConfigError

        raise ConfigError(f"--plot {args.plot}: the figure is written as PNG",
                          hint="give a file name ending in .png")
    catalog = load_catalog()
    if args.prices:
        catalog = catalog.with_prices(load_prices_csv(args.prices))
    table = load_outcomes([args.data], catalog=catalog)

    def echo(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS + _ERRORS_ONLY}
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    try:
        if not debug:
            for name in _QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
            for name in _ERRORS_ONLY:
                logging.getLogger(name).setLevel(logging.ERROR)
        if args.workdir is not None:
            result = simulate(table, catalog=catalog, workdir=Path(args.workdir),
                              config=config, echo=echo, progress=True)
        else:
            with tempfile.TemporaryDirectory(prefix="router-simulate-") as tmp:
                result = simulate(table, catalog=catalog, workdir=Path(tmp) / "run",
                                  config=config, echo=echo, progress=True)
            result.workdir = "(temporary, deleted; keep it with --workdir DIR)"
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)

    if args.plot is not None:
        from training.simulate_plot import plot_simulation

        path = plot_simulation(result, args.plot)
        echo(f"plot written to {path}")
    if args.json:
        print(json.dumps(result.to_json(), allow_nan=False))
    else:
        print(format_result(result))
    return 0
