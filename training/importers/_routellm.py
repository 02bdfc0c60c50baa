"""RouteLLM evaluation CSVs -> canonical rows, quality 0/1 (see `training.importers`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from router.errors import DataError
from training.importers._common import (
    PathLike,
    existing_file,
    need_columns,
    prompt_hash_id,
    read_csv,
    tokens_of,
)

__all__ = ["import_routellm"]

_ROUTELLM_IDS = ("prompt_id", "id", "question_id", "sample_id")
_TRUTHY = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}


def _as_outcome(series: pd.Series) -> pd.Series | None:
    """0/1 floats if every non-empty value is a boolean or 0/1, else None (not a model)."""
    values = series.dropna()
    if values.empty:
        return None
    if values.dtype == bool:
        return series.astype("float64")
    if pd.api.types.is_numeric_dtype(values):
        return series.astype("float64") if values.isin([0, 1]).all() else None
    mapped = series.map(lambda v: _TRUTHY.get(str(v).strip().lower(), -1.0)
                        if pd.notna(v) else np.nan)
    return None if (mapped == -1.0).any() else mapped.astype("float64")


def _routellm_task(path: Path) -> str:
    stem = path.name.split(".")[0].removesuffix("_responses")
    return stem.replace("_", "/", 1) if stem.startswith("mmlu_") else stem


def import_routellm(src: PathLike, *, task: str | None = None,
                    rename: Mapping[str, str] | None = None) -> pd.DataFrame:
    """RouteLLM eval CSV(s) (a file or a folder of them) -> canonical rows, quality 0/1."""
    root = existing_file(src)
    files = (sorted(p for p in root.rglob("*") if p.name.endswith((".csv", ".csv.gz")))
             if root.is_dir() else [root])
    if not files:
        raise DataError(f"{root}: no .csv files in this folder",
                        hint="point SRC at RouteLLM's mmlu/responses/ or a *_responses.csv")
    frames = [_routellm_file(p, task, rename or {}) for p in files]
    return pd.concat(frames, ignore_index=True)


def _routellm_file(path: Path, task: str | None, rename: Mapping[str, str]) -> pd.DataFrame:
    raw = read_csv(path)
    prompt_col = next((c for c in ("prompt", "Prompt") if c in raw.columns), None)
    if prompt_col is None:
        need_columns(path, ["prompt"], list(raw.columns),
              "RouteLLM files have a `prompt` column and one True/False column per model")
    id_col = next((c for c in _ROUTELLM_IDS if c in raw.columns), None)
    the_task = task or _routellm_task(path)
    prompts = raw[prompt_col].astype(str)
    if id_col:
        ids = raw[id_col].astype(str)
    else:
        prefix = the_task.split("/")[0]
        ids = prompts.map(lambda p: prompt_hash_id(prefix, p))
    skip = {prompt_col, id_col}
    frames = []
    for column in raw.columns:
        if column in skip or str(column).endswith("_response"):
            continue
        quality = _as_outcome(raw[column])
        if quality is None:
            continue  # answers, subjects, notes: not a model's outcome
        response = f"{column}_response"
        out_tokens = (raw[response].map(tokens_of) if response in raw.columns
                      else pd.Series(np.nan, index=raw.index))
        frame = pd.DataFrame({"prompt_id": ids, "prompt": prompts,
                              "model": rename.get(str(column), str(column)),
                              "quality": quality, "output_tokens": out_tokens,
                              "task": the_task})
        frames.append(frame[quality.notna()])
    if not frames:
        raise DataError(f"{path}: no model columns (True/False or 0/1) found; columns are "
                        f"{', '.join(map(str, raw.columns))}",
                        hint="RouteLLM files have one True/False column per model")
    return pd.concat(frames, ignore_index=True)
