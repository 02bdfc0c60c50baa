"""RouterBench wide tables -> canonical rows, with their costs (see `training.importers`)."""

from __future__ import annotations

import ast
import json
from typing import Any

import numpy as np
import pandas as pd

from router.errors import DataError
from training.importers._common import (
    PathLike,
    existing_file,
    need_columns,
    read_csv,
    tokens_of,
)

__all__ = ["import_routerbench"]


def _unlist_prompt(value: Any) -> tuple[str, str | None]:
    """(text, messages JSON or None) from RouterBench's stringified-list prompts."""
    if isinstance(value, list | tuple | np.ndarray):
        items = [str(v) for v in value]
    elif isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value, None
        if not isinstance(parsed, list | tuple) or not all(isinstance(v, str) for v in parsed):
            return value, None
        items = list(parsed)
    else:
        return ("" if value is None or (isinstance(value, float) and np.isnan(value))
                else str(value)), None
    if len(items) == 1:
        return items[0], None
    # Several elements are successive user turns (RouterBench's MT-Bench rows).
    return "\n".join(items), json.dumps([{"role": "user", "content": t} for t in items],
                                        ensure_ascii=False)


def import_routerbench(src: PathLike) -> pd.DataFrame:
    """RouterBench wide table (`.pkl` or `.csv`) -> canonical rows with cost and task."""
    path = existing_file(src)
    raw = pd.read_pickle(path) if path.name.endswith((".pkl", ".pickle")) else read_csv(path)
    hint = ("RouterBench tables have sample_id, prompt, eval_name and per model "
            "<model>, <model>|total_cost, <model>|model_response")
    need_columns(path, ["sample_id", "prompt", "eval_name"], list(raw.columns), hint)
    models = [str(c)[: -len("|total_cost")] for c in raw.columns
              if str(c).endswith("|total_cost")]
    if not models:
        raise DataError(f"{path}: no <model>|total_cost columns; the file has "
                        f"{', '.join(map(str, raw.columns))}", hint=hint)
    need_columns(path, models, list(raw.columns), hint)
    unlisted = [_unlist_prompt(v) for v in raw["prompt"]]
    base = pd.DataFrame({
        "prompt_id": raw["sample_id"].astype(str),
        "prompt": [u[0] for u in unlisted],
        "messages": [u[1] for u in unlisted],
        "task": raw["eval_name"].astype(str),
    })
    if base["messages"].isna().all():
        base = base.drop(columns="messages")
    frames = []
    for model in models:
        quality = pd.to_numeric(raw[model], errors="coerce")
        response = f"{model}|model_response"
        frame = base.assign(
            model=model, quality=quality.astype("float64"),
            output_tokens=(raw[response].map(tokens_of) if response in raw.columns
                           else np.nan),
            cost_usd=pd.to_numeric(raw[f"{model}|total_cost"], errors="coerce"))
        frames.append(frame[quality.notna()])
    columns = ["prompt_id", "prompt", *(["messages"] if "messages" in base else []),
               "model", "quality", "output_tokens", "cost_usd", "task"]
    return pd.concat(frames, ignore_index=True)[columns]
