"""`router predict --model DIR --data FILE --bars 0.5,0.7 --out FILE.csv`: batch decisions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from router.cli import add_command
from router.errors import ConfigError, DataError

__all__ = ["register", "parse_bars"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "predict",
        help="route every prompt of a table at one or more quality bars, write a CSV",
        description="Score every prompt of --data with a trained model and write one row per "
                    "(prompt_id, bar): prompt_id, bar, model, expected_quality, "
                    "expected_cost_usd: the decision of the default rule, the one `router "
                    "route` and the server run (a bar is a target mean quality; the "
                    "artifact's calibration turns it into a cost weight lambda and each "
                    "prompt takes argmax quality - lambda * cost). --data is an outcome "
                    "table (candidates: the models it contains, which must all be in the "
                    "artifact) or a table of prompts only (prompt_id plus prompt or messages; "
                    "candidates: every model of the artifact). Costs use the artifact's prices "
                    "unless --prices is given.",
        examples=[
            "router predict --model models/demo --data demo.csv --bars 0.5,0.7 --out routes.csv",
            "router predict --model models/demo --data prompts.jsonl --bars 0.8 "
            "--out routes.csv --scores scores.csv",
        ],
        handler=_run,
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="trained artifact folder")
    parser.add_argument("--data", required=True, metavar="FILE",
                        help="outcome table or prompts table (CSV, CSV.gz, Parquet, JSONL)")
    parser.add_argument("--bars", required=True, metavar="LIST",
                        help="comma-separated quality bars in [0, 1], e.g. 0.5,0.7")
    parser.add_argument("--out", required=True, metavar="FILE.csv", help="decisions CSV to write")
    parser.add_argument("--scores", default=None, metavar="FILE.csv",
                        help="also write prompt_id, model, expected_quality, expected_cost_usd "
                             "for every (prompt, model) pair")
    parser.add_argument("--prices", default=None, metavar="FILE",
                        help="prices CSV to cost predictions with (default: the artifact's)")


def parse_bars(text: str) -> list[float]:
    """'0.5,0.7' -> [0.5, 0.7]; a value that is not a number in [0, 1] is a ConfigError."""
    bars = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = float(item)
        except ValueError:
            value = float("nan")
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"--bars: {item!r} is not a quality bar in [0, 1]",
                              hint="pass comma-separated numbers, e.g. --bars 0.5,0.7")
        bars.append(value)
    return bars


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from router.catalog import load_prices_csv
    from router.policy import choose
    from router.predictor import QualityModel

    bars = parse_bars(args.bars)
    model = QualityModel.load(args.model)
    if args.prices:
        model = model.with_prices(load_prices_csv(args.prices))
    prompt_ids, convs, candidates = _read_prompts(args.data, model, args.model)
    pred = model.predict(convs, models=candidates)
    calibration = model.bar_calibration
    n, m = pred.quality.shape
    decisions = []
    for bar in bars:
        chosen = choose(pred.quality, pred.cost_usd, bar=bar, calibration=calibration)
        decisions.append(pd.DataFrame({
            "prompt_id": prompt_ids,
            "bar": bar,
            "model": np.asarray(pred.models, dtype=object)[chosen],
            "expected_quality": pred.quality[np.arange(n), chosen],
            "expected_cost_usd": pred.cost_usd[np.arange(n), chosen],
            "_order": np.arange(n),
        }))
    table = (pd.concat(decisions, ignore_index=True)
             .sort_values(["_order", "bar"], kind="stable").drop(columns="_order"))
    _write_csv(table, args.out)
    print(f"wrote {len(table)} decisions ({n} prompts x {len(bars)} bars, {m} candidate "
          f"models) to {args.out}")
    for bar in bars:
        rows = table[table["bar"] == bar]
        top = rows["model"].value_counts(normalize=True).head(3)
        mix = ", ".join(f"{name} {share:.0%}" for name, share in top.items())
        print(f"  bar {bar:g}: expected quality {rows['expected_quality'].mean():.3f}, "
              f"expected cost ${rows['expected_cost_usd'].mean():.6f}/request; {mix}")
    if args.scores:
        scores = pd.DataFrame({
            "prompt_id": np.repeat(np.asarray(prompt_ids, dtype=object), m),
            "model": np.tile(np.asarray(pred.models, dtype=object), n),
            "expected_quality": pred.quality.ravel(),
            "expected_cost_usd": pred.cost_usd.ravel(),
        })
        _write_csv(scores, args.scores)
        print(f"wrote {len(scores)} scores to {args.scores}")
    return 0


def _read_prompts(path: str, model: Any, model_dir: str) -> tuple[list[str], list[Any], Any]:
    """Prompt ids, conversations and candidate models (None: all) of the data file."""
    from router.conversation import parse_conversation
    from training.data import conversations, load_outcomes, read_table

    raw = read_table(path)
    if "model" in raw.columns:
        unknown = sorted(set(raw["model"].dropna().astype(str)) - set(model.models_))
        if unknown:
            raise DataError(f"{path}: model(s) {', '.join(unknown)} are not in the artifact "
                            f"{model_dir}",
                            hint=f"the artifact knows {', '.join(model.models_)}; drop those "
                                 "rows or retrain with them")
        table = load_outcomes(path, catalog=model.catalog_)
        ids, convs = conversations(table)
        present = set(table["model"])
        return ids, convs, [m for m in model.models_ if m in present]
    text_col = "messages" if "messages" in raw.columns else "prompt"
    missing = [c for c in ("prompt_id", text_col) if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}",
                        hint="expected prompt_id and prompt (or messages), or an outcome table")
    raw = raw.drop_duplicates("prompt_id")
    ids = [str(p) for p in raw["prompt_id"]]
    convs = []
    for row, (pid, value) in enumerate(zip(ids, raw[text_col], strict=True), start=1):
        if isinstance(value, str) and text_col == "messages":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise DataError(f"{path}, row {row}: messages is not valid JSON",
                                hint="messages must be a JSON list of chat messages") from None
        convs.append(parse_conversation(value, where=f"{path}, row {row} (prompt_id {pid!r})"))
    return ids, convs, None


def _write_csv(table: Any, path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(target, index=False)
