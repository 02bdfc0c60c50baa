"""`router route "text" --model DIR`: one routing decision, printed as /v1/route JSON."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from router.cli import add_command
from router.errors import ArtifactError, ConfigError, DataError

if TYPE_CHECKING:
    from router.policy import Decision

__all__ = ["register", "route_one"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "route",
        help="print which model the router picks for a prompt, and why",
        description="Predict quality and cost of every model for one prompt (a string, or a "
                    "JSON list of chat messages; '-' reads standard input) and print the "
                    "decision in the shape of the HTTP POST /v1/route response: request_id, "
                    "model, quality_bar, expected_quality, expected_cost_usd, candidates, "
                    "model_version. The bar is a target mean quality over traffic like the "
                    "training data; without --bar the artifact's default is used (the best "
                    "single model's mean quality on held-out prompts). --min-quality is a "
                    "hard floor for this one request instead. --max-latency-ms drops the "
                    "models expected to take longer (the fastest is chosen when none is "
                    "within it; the artifact must predict latency); every candidate shows "
                    "its expected_latency_ms. Without --model the registry's current "
                    "version is used.",
        examples=[
            "router route 'Prove that sqrt(2) is irrational.' --model models/demo --bar 0.8",
            "router route 'Summarise: the cat sat.' --model models/demo --utility-lambda 1000",
            "router route 'Extract the invoice total.' --model models/demo --min-quality 0.9",
            "router route '[{\"role\": \"user\", \"content\": \"hi\"}]' --model models/demo "
            "--models deepseek-v4-flash,gpt-4o --max-cost-usd 0.001",
            "router route 'Write a haiku about rain.' --model models/demo --max-latency-ms 2000",
        ],
        handler=_run,
    )
    parser.add_argument("prompt", metavar="TEXT",
                        help="the prompt, a JSON messages list, or '-' for standard input")
    parser.add_argument("--model", default=None, metavar="DIR",
                        help="trained artifact folder (default: the registry's current "
                             "version)")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--bar", type=float, default=None, metavar="B",
                      help="quality bar in [0, 1]: the target mean quality the artifact's "
                           "calibration maps to a cost weight (default: the artifact's "
                           "default bar)")
    rule.add_argument("--min-quality", type=float, default=None, metavar="Q",
                      help="hard floor instead of a bar: the cheapest model predicted to "
                           "reach Q on this prompt (else the best predicted)")
    rule.add_argument("--utility-lambda", type=float, default=None, metavar="L",
                      help="utility rule instead of a bar: argmax quality - L * cost_usd "
                           "(L in quality per USD, e.g. 1000)")
    parser.add_argument("--max-cost-usd", type=float, default=None, metavar="X",
                        help="drop candidates whose expected cost is above X USD")
    parser.add_argument("--max-latency-ms", type=float, default=None, metavar="MS",
                        help="drop candidates expected to take longer than MS milliseconds "
                             "for the whole answer (the fastest is chosen when none is within "
                             "it)")
    parser.add_argument("--models", default=None, metavar="A,B",
                        help="comma-separated models allowed (default: all the artifact's)")


def route_one(model: Any, conversation: Any, *, bar: float | None = None,
              min_quality: float | None = None, utility_lambda: float | None = None,
              max_cost_usd: float | None = None,
              allowed_models: Sequence[str] | None = None,
              max_latency_ms: float | None = None) -> Decision:
    """One decision of a loaded `QualityModel` for one conversation, by the rule the
    server runs: the artifact's default bar unless a bar, floor or lambda is given.
    (No live latency here: the artifact's expectation alone.)"""
    from router.policy import decide

    if bar is None and min_quality is None and utility_lambda is None:
        bar = model.default_bar
    pred = model.predict([conversation])
    latency = getattr(pred, "latency_ms", None)
    return decide(pred.models, pred.quality[0], pred.cost_usd[0], bar=bar,
                  calibration=model.bar_calibration if bar is not None else None,
                  min_quality=min_quality, utility_lambda=utility_lambda,
                  max_cost_usd=max_cost_usd, allowed_models=allowed_models,
                  latency_ms=None if latency is None else latency[0],
                  max_latency_ms=max_latency_ms)


def _run(args: argparse.Namespace) -> int:
    from router.conversation import conversation_problem, parse_conversation
    from router.predictor import QualityModel
    from router.registry import Registry

    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    problem = conversation_problem(text, prompt_ok=True, param="prompt")
    if problem is not None:  # the rules /v1/route applies to the same input
        raise DataError(problem[1], hint="TEXT is a prompt or a JSON list of messages, e.g. "
                        "router route 'Summarise: the cat sat.' or "
                        "router route '[{\"role\": \"user\", \"content\": \"hi\"}]'")
    conversation = parse_conversation(text, where="prompt")
    path = args.model
    if path is None:
        registry = Registry()
        path = registry.current()
        if path is None:
            raise ArtifactError(f"no --model given and the registry {registry.root} has no "
                                "current version",
                                hint="pass --model DIR (a folder written by `router train`)")
    model = QualityModel.load(path)
    allowed = None
    if args.models is not None:
        allowed = [m.strip() for m in args.models.split(",") if m.strip()]
        if not allowed:
            raise ConfigError("--models is empty", hint="e.g. --models gpt-4o,qwen3-32b")
    lam, floor = args.utility_lambda, args.min_quality
    decision = route_one(model, conversation, bar=args.bar, min_quality=floor,
                         utility_lambda=lam, max_cost_usd=args.max_cost_usd,
                         allowed_models=allowed, max_latency_ms=args.max_latency_ms)
    print(json.dumps(decision_json(decision, model.version or str(path)), indent=2))
    return 0


def decision_json(decision: Decision, version: str) -> dict[str, Any]:
    """The decision in the shape of the `/v1/route` response."""
    lam, floor, limit = decision.utility_lambda, decision.min_quality, decision.max_latency_ms
    if decision.quality_bar is not None:
        lam = None  # lambda(bar) is how the bar was served, not what was asked
    return {
        "request_id": "req_" + uuid.uuid4().hex,
        "model": decision.model,
        "quality_bar": decision.quality_bar,
        "expected_quality": decision.expected_quality,
        "expected_cost_usd": decision.expected_cost_usd,
        "candidates": [{"model": c.model, "expected_quality": c.expected_quality,
                        "expected_cost_usd": c.expected_cost_usd,
                        "expected_latency_ms": c.expected_latency_ms}
                       for c in decision.candidates],
        "model_version": version,
        **({"min_quality": floor} if floor is not None else {}),
        **({"utility_lambda": lam} if lam is not None else {}),
        **({"max_latency_ms": limit, "latency_limit_met": decision.latency_limit_met}
           if limit is not None else {}),
        **({"latency_reason": decision.latency_reason}
           if decision.latency_reason is not None else {}),
    }
