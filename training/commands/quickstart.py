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
import contextlib
import socket
import sys
from pathlib import Path
from typing import Any

from router.cli import add_command
from router.errors import ConfigError, RouterError

__all__ = ["decision_table", "register"]

STEPS = 5
# `router serve` returns this when Ctrl-C stops it (the CLI's exit code for an interrupt).
INTERRUPTED = 130

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


def _step(number: int, text: str) -> None:
    print(f"\n[{number}/{STEPS}] {text}", flush=True)


def _router(*argv: str) -> int:
    """Run one `router` sub-command as the tour would; a failure stops the quickstart."""
    from router.cli import main

    code = main(list(argv))
    if code not in (0, INTERRUPTED):
        raise RouterError(f"`router {' '.join(argv)}` failed (exit code {code})",
                          hint="see the error above")
    return code


def _check_port(port: int) -> None:
    """Refuse a busy port before minutes of work, not after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ConfigError(f"port {port} on 127.0.0.1 is already in use",
                              hint="stop what listens there, or pass --port, e.g. "
                                   "router quickstart --port 8080 (or --no-serve)") from None


def _shorten(text: str, width: int = 76) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 3] + "..."


def decision_table(prompt: str, decision: Any) -> str:
    """A routed prompt and its candidates, one line each, the chosen one marked."""
    lines = [f'  "{_shorten(prompt)}"',
             f"    {'':2}{'model':<20} {'expected quality':>16} {'expected cost':>14}"]
    for c in sorted(decision.candidates, key=lambda c: c.expected_cost_usd):
        mark = "->" if c.model == decision.model else ""
        lines.append(f"    {mark:2}{c.model:<20} {c.expected_quality:>16.3f} "
                     f"{'$' + format(c.expected_cost_usd, '.6f'):>14}")
    return "\n".join(lines)


def _show_decisions(model_dir: Path) -> None:
    from router.commands.route import route_one
    from router.conversation import parse_conversation
    from router.predictor import QualityModel

    model = QualityModel.load(model_dir)
    print(f"default bar {model.default_bar:.2f}: a target mean quality; each prompt goes to "
          f"the model with the best expected quality for its cost", flush=True)
    for prompt in EXAMPLE_PROMPTS:
        decision = route_one(model, parse_conversation(prompt, where="prompt"))
        print(decision_table(prompt, decision), flush=True)


def _run(args: argparse.Namespace) -> int:
    from router.registry import Registry

    if not args.no_serve:
        _check_port(args.port)
    workdir = Path(args.dir)
    workdir.mkdir(parents=True, exist_ok=True)
    train_data = workdir / "outcomes.csv.gz"
    test_data = workdir / "test_outcomes.csv.gz"
    model_dir = workdir / "model"
    plot = workdir / "eval.png"

    _step(1, f"generating demo outcomes: {args.prompts} prompts x 8 models, and "
             f"{max(200, args.prompts // 4)} fresh prompts to test on")
    _router("demo-data", "--out", str(train_data), "--prompts", str(args.prompts),
            "--seed", str(args.seed))
    _router("demo-data", "--out", str(test_data), "--prompts", str(max(200, args.prompts // 4)),
            "--seed", str(args.seed + 1))

    _step(2, f"training the quality model -> {model_dir}")
    _router("train", "--data", str(train_data), "--out", str(model_dir),
            "--seed", str(args.seed))

    _step(3, f"evaluating on {test_data.name} (prompts the model never saw) -> {plot}")
    # kNN learns from the same training prompts as the router: the fair baseline.
    _router("eval", "--model", str(model_dir), "--data", str(test_data), "--plot", str(plot),
            "--train-data", str(train_data))

    _step(4, "routing two prompts (an easy one, a hard one); -> marks the choice")
    _show_decisions(model_dir)

    registry = Registry(args.registry)
    version = registry.add(model_dir)
    registry.promote(version, reason="router quickstart")
    _step(5, f"promoted {version} in the registry {registry.root}")

    url = f"http://127.0.0.1:{args.port}"
    print("\nnext:\n"
          f"  router route 'Translate to French: good morning' --model {model_dir}\n"
          f"  router eval --model {model_dir} --data {test_data} --json\n"
          + (f"  router serve --registry {registry.root} --fake-upstream\n" if args.no_serve
             else ""), flush=True)
    if args.no_serve:
        return 0
    print(f"serving on {url} with a simulated provider (Ctrl-C stops it); try:\n"
          f"  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\\n"
          "    -d '{\"model\": \"router\", \"messages\": "
          "[{\"role\": \"user\", \"content\": \"Summarise: the cat sat on the mat.\"}]}'",
          flush=True)
    sys.stdout.flush()
    # Ctrl-C is how the quickstart is meant to end: a quiet stop, not an error.
    with contextlib.suppress(KeyboardInterrupt):
        _router("serve", "--registry", str(registry.root), "--fake-upstream",
                "--port", str(args.port))
    print("stopped", flush=True)
    return 0
