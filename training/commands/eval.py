"""`router eval --model DIR --data FILE`: how good is a trained router, against baselines.

Prints a table (or `--json`, one object), optionally a PNG (`--plot`). Rows are
priced with the prices stored in the artifact, so the evaluation uses the costs the
model was trained to trade off, unless `--prices` says otherwise.

Evaluating on the training data gives optimistic, in-sample figures; the command
compares the data's fingerprint with the artifact's training data hash and says so,
and `--holdout-only` restricts the evaluation to the prompts the artifact held out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from router.cli import add_command
from router.errors import ConfigError, DataError

__all__ = ["register", "format_report"]

IN_SAMPLE_NOTE = "the data are the artifact's training data: figures are in-sample and optimistic"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "eval",
        help="score a trained router on an outcome table against single models, random, "
             "kNN and the oracle",
        description="Sweep the quality bar over the prompts of an outcome table, route each "
                    "prompt on the model's predictions and score it with the realised quality "
                    "and cost. Reports AIQ against the Zero router (single models mixed at "
                    "random), the random and kNN routers, the oracle, the cost to reach the "
                    "best single model's quality, the quality at 10% of its cost and, with two "
                    "models, RouteLLM's APGR and CPT(50%)/CPT(80%).",
        examples=[
            "router eval --model models/demo --data demo_test.csv",
            "router eval --model models/demo --data demo.csv --holdout-only --plot eval.png",
            "router eval --model models/mmlu --data mmlu_test.csv.gz --prices prices.csv --json",
            "router eval --model models/demo --data test.csv --train-data train.csv",
            "router eval --model models/demo --data demo_test.csv --max-latency-ms 4000",
        ],
        handler=_run,
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="trained artifact folder")
    parser.add_argument("--data", required=True, nargs="+", metavar="FILE",
                        help="outcome table(s) to evaluate on (every model's outcome per prompt)")
    parser.add_argument("--prices", metavar="FILE", default=None,
                        help="prices.csv to price rows and predictions with (default: the "
                             "prices stored in the artifact)")
    parser.add_argument("--train-data", nargs="+", metavar="FILE", default=None,
                        help="training outcomes for the kNN baseline (default: cross-fitted on "
                             "the evaluated prompts)")
    parser.add_argument("--holdout-only", action="store_true",
                        help="evaluate only on the prompts the artifact held out in training")
    parser.add_argument("--bars", metavar="LIST", default=None,
                        help="comma-separated quality bars to sweep (default: quantiles of the "
                             "predicted quality, plus 0 and 1)")
    parser.add_argument("--knn-k", type=int, default=None, metavar="K",
                        help="neighbours of the kNN baseline (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kNN cross-fit folds")
    parser.add_argument("--max-latency-ms", type=float, default=None, metavar="MS",
                        help="also score the default rule under this latency limit: models "
                             "expected slower are excluded first; reports the curve under "
                             "the limit and the share of requests that met it (realised, "
                             "from the data's latency_ms)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help="write the cost/quality figure to this PNG")


def _parse_bars(text: str | None) -> list[float] | None:
    if text is None:
        return None
    bars = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise ConfigError(f"--bars: {item!r} is not a number",
                              hint="e.g. --bars 0.5,0.7,0.9") from None
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"--bars: {value} is outside [0, 1]",
                              hint="quality bars are in [0, 1]")
        bars.append(value)
    return bars


def _meta_get(meta: Mapping[str, Any], *keys: str) -> Any:
    """First present key, also looking one level down (e.g. meta["training_data"]["hash"])."""
    for key in keys:
        node: Any = meta
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return node
    return None


def _run(args: argparse.Namespace) -> int:
    from router.catalog import load_prices_csv
    from router.policy import validate_max_latency
    from router.predictor import QualityModel
    from training.data import load_outcomes
    from training.evaluate import evaluate
    from training.knn import DEFAULT_KNN_K

    bars = _parse_bars(args.bars)
    k = DEFAULT_KNN_K if args.knn_k is None else args.knn_k
    if k < 1:
        raise ConfigError(f"--knn-k must be at least 1, got {k}")
    if args.plot and not str(args.plot).lower().endswith(".png"):
        raise ConfigError(f"--plot {args.plot}: the figure is written as PNG",
                          hint="give a file name ending in .png")
    max_latency = validate_max_latency(args.max_latency_ms, name="--max-latency-ms")
    model = QualityModel.load(args.model)
    if max_latency is not None and not model.predicts_latency:
        raise ConfigError(f"--max-latency-ms: {args.model} predicts no latency (it was "
                          "trained on outcomes without latency_ms)",
                          hint="retrain on an outcome table with a latency_ms column "
                               "(router demo-data writes one)")
    if args.prices:
        # Realised and predicted costs must use the same prices, or the router is
        # judged on a trade-off it was never asked to make.
        model = model.with_prices(load_prices_csv(args.prices))
    catalog = model.catalog_
    table = load_outcomes(args.data, catalog=catalog)
    train_table = (load_outcomes(args.train_data, catalog=catalog)
                   if args.train_data else None)
    notes: list[str] = []
    prompt_ids = _evaluated_prompts(args, model, table, notes)
    report = evaluate(model, table, train_table=train_table, prompt_ids=prompt_ids, bars=bars,
                      seed=args.seed, knn_k=k, progress=sys.stderr.isatty(),
                      max_latency_ms=max_latency)
    report.notes[:0] = notes
    if args.plot:
        from training.plots import eval_title, plot_report

        plot_report(report, args.plot,
                    title=eval_title(model.version or Path(args.model).name, args.data))
    if args.json:
        print(report.to_json(indent=2))
    else:
        print(format_report(report.to_dict(), model_dir=args.model))
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def _evaluated_prompts(args: argparse.Namespace, model: Any, table: Any,
                       notes: list[str]) -> list[str] | None:
    """The prompts `--holdout-only` restricts to (None: all), noting (and warning)
    when the data are the artifact's own training data."""
    from training.data import table_fingerprint

    meta: Mapping[str, Any] = getattr(model, "metadata", {}) or {}
    if args.holdout_only:
        prompt_ids = _meta_get(meta, "holdout_prompt_ids", "holdout.prompt_ids",
                               "heldout_prompt_ids")
        if not prompt_ids:
            raise DataError(f"{args.model}: the artifact does not record which prompts it held "
                            f"out, so --holdout-only cannot be applied",
                            hint="evaluate on a separate test file instead")
        if meta.get("refit_on_all_prompts"):
            raise DataError(f"{args.model}: the prompts it held out were folded into the model "
                            f"after they measured it, so they are not unseen any more",
                            hint="train without --refit to score them, or evaluate on a "
                                 "separate test file")
        notes.append(f"evaluated on the {len(prompt_ids)} prompts the artifact held out")
        return list(prompt_ids)
    trained_on = _meta_get(meta, "training_data_hash", "training_data.hash", "data_hash")
    if trained_on and trained_on == table_fingerprint(table):
        held = [] if meta.get("refit_on_all_prompts") else (
            _meta_get(meta, "holdout_prompt_ids") or [])
        fix = (f"add --holdout-only to score the {len(held)} prompts it held out" if held
               else "evaluate on outcomes it was not trained on")
        notes.append(f"{IN_SAMPLE_NOTE} ({fix})")
        print(f"warning: {IN_SAMPLE_NOTE} ({fix})", file=sys.stderr)
    return None


