"""`router import FORMAT SRC --out FILE`: convert a public benchmark to an outcome table."""

from __future__ import annotations

import argparse
import sys

from router.cli import add_command
from router.errors import ConfigError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "import",
        help="convert RouteLLM / RouterBench / AlpacaEval / MT-Bench results to an "
             "outcome table",
        description="Read a published routing benchmark and write the canonical outcome "
                    "table (one row per prompt and model) that `router train` reads. The "
                    "output format follows --out's extension (.csv, .csv.gz, .parquet, "
                    ".jsonl). Formats: routellm (eval CSVs with one True/False column per "
                    "model; SRC may be a folder), routerbench (wide .pkl/.csv with "
                    "<model>|total_cost columns), alpacaeval (annotations.json), mtbench "
                    "(FastChat gpt-4_single.jsonl).",
        examples=[
            "router import routellm RouteLLM/routellm/evals/mmlu/responses --out mmlu.csv.gz "
            "--rename mixtral-8x7b-instruct-v0.1=mistralai/Mixtral-8x7B-Instruct-v0.1",
            "router import routerbench routerbench_0shot.pkl --out routerbench.parquet",
            "router import alpacaeval results/gpt4/annotations.json --out alpaca.csv",
            "router import mtbench data/mt_bench/model_judgment/gpt-4_single.jsonl "
            "--questions data/mt_bench/question.jsonl --out mtbench.csv",
        ],
        handler=_run,
    )
    parser.add_argument("format", choices=["routellm", "routerbench", "alpacaeval", "mtbench"],
                        help="the source format")
    parser.add_argument("src", help="the file (or, for routellm, folder) to read")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="where to write the outcome table (format by extension)")
    parser.add_argument("--rename", action="append", default=[], metavar="OLD=NEW",
                        help="routellm: rename a model column (repeatable)")
    parser.add_argument("--task", default=None,
                        help="routellm: task label for every row (default: from the file name)")
    parser.add_argument("--questions", default=None, metavar="FILE",
                        help="mtbench: FastChat question.jsonl, gives categories and the "
                             "text of both turns")


def _run(args: argparse.Namespace) -> int:
    from training.data import write_outcomes
    from training.importers import import_benchmark

    options: dict[str, object] = {}
    if args.format == "routellm":
        rename = {}
        for item in args.rename:
            old, sep, new = item.partition("=")
            if not sep or not old or not new:
                raise ConfigError(f"--rename {item!r} is not OLD=NEW",
                                  hint="e.g. --rename gpt-4-1106-preview=gpt-4")
            rename[old] = new
        options = {"rename": rename, "task": args.task}
    elif args.rename or args.task:
        raise ConfigError("--rename and --task apply to the routellm format only")
    if args.format == "mtbench":
        options["questions"] = args.questions
    elif args.questions:
        raise ConfigError("--questions applies to the mtbench format only")
    # Two coarse steps (read + convert, write): a large RouterBench pickle takes a
    # while and the user should see which half it is in. Quiet when not a terminal.
    from tqdm import tqdm

    with tqdm(total=2, desc=f"import {args.format}", unit="step",
              disable=not sys.stderr.isatty()) as bar:
        table = import_benchmark(args.format, args.src, **options)
        bar.update()
        bar.set_description(f"writing {args.out}")
        path = write_outcomes(table, args.out)
        bar.update()
    print(f"wrote {len(table)} rows ({table['prompt_id'].nunique()} prompts x "
          f"{table['model'].nunique()} models, mean quality {table['quality'].mean():.3f}) "
          f"to {path}", file=sys.stdout)
    return 0
