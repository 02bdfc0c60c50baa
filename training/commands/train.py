"""`router train --data FILE... --out DIR`: fit the quality model and save its artifact."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from router.cli import add_command
from router.errors import ConfigError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "train",
        help="train the LightGBM quality model on outcome tables and save an artifact",
        description="Load one or more outcome tables (CSV, CSV.gz, Parquet, JSONL; one row per "
                    "(prompt, model) with a quality in [0, 1]), fit the features and the "
                    "quality and output-token models, evaluate them on held-out prompts and "
                    "write the artifact folder (meta.json, catalog.json, features.joblib, "
                    "quality.lgb, output_tokens.lgb). The artifact's default quality bar is "
                    "the lowest bar at which routing the held-out prompts matches the best "
                    "single model's quality at no more than its cost (0.7 when that cannot be "
                    "measured). A model neither the catalog nor --prices prices gets the "
                    "effective prices learned from its rows' cost_usd and token counts, stored "
                    "in the artifact's catalog.json and listed in the summary.",
        examples=[
            "router train --data demo.csv --out models/demo",
            "router train --data ../shared/data/routellm_gsm8k.csv.gz "
            "--prices ../shared/data/prices.csv --out models/gsm8k --holdout-frac 0.2",
        ],
        handler=_run,
    )
    parser.add_argument("--data", required=True, nargs="+", metavar="FILE",
                        help="outcome table(s) or folders of them")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="artifact folder to write (replaced if it holds an artifact)")
    parser.add_argument("--prices", default=None, metavar="FILE",
                        help="prices CSV (model,input_usd_per_mtok,output_usd_per_mtok"
                             "[,context_tokens]) for models not in the catalog; without it, "
                             "such a model's prices are learned from its rows' cost_usd")
    parser.add_argument("--catalog", default=None, metavar="FILE",
                        help="model catalog TOML (default: $ROUTER_CATALOG or "
                             "models/catalog.toml)")
    parser.add_argument("--holdout-frac", type=float, default=0.1, metavar="F",
                        help="share of prompts held out for metrics and the bar's "
                             "calibration (default 0.1; 0: no held-out metrics)")
    parser.add_argument("--refit", action="store_true",
                        help="after the held-out prompts have measured the model and "
                             "calibrated the bar, refit it on every prompt (more data for "
                             "the served model; they can no longer be scored with router "
                             "eval --holdout-only)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed for the split and LightGBM (default 0)")


def _run(args: argparse.Namespace) -> int:
    from router.catalog import load_catalog, load_prices_csv
    from training.data import load_priced_outcomes
    from training.train import train

    if not 0.0 <= args.holdout_frac < 1.0:
        raise ConfigError(f"--holdout-frac must be in [0, 1), got {args.holdout_frac}")
    catalog = load_catalog(args.catalog)
    prices = load_prices_csv(args.prices) if args.prices else None
    priced = load_priced_outcomes(args.data, catalog=catalog, prices=prices)
    model = train(priced.table, args.out, catalog=priced.catalog,
                  holdout_frac=args.holdout_frac, seed=args.seed, progress=sys.stderr.isatty(),
                  learned_prices=priced.learned, refit=args.refit)
    print(_summary(model, args.out))
    return 0


def _summary(model: Any, out: str) -> str:
    meta = model.metadata
    lines = [
        f"trained on {meta['n_rows']:,} rows: {meta['n_prompts']:,} prompts x "
        f"{len(meta['models'])} models ({', '.join(meta['models'])})",
        (f"prompts: {meta['n_holdout_prompts']:,} held out to measure the model and calibrate "
         f"the bar, then refit on all of them ({meta['n_train_prompts']:,} train, "
         f"{meta['n_valid_prompts']:,} early-stopping validation); "
         if meta.get("refit_on_all_prompts") else
         f"prompts: {meta['n_train_prompts']:,} train, {meta['n_valid_prompts']:,} early-stopping"
         f" validation, {meta['n_holdout_prompts']:,} held out; ")
        + f"{meta['best_iteration']} boosting rounds",
    ]
    metrics = meta.get("metrics") or {}
    if metrics:
        parts = [f"log loss {metrics['log_loss']:.4f}", f"Brier {metrics['brier']:.4f}",
                 f"ECE {metrics['ece']:.4f}"]
        if "auc" in metrics:
            parts.append(f"AUC {metrics['auc']:.4f}")
        if "output_tokens_mae" in metrics:
            parts.append(f"output-token MAE {metrics['output_tokens_mae']:.1f}")
        lines.append("held out: " + ", ".join(parts))
        if "best_single_model" in metrics:
            routed = ""
            if "routed_cost_usd_at_default_bar" in metrics:
                share = (metrics["routed_cost_usd_at_default_bar"]
                         / max(metrics["best_single_cost_usd"], 1e-12))
                routed = (f"; routed at the default bar: quality "
                          f"{metrics['routed_quality_at_default_bar']:.3f} at {share:.0%} of "
                          "its cost")
            lines.append(f"best single model on the {meta['n_holdout_prompts']:,} held-out "
                         f"prompts (as the bar's calibration estimates it): "
                         f"{metrics['best_single_model']}, quality "
                         f"{metrics['best_single_quality']:.3f} at "
                         f"${metrics['best_single_cost_usd']:.6f}/request{routed}")
    else:
        lines.append("held out: nothing (--holdout-frac 0), no metrics")
    for name, price in (meta.get("learned_prices") or {}).items():
        lines.append(f"prices learned from cost_usd: {name} ${price['input_usd_per_mtok']:.4g} "
                     f"in, ${price['output_usd_per_mtok']:.4g} out per 1M tokens "
                     f"({price['rows']:,} rows, {price['method']})")
    lines.append(f"default bar {meta['default_bar']:.2f} ({meta['default_bar_source']})")
    lines.append(f"saved {meta['version_id']} to {out}")
    return "\n".join(lines)
