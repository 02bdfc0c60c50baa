"""`router fake-upstream`: run the simulated OpenAI-compatible provider locally."""

from __future__ import annotations

import argparse
import logging
import math

from router.cli import add_command
from router.errors import ConfigError
from router.fake import bind_socket

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "fake-upstream",
        help="run a local OpenAI-compatible fake provider (tests, demos, simulations)",
        description="Serve POST /v1/chat/completions (JSON and SSE streaming) and "
                    "GET /v1/models with deterministic answers, configurable latency and "
                    "failures. Change behaviour at run time with POST /_control, e.g. "
                    "{\"model\": \"gpt-4o\", \"fail_status\": 503} or {\"model\": \"gpt-4o\", "
                    "\"slowdown\": 5}. With --outcomes, answers carry the recorded quality of "
                    "(prompt, model) in `router_quality` and the x-fake-quality header, and "
                    "with --latency-scale they take the table's recorded latency_ms / ttft_ms "
                    "times that factor.",
        examples=[
            "router fake-upstream --port 8100",
            "router fake-upstream --port 8100 --latency-ms 200 --error-rate 0.05 --fail gpt-4o",
            "router fake-upstream --port 8100 --outcomes demo.csv --judge judge",
            "router fake-upstream --port 8100 --outcomes demo.csv --latency-scale 0.1",
            "router fake-upstream --port 8100 --model-latency gpt-4o=900 glm-4-plus=150",
            "router serve --upstream-base-url http://127.0.0.1:8100/v1",
        ],
        handler=run,
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay before each answer, in ms")
    parser.add_argument("--model-latency", nargs="+", default=[], metavar="MODEL=MS",
                        help="delay before each answer of one model, in ms (over --latency-ms)")
    parser.add_argument("--latency-scale", type=float, default=None, metavar="F",
                        help="answer after the --outcomes table's recorded latency_ms and "
                             "ttft_ms times F (e.g. 0.1: ten times faster than recorded)")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0,
                        help="delay between stream chunks, in ms")
    parser.add_argument("--error-rate", type=float, default=0.0,
                        help="share of requests answered with 429/5xx (seeded), in [0, 1]")
    parser.add_argument("--fail", nargs="+", default=[], metavar="MODEL",
                        help="models that always fail (with --fail-status)")
    parser.add_argument("--fail-status", type=int, default=503,
                        help="status for --fail models (default %(default)s)")
    parser.add_argument("--retry-after", type=float, default=1.0,
                        help="Retry-After seconds sent with 429/503 (default %(default)s)")
    parser.add_argument("--outcomes", metavar="FILE",
                        help="outcome table to answer from: any table `router train` reads "
                             "(CSV, CSV.gz, Parquet, JSONL, or a folder of them)")
    parser.add_argument("--catalog", metavar="FILE",
                        help="catalog TOML for context windows (default: the router's catalog)")
    parser.add_argument("--judge", nargs="+", default=[], metavar="MODEL",
                        help="models that answer as a judge: 'Rating: [[N]]'")
    parser.add_argument("--judge-scale", type=int, default=10, choices=range(2, 11),
                        metavar="N", help="judge ratings run 1..N (default %(default)s; "
                                          "5 for `router collect --grader judge:MODEL`)")
    parser.add_argument("--seed", type=int, default=0, help="seed for injected errors")


def _model_latencies(items: list[str]) -> dict[str, float]:
    """`MODEL=MS` pairs as a mapping; `ConfigError` naming a malformed one."""
    out: dict[str, float] = {}
    for item in items:
        model, sep, value = item.rpartition("=")
        try:
            out[model] = float(value) if sep and model else math.nan
        except ValueError:
            out[model] = math.nan
        if not out[model] >= 0:
            raise ConfigError(f"--model-latency {item!r} is not MODEL=MS with MS >= 0",
                              hint="e.g. --model-latency gpt-4o=900 glm-4-plus=150")
    return out


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from router.catalog import load_catalog
    from router.fake import create_fake_upstream

    if not 0.0 <= args.error_rate <= 1.0:
        raise ConfigError(f"--error-rate must be in [0, 1], got {args.error_rate}",
                          hint="e.g. --error-rate 0.05 for 5% failures")
    if args.latency_scale is not None and not args.outcomes:
        raise ConfigError("--latency-scale scales the latencies an outcome table recorded, "
                          "and no --outcomes was given",
                          hint="add --outcomes FILE (with latency_ms / ttft_ms columns), or "
                               "use --latency-ms / --model-latency for fixed delays")
    if args.catalog:
        catalog = load_catalog(args.catalog)
    else:
        try:
            catalog = load_catalog()
        except ConfigError as exc:  # no catalog installed: run without context windows
            log.warning("no catalog (%s); context windows are not enforced", exc.message)
            catalog = None
    app = create_fake_upstream(
        latency_ms=args.latency_ms, chunk_delay_ms=args.chunk_delay_ms,
        error_rate=args.error_rate, fail_models=args.fail, fail_status=args.fail_status,
        retry_after_s=args.retry_after, outcomes=args.outcomes, catalog=catalog,
        judge_models=args.judge, judge_scale=args.judge_scale, seed=args.seed,
        model_latency_ms=_model_latencies(args.model_latency), latency_scale=args.latency_scale,
    )
    sock = bind_socket(args.host, args.port)
    print(f"fake upstream on http://{args.host}:{args.port}/v1 (Ctrl-C to stop)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
