"""`router demo-data --out FILE`: write the synthetic outcome table of the quickstart."""

from __future__ import annotations

import argparse

from router.cli import add_command
from router.errors import ConfigError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "demo-data",
        help="write a synthetic outcome table over the catalog models (quickstart data)",
        description="Generate realistic synthetic prompts (nine task types, easy to hard) and "
                    "per-model outcomes with costs from the catalog, in the canonical outcome "
                    "table. Cheap models are good enough on easy prompts and only hard ones "
                    "need expensive models, so a trained router saves money visibly. The "
                    "output format follows --out's extension (.csv, .csv.gz, .parquet, "
                    ".jsonl). The same --seed gives the same file.",
        examples=[
            "router demo-data --out demo.csv",
            "router demo-data --out demo.parquet --prompts 10000 --seed 7",
        ],
        handler=_run,
    )
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="where to write the table (format by extension)")
    parser.add_argument("--prompts", type=int, default=2000, metavar="N",
                        help="number of prompts (rows = N x catalog models; default 2000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the prompts and their outcomes (default 0); other "
                             "seeds give fresh prompts from the same traffic")
    parser.add_argument("--world", type=int, default=0, metavar="W",
                        help="seed of the models' skills per task (default 0); another "
                             "world is other models, e.g. to simulate a drift")
    parser.add_argument("--catalog", default=None, metavar="FILE",
                        help="model catalog TOML (default: $ROUTER_CATALOG or "
                             "models/catalog.toml)")


def _run(args: argparse.Namespace) -> int:
    from router.catalog import load_catalog
    from training.data import write_outcomes
    from training.demo_data import generate_demo

    if args.prompts < 1:
        raise ConfigError(f"--prompts must be at least 1, got {args.prompts}")
    catalog = load_catalog(args.catalog)
    table = generate_demo(args.prompts, args.seed, catalog, world=args.world)
    path = write_outcomes(table, args.out)
    per_model = table.groupby("model", sort=False)[["quality", "cost_usd"]].mean()
    best = per_model["quality"].idxmax()
    cheapest = per_model["cost_usd"].idxmin()
    print(f"wrote {len(table)} rows ({args.prompts} prompts x {len(catalog)} models, "
          f"{table['task'].nunique()} tasks) to {path}; best single model {best} "
          f"(quality {per_model.loc[best, 'quality']:.3f}, ${per_model.loc[best, 'cost_usd']:.5f}"
          f"/request), cheapest {cheapest} (quality {per_model.loc[cheapest, 'quality']:.3f}, "
          f"${per_model.loc[cheapest, 'cost_usd']:.5f}/request)")
    return 0
