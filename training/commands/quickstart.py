"""`router quickstart`: the README's main job in one command.

Generates demo outcomes, trains a router, evaluates it on prompts it never saw
(a second demo set drawn with another seed), shows two decisions, registers and
promotes the model, then serves it on localhost with the fake provider mounted,
so a newcomer can curl it at once. Every step is the same `router` sub-command
the README's tour runs by hand, so what the quickstart prints is what they will
see later.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router.cli import add_command
from router.errors import RouterError

__all__ = ["register"]

EXAMPLE_PROMPTS = (
    "Classify the sentiment of this review as positive or negative: 'Great battery life.'",
    "Prove that there are infinitely many primes p such that p + 2 is also prime, or explain "
    "precisely why this is an open problem, with the strongest known partial results.",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "quickstart",
        help="demo data -> train -> evaluate -> route -> serve, in one go",
        description="Generate synthetic outcomes, train a router, evaluate it on fresh "
                    "prompts (with a plot), show two routing decisions, promote the model in "
                    "the registry and serve it on localhost with a simulated provider.",
        examples=["router quickstart",
                  "router quickstart --dir /tmp/demo --prompts 1000 --no-serve",
                  "router quickstart --port 8080"],
        handler=_run,
    )
    parser.add_argument("--dir", default="demo", help="working folder (default ./demo)")
    parser.add_argument("--prompts", type=int, default=2000,
                        help="training prompts to generate (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--registry", metavar="DIR",
                        help="registry root to promote the model in (default: models/)")
    parser.add_argument("--port", type=int, default=8000, help="port to serve on (default 8000)")
    parser.add_argument("--no-serve", action="store_true", help="stop after the decisions")


def _step(number: int, total: int, text: str) -> None:
    print(f"\n[{number}/{total}] {text}", flush=True)


def _router(*argv: str) -> None:
    from router.cli import main

    code = main(list(argv))
    if code != 0:
        raise RouterError(f"`router {' '.join(argv)}` failed (exit code {code})",
                          hint="see the error above")


def _run(args: argparse.Namespace) -> int:
    from router.registry import Registry

    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    train_data = workdir / "outcomes.csv.gz"
    test_data = workdir / "test_outcomes.csv.gz"
    model_dir = workdir / "model"
    plot = workdir / "eval.png"
    total = 5 if args.no_serve else 6

    _step(1, total, f"generating demo outcomes: {args.prompts} prompts x 8 models")
    _router("demo-data", "--out", str(train_data), "--prompts", str(args.prompts),
            "--seed", str(args.seed))
    _router("demo-data", "--out", str(test_data), "--prompts", str(max(200, args.prompts // 4)),
            "--seed", str(args.seed + 1))

    _step(2, total, f"training the quality model -> {model_dir}")
    _router("train", "--data", str(train_data), "--out", str(model_dir),
            "--seed", str(args.seed))

    _step(3, total, f"evaluating on {test_data.name} (prompts the model never saw) -> {plot}")
    # kNN learns from the same training prompts as the router: the fair baseline.
    _router("eval", "--model", str(model_dir), "--data", str(test_data), "--plot", str(plot),
            "--train-data", str(train_data))

    _step(4, total, "routing two prompts (an easy one, a hard one)")
    for prompt in EXAMPLE_PROMPTS:
        _router("route", prompt, "--model", str(model_dir))

    registry = Registry(args.registry)
    version = registry.add(model_dir)
    registry.promote(version, reason="router quickstart")
    _step(5, total, f"promoted {version} in the registry {registry.root}")

    if args.no_serve:
        print(f"\nnext: router serve --registry {registry.root} --fake-upstream", flush=True)
        return 0
    _step(6, total, f"serving on http://127.0.0.1:{args.port} with a simulated provider")
    print("try:\n"
          f"  curl -s http://127.0.0.1:{args.port}/v1/chat/completions "
          "-H 'content-type: application/json' \\\n"
          "    -d '{\"model\": \"router\", \"messages\": "
          "[{\"role\": \"user\", \"content\": \"Summarise: the cat sat on the mat.\"}]}'",
          flush=True)
    sys.stdout.flush()
    _router("serve", "--registry", str(registry.root), "--fake-upstream",
            "--port", str(args.port))
    return 0
