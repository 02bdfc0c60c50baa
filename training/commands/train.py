"""`router train --data FILE... --out DIR`: fit the quality model and save its artifact."""

from __future__ import annotations

import argparse
import contextlib
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
                    "the best single model's mean quality on the held-out prompts, as the "
                    "bar's calibration estimates it. A model neither the catalog nor --prices "
                    "prices gets the effective prices learned from its rows' cost_usd and "
                    "token counts, stored in the artifact's catalog.json and listed in the "
                    "summary. With --dask the quality booster trains on a Dask cluster "
                    "(LightGBM's Dask integration over Parquet partitions written for it), "
                    "with the same held-out prompts, metrics and bar calibration.",
        examples=[
            "router train --data demo.csv --out models/demo",
            "router train --data ../shared/data/routellm_gsm8k.csv.gz "
            "--prices ../shared/data/prices.csv --out models/gsm8k --holdout-frac 0.2",
            "router train --data demo.csv --out models/demo --dask local --dask-workers 4",
            "router train --data big/ --out models/big --dask tcp://10.0.0.5:8786 "
            "--dask-partitions /shared/router-parts",
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
    add_dask_arguments(parser)


def add_dask_arguments(parser: argparse.ArgumentParser) -> None:
    """--dask, --dask-workers, --dask-partitions (for `router train` and `router retrain`)."""
    parser.add_argument("--dask", metavar="local|ADDRESS", default=None,
                        help="train the quality booster on a Dask cluster: 'local' starts "
                             "one on this machine, an address (tcp://host:8786) uses a "
                             "running scheduler; needs dask[distributed]")
    parser.add_argument("--dask-workers", metavar="N", type=int, default=2,
                        help="with --dask local: worker processes (default 2)")
    parser.add_argument("--dask-partitions", metavar="DIR", default=None,
                        help="with --dask: where to write the Parquet partitions, a folder "
                             "every worker can read (each run uses a temporary subfolder, "
                             "removed afterwards; default: the system's temporary folder, "
                             "enough for a cluster on this machine)")


def dask_from_args(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    """The Dask client `--dask` asks for (None without it), as a context manager."""
    if args.dask is None:
        if args.dask_partitions is not None:
            raise ConfigError("--dask-partitions needs --dask",
                              hint="e.g. --dask local --dask-partitions /tmp/parts")
        return contextlib.nullcontext(None)
    from training.distributed import dask_client

    return dask_client(args.dask, workers=args.dask_workers)


def _run(args: argparse.Namespace) -> int:
    from router.catalog import load_catalog, load_prices_csv
    from training.data import load_priced_outcomes
    from training.train import train

    if not 0.0 <= args.holdout_frac < 1.0:
        raise ConfigError(f"--holdout-frac must be in [0, 1), got {args.holdout_frac}")
    catalog = load_catalog(args.catalog)
    prices = load_prices_csv(args.prices) if args.prices else None
    priced = load_priced_outcomes(args.data, catalog=catalog, prices=prices)
    with dask_from_args(args) as dask:
        model = train(priced.table, args.out, catalog=priced.catalog,
                      holdout_frac=args.holdout_frac, seed=args.seed,
                      progress=sys.stderr.isatty(), learned_prices=priced.learned,
                      refit=args.refit, dask=dask,
                      dask_options={"partitions_dir": args.dask_partitions})
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
    if meta.get("trained_with") == "dask":
        lines.append(f"trained on a Dask cluster: {meta['dask_workers']} worker(s), "
                     f"{meta['partitions']} Parquet partition(s); features fitted on "
                     f"{meta['feature_sample_prompts']:,} sampled prompts")
    metrics = meta.get("metrics") or {}
    if "log_loss" not in metrics:
        lines.append("held out: nothing (--holdout-frac 0), no metrics")
    else:
        parts = [f"log loss {metrics['log_loss']:.4f}", f"Brier {metrics['brier']:.4f}",
                 f"ECE {metrics['ece']:.4f}"]
        if "auc" in metrics:
            parts.append(f"AUC {metrics['auc']:.4f}")
        if "output_tokens_mae" in metrics:
            parts.append(f"output-token MAE {metrics['output_tokens_mae']:.1f}")
        lines.append("held out: " + ", ".join(parts))
    if "best_single_model" in metrics:
        where = (f"the {meta['n_holdout_prompts']:,} held-out prompts"
                 if meta.get("n_holdout_prompts") else
                 (meta.get("bar_calibration") or {}).get("source") or "calibration prompts")
        routed = ""
        if "routed_cost_usd_at_default_bar" in metrics:
            share = (metrics["routed_cost_usd_at_default_bar"]
                     / max(metrics["best_single_cost_usd"], 1e-12))
            routed = (f"; routed at the default bar: quality "
                      f"{metrics['routed_quality_at_default_bar']:.3f} at {share:.0%} of "
                      "its cost")
        lines.append(f"best single model on {where} (as the bar's calibration "
                     f"estimates it): {metrics['best_single_model']}, quality "
                     f"{metrics['best_single_quality']:.3f} at "
                     f"${metrics['best_single_cost_usd']:.6f}/request{routed}")
    for name, price in (meta.get("learned_prices") or {}).items():
        lines.append(f"prices learned from cost_usd: {name} ${price['input_usd_per_mtok']:.4g} "
                     f"in, ${price['output_usd_per_mtok']:.4g} out per 1M tokens "
                     f"({price['rows']:,} rows, {price['method']})")
    lines.append(_latency_line(meta))
    lines.append(f"default bar {meta['default_bar']:.2f} ({meta['default_bar_source']})")
    lines.append(f"saved {meta['version_id']} to {out}")
    return "\n".join(lines)


def _latency_line(meta: dict[str, Any]) -> str:
    """Which latency model was fitted, and how well it held out."""
    kind = meta.get("latency_model", "none")
    if kind == "none":
        return ("latency: not predicted (the data have no latency_ms); a latency limit "
                "will be refused")
    quantile = f"P{round(100 * meta.get('latency_quantile', 0.95), 1):g}"
    how = ("LightGBM on log latency per (prompt, model)" if kind == "booster"
           else f"each model's own {quantile} (too few timed rows for a booster)")
    metrics = meta.get("metrics") or {}
    held = ""
    if "latency_quantile_coverage" in metrics:
        held = (f"; held out: {metrics['latency_quantile_coverage']:.1%} of calls under the "
                f"predicted {quantile}, log-latency MAE "
                f"{metrics['latency_log_mae']:.3f}")
    ttft = meta.get("ttft_model", "none")
    return (f"latency: {quantile} from {how}; time to first token: "
            f"{'not predicted' if ttft == 'none' else ttft}{held}")