def _usd(value: float) -> str:
    return f"${value:.6f}" if value < 0.01 else f"${value:.4f}"


def _pct(value: float | None) -> str:
    return "not reached" if value is None else f"{100 * value:.1f}%"


def format_report(data: Mapping[str, Any], *, model_dir: str = "") -> str:
    """The human-readable table of an `EvalReport.to_dict()`."""
    from training.evaluate import headline

    lines = [f"router eval{' of ' + model_dir if model_dir else ''}: {data['n_prompts']} "
             f"prompts, {len(data['models'])} models"]
    lines += [f"note: {n}" for n in data["notes"]]
    width = max(24, *(len(m["model"]) for m in data["single_models"]))
    lines.append("")
    lines.append(f"  {'':<{width}}  {'cost/request':>13}  {'quality':>7}")
    for single in sorted(data["single_models"], key=lambda s: s["cost_usd"]):
        lines.append(f"  {single['model']:<{width}}  {_usd(single['cost_usd']):>13}  "
                     f"{single['quality']:>7.4f}")
    lines.append(f"  {'oracle':<{width}}  {_usd(data['oracle']['cost_usd']):>13}  "
                 f"{data['oracle']['quality']:>7.4f}")
    lines.append("")
    lines.append("  router curve (bar -> cost/request, quality):")
    curve = data["curve"]
    step = max(1, len(curve) // 10)
    shown = curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else [])
    for point in shown:
        lines.append(f"    bar {point['bar']:.3f}  {_usd(point['cost_usd']):>13}  "
                     f"{point['quality']:.4f}")
    lines.append("")
    gain = data["aiq"] - data["zero_router_aiq"]
    rules = ""
    if data.get("aiq_utility") is not None:
        rules = (f" [hard floor {data['aiq_floor']:.4f}, "
                 f"explicit lambda {data['aiq_utility']:.4f}]")
    parts = [f"router {data['aiq']:.4f}{rules}",
             f"Zero router {data['zero_router_aiq']:.4f} (router {gain:+.4f})"]
    if data.get("knn"):
        parts.append(f"kNN {data['knn']['aiq']:.4f}")
    parts.append(f"random {data['random']['aiq']:.4f}")
    lines.append("  AIQ: " + ", ".join(parts))
    reach = data["cost_at_best_single_quality"]
    lines.append(f"  cost to reach the best single model's quality on these prompts "
                 f"({data['best_single_model']}): "
                 + ("not reached on this curve" if reach is None
                    else f"{_pct(reach)} of its cost"))
    q10 = data["quality_at_10pct_cost"]
    lines.append("  quality at 10% of the best single model's cost: "
                 + ("not reachable" if q10 is None else f"{q10:.4f}"))
    point = data.get("default_point")
    if point:
        lines.append(f"  at the model's default bar {point['bar']:.2f}: "
                     f"{_usd(point['cost_usd'])}/request, quality {point['quality']:.4f}")
    lines += ["", "summary: " + headline(data)]
    if data.get("latency"):
        lines += _latency_lines(data["latency"])
    tm = data.get("two_model")
    if tm:
        lines.append(f"  two models ({tm['weak']} weak, {tm['strong']} strong), strong-call "
                     f"share needed:")
        lines.append(f"    {'':<8} {'APGR':>6} {'CPT(50%)':>11} {'CPT(80%)':>11}")
        for name in ("router", "knn", "random", "oracle"):
            if name in tm:
                row = tm[name]
                lines.append(f"    {name:<8} {row['apgr']:>6.3f} {_pct(row['cpt50']):>11} "
                             f"{_pct(row['cpt80']):>11}")
    return "\n".join(lines)


