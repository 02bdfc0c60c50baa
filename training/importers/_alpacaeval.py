"""AlpacaEval pairwise annotations -> a win score per (instruction, generator)."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from router.errors import DataError
from training.importers._common import (
    PathLike,
    existing_file,
    prompt_hash_id,
    tokens_of,
)

__all__ = ["import_alpacaeval"]

log = logging.getLogger(__name__)


def import_alpacaeval(src: PathLike) -> pd.DataFrame:
    """AlpacaEval `annotations.json` -> mean win score per (instruction, generator)."""
    path = existing_file(src)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})",
                        hint="expected AlpacaEval's annotations.json (a JSON list)") from None
    if not isinstance(records, list) or not records:
        raise DataError(f"{path}: expected a non-empty JSON list of annotations")
    required = ["instruction", "output_1", "output_2", "generator_1", "generator_2",
                "preference"]
    rows: list[dict[str, Any]] = []
    skipped = 0
    for index, rec in enumerate(records):
        where = f"{path}, annotation {index + 1}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object")
        missing = [k for k in required if k not in rec]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)}; it has "
                            f"{', '.join(rec)}", hint=f"each annotation needs "
                            f"{', '.join(required)}")
        pref = rec["preference"]
        if pref is None or (isinstance(pref, float) and np.isnan(pref)):
            skipped += 1
            continue
        if isinstance(pref, bool) or not isinstance(pref, int | float) or not 1 <= pref <= 2:
            raise DataError(f"{where}: preference is {pref!r}",
                            hint="preference must be in [1, 2]: 1 = output_1 wins, "
                                 "2 = output_2 wins, 1.5 = tie")
        instruction = str(rec["instruction"])
        pid = prompt_hash_id("alpacaeval", instruction)
        task = str(rec.get("dataset") or "alpacaeval")
        win_2 = float(pref) - 1.0
        for gen, out, score in ((rec["generator_1"], rec["output_1"], 1.0 - win_2),
                                (rec["generator_2"], rec["output_2"], win_2)):
            rows.append({"prompt_id": pid, "prompt": instruction, "model": str(gen),
                         "quality": score, "output_tokens": tokens_of(out), "task": task})
    if skipped:
        log.warning("%s: skipped %d annotation(s) without a preference", path, skipped)
    if not rows:
        raise DataError(f"{path}: no annotation has a preference")
    table = pd.DataFrame(rows)
    return (table.groupby(["prompt_id", "model"], sort=False, as_index=False)
            .agg(prompt=("prompt", "first"), quality=("quality", "mean"),
                 output_tokens=("output_tokens", "mean"), task=("task", "first"))
            [["prompt_id", "prompt", "model", "quality", "output_tokens", "task"]])
