"""`router report`: spend, quality and savings from the outcome log."""

from __future__ import annotations

import argparse
import json
import os

from router.cli import add_command

__all__ = ["register", "run"]

DEFAULT_LOG = "sqlite:///router_outcomes.db"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "report",
        help="what the router spent and saved: per model, per day, against counterfactuals",
        description=(
            "Reads the outcome log over a window and prints requests, spend and mean feedback "
            "quality per model and per day; the share of traffic per model; cache-hit, "
            "fallback (another model answered than the one chosen; never a cache hit), "
            "exploration and error rates; and what the same requests would have cost had they "
            "all gone to the most expensive model the router considered, or to the single "
            "best model (highest mean expected quality, or --baseline), with the saving in "
            "USD and percent. Counterfactuals use the router's logged expected cost of each "
            "model per request (see training/report.py). Decisions from POST /v1/route alone "
            "called no model: they are counted apart, not as requests or savings."),
        examples=[
            "router report --log sqlite:///router_outcomes.db --since 7d",
            "router report --log postgresql://router@db/router --since 30d --plot spend.png",
            "router report --since 2025-01-01 --baseline gpt-4o --json",
        ],
        handler=run,
    )
    parser.add_argument("--log", metavar="URL", default=None,
                        help="outcome log: a SQLite path, sqlite:///file.db or postgresql://... "
                             f"(default: $ROUTER_LOG_URL or {DEFAULT_LOG})")
    parser.add_argument("--since", metavar="WHEN", default="7d",
                        help="window start: a duration back from now (7d, 36h) or a date "
                             "(default %(default)s)")
    parser.add_argument("--baseline", metavar="MODEL", default=None,
                        help="the single model to compare with (default: the candidate with "
                             "the highest mean expected quality)")
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help="also draw daily spend vs the counterfactuals and quality over "
                             "time")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from router.outcome_log import redact_url
    from training.report import build_report, format_report, load_log, parse_since
    from training.report_plot import plot_report

    url = args.log or os.environ.get("ROUTER_LOG_URL") or DEFAULT_LOG
    since = parse_since(args.since)
    frame = load_log(url, since=since)
    report = build_report(frame, baseline=args.baseline, since=since, source=redact_url(url))
    if args.plot:
        report["plot"] = str(plot_report(report, args.plot))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        if args.plot:
            print(f"\nplot: {report['plot']}")
    return 0
