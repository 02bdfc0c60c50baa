"""`router collect`: run prompts through candidate models, grade them, compare them."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os

from router.cli import add_command
from router.errors import ConfigError

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "collect",
        help="run every prompt through every candidate model, grade, and compare them",
        description=(
            "The evaluation harness: sends each prompt of --prompts to each model of --models "
            "at temperature 0 (same messages, same optional --system-prompt), through the "
            "router's upstream client (retries, Retry-After, no fallback to other models), "
            "grades each answer with --grader and appends one row per (prompt, model) to "
            "--out, a JSONL canonical outcome table with real token counts, cost at catalog "
            "prices and latency. Rerunning with the same --out skips finished pairs, so an "
            "interrupted run resumes. --max-cost-usd caps the total spend recorded in --out "
            "(judge calls included). Ends with a per-model comparison: mean quality, cost per "
            "request, p50/p99 latency and time to first byte, tokens in/out, error rate.\n\n"
            "graders: exact | regex | regex:PATTERN (last match vs the `reference` column) | "
            "judge:MODEL (LLM judge, 1-5 rubric -> (s-1)/4; see training/graders.py) | "
            "labels:FILE (human scores by prompt_id, model)"),
        examples=[
            "router fake-upstream --port 8100 --judge gpt-4o --judge-scale 5 &",
            "router collect --prompts prompts.csv --models deepseek-v4-flash,glm-4-plus,gpt-4o "
            "--grader judge:gpt-4o --out outcomes.jsonl --upstream-base-url http://127.0.0.1:8100/v1",
            "router collect --prompts qa.csv --models glm-4-plus,gpt-4o --grader exact "
            "--out qa.jsonl --max-cost-usd 5 --concurrency 8",
            "router collect --prompts math.csv --models glm-4-plus,gpt-4o --grader regex "
            "--out math.jsonl --json",
        ],
        handler=run,
    )
    _add_arguments(parser)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", metavar="FILE", required=True,
                        help="CSV/JSONL/Parquet: prompt_id, prompt or messages, [reference]")
    parser.add_argument("--models", metavar="A,B,C", required=True,
                        help="comma-separated catalog models to compare")
    parser.add_argument("--grader", metavar="GRADER", required=True,
                        help="exact, regex, regex:PATTERN, judge:MODEL or labels:FILE")
    parser.add_argument("--out", metavar="FILE.jsonl", required=True,
                        help="output table (JSONL; appended to, and read back to resume)")
    parser.add_argument("--upstream-base-url", metavar="URL", default=None,
                        help="send every model to this OpenAI-compatible base URL "
                             "(e.g. a fake upstream) with $ROUTER_UPSTREAM_API_KEY as its key, "
                             "never the providers' keys; default: each model's catalog "
                             "base_url")
    parser.add_argument("--concurrency", type=int, default=4, metavar="N",
                        help="calls in flight at once (default %(default)s)")
    parser.add_argument("--max-cost-usd", type=float, default=None, metavar="X",
                        help="stop starting calls once the spend recorded in --out would "
                             "exceed X (each call is estimated from its input tokens and the "
                             "longest answer seen from that model; a model's first call from "
                             "--max-tokens, else 256 tokens)")
    parser.add_argument("--system-prompt", default=None, metavar="TEXT",
                        help="system message put first in every prompt that has none")
    parser.add_argument("--max-tokens", type=int, default=None, metavar="N",
                        help="max_tokens sent with every call (default: none)")
    parser.add_argument("--retry-errors", action="store_true",
                        help="also rerun pairs whose call failed in an earlier run")
    parser.add_argument("--max-retries", type=int, default=2, metavar="N",
                        help="retries per call on 429/5xx/connect errors (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="seconds to wait for one answer (default %(default)s)")
    parser.add_argument("--catalog", metavar="FILE", default=None,
                        help="catalog TOML (default: $ROUTER_CATALOG or models/catalog.toml)")
    parser.add_argument("--prices", metavar="FILE", default=None,
                        help="prices.csv for models not in the catalog")
    parser.add_argument("--json", action="store_true",
                        help="print the run summary and comparison as JSON")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    import httpx

    if not getattr(args, "debug", False):
        # One INFO line per HTTP call would bury the comparison table.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    from router.catalog import load_catalog, load_prices_csv
    from router.upstream import UpstreamClient
    from training.collect import collect, comparison_table, format_comparison, load_prompts
    from training.graders import parse_grader

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if len(set(models)) != len(models):
        raise ConfigError(f"--models {args.models!r} names a model twice")
    catalog = load_catalog(args.catalog)
    if args.prices:
        catalog = catalog.with_prices(load_prices_csv(args.prices))
    for model in models:
        spec = catalog[model]
        if not args.upstream_base_url and not spec.base_url:
            raise ConfigError(f"model {model!r} has no base_url in {catalog.source}",
                              hint="pass --upstream-base-url URL, or add base_url to its "
                                   "catalog entry")
    prompts = load_prompts(args.prompts, system_prompt=args.system_prompt)
    timeout = httpx.Timeout(args.timeout, connect=min(10.0, args.timeout))
    limits = httpx.Limits(max_connections=max(args.concurrency, 1) * 2)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        client = UpstreamClient(catalog, http=http, base_url_override=args.upstream_base_url,
                                override_api_key=os.environ.get("ROUTER_UPSTREAM_API_KEY"),
                                max_retries=args.max_retries)
        grader = parse_grader(args.grader, client=client)
        result = await collect(prompts, models, grader, args.out, client=client,
                               catalog=catalog, concurrency=args.concurrency,
                               max_cost_usd=args.max_cost_usd, max_tokens=args.max_tokens,
                               retry_errors=args.retry_errors)

    comparison = comparison_table(result.table, models)
    if args.json:
        print(json.dumps({**result.to_dict(), "grader": grader.spec, "models": comparison},
                         indent=2))
        return 0
    print(format_comparison(comparison))
    print(f"\n{result.completed} pairs run, {result.skipped} already in {result.out}; "
          f"spent ${result.spent_this_run_usd:.6f} this run, ${result.spent_usd:.6f} in total"
          f" (grader {grader.spec})")
    if result.errors:
        print(f"{result.errors} calls failed (status=error rows); rerun with --retry-errors "
              "to try them again")
    if result.grade_errors:
        print(f"{result.grade_errors} answers could not be graded (quality left empty, reason "
              "in grade_error); `router train` skips those rows and says how many")
    if result.stopped_at_cap:
        print(f"stopped at the cost cap: ${result.spent_usd:.6f} spent of "
              f"${result.max_cost_usd:g}; {result.remaining} pairs remain; rerun with a "
              "higher --max-cost-usd to continue")
    return 0