def _latency_lines(section: Mapping[str, Any]) -> list[str]:
    """The latency-limit section of `format_report`."""
    limit = section["max_latency_ms"]
    lines = ["", f"  under a latency limit of {limit:g} ms (models expected slower excluded "
                 f"first; met = realised latency_ms within the limit):"]
    for single in section["single_models"]:
        met = single["met_share"]
        lines.append(f"    {single['model']:<24} P50 {single['p50_ms']:>8.0f} ms  P95 "
                     f"{single['p95_ms']:>8.0f} ms  P99 {single['p99_ms']:>8.0f} ms  met "
                     f"{_pct(met) if met is not None else 'unknown'}")
    for key, name in (("default_point_without_limit", "without the limit"),
                      ("default_point", "with the limit")):
        point = section.get(key)
        if point:
            met = point["met_share"]
            lines.append(f"  default bar {point['bar']:.2f} {name}: "
                         f"{_usd(point['cost_usd'])}/request, quality {point['quality']:.4f}, "
                         f"met {_pct(met) if met is not None else 'unknown'}")
    lines.append(f"  AIQ under the limit {section['aiq']:.4f}; fastest model "
                 f"{section['fastest_model']} (P95 {section['fastest_p95_ms']:.0f} ms); "
                 f"{_pct(section['fallback_share'])} of requests had no model expected within "
                 f"the limit and went to the fastest")
    return lines
