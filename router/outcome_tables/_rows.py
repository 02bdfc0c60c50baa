"""One outcome file's rows, checked and parsed: everything that needs no catalog.

Every reader of outcome tables goes through `read_outcome_rows` (training's
`training.data.load_outcomes`, and the fake provider answering from recorded
outcomes), so a table one of them accepts the other accepts, and a bad row is
reported the same way: a `DataError` naming the file, the 1-based *data* row
(the header is not counted; a CSV row may span several lines when a prompt has
newlines) and the fix. Pricing rows without a cost, and combining files, is
`training.data`'s job.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.conversation import Conversation, parse_conversation
from router.errors import DataError
from router.outcome_tables._files import read_table

__all__ = ["LATENCY_COLUMNS", "MIN_PROPENSITY", "read_outcome_rows"]

log = logging.getLogger(__name__)

# Propensities are clipped to at least this before weighting by 1/propensity, so a
# rarely-chosen model cannot dominate.
MIN_PROPENSITY = 0.01

# Optional timing columns, milliseconds: the whole answer, and the first token.
LATENCY_COLUMNS = ("latency_ms", "ttft_ms")

_MESSAGES_HINT = ('messages must be a JSON list of {"role": ..., "content": ...} objects, '
                  'or use a plain `prompt` column')


def _show(value: Any) -> str:
    """repr of a cell as the user wrote it (numpy scalars shown as plain numbers)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _row(df: pd.DataFrame, i: int) -> int:
    """The 1-based data row in the file of `df`'s i-th row (rows may have been skipped)."""
    return int(df.index[i]) + 1


def _fail(path: Path, row: int, message: str, hint: str) -> DataError:
    return DataError(f"{path}, row {row}: {message}", hint=hint)


def _numeric(df: pd.DataFrame, column: str, path: Path, *, hint: str) -> np.ndarray:
    """Column as float64; a non-number (but not an empty cell) stops with its row."""
    raw = df[column]
    if raw.dtype == bool:
        return raw.to_numpy(dtype="float64")
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64")
    bad = np.isnan(values) & raw.notna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise _fail(path, _row(df, i), f"{column} must be a number, got {_show(raw.iloc[i])}", hint)
    return values


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _parse_messages(value: Any, where: str) -> Conversation:
    if isinstance(value, str):
        # In a messages column text must be JSON; parse_conversation would quietly
        # take broken JSON for a plain prompt.
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where} is not valid JSON ({exc.msg} at char {exc.pos})",
                            hint=_MESSAGES_HINT) from None
    try:
        return parse_conversation(value, where=where)
    except DataError as exc:
        raise DataError(exc.message, hint=_MESSAGES_HINT) from None


def _conversations(df: pd.DataFrame, path: Path) -> np.ndarray:
    """The conversation of each row: its `messages` where set, else its `prompt`.

    A table may mix both (the demo data has `messages` only for multi-turn
    prompts), so the choice is per row. Equal cells share one parsed object.
    """
    n = len(df)
    has_messages = "messages" in df.columns
    messages = df["messages"].to_numpy(dtype=object) if has_messages else None
    prompts = df["prompt"].to_numpy(dtype=object) if "prompt" in df.columns else None
    out = np.empty(n, dtype=object)
    cache: dict[tuple[str, str], Conversation] = {}
    for i in range(n):
        value = messages[i] if messages is not None else None
        if not _missing(value):
            if isinstance(value, np.ndarray):
                value = value.tolist()
            key = ("m", value if isinstance(value, str) else json.dumps(value, default=str))
            if key not in cache:
                cache[key] = _parse_messages(value, f"{path}, row {_row(df, i)}: messages")
        else:
            prompt = prompts[i] if prompts is not None else None
            if _missing(prompt):
                raise _fail(path, _row(df, i), "prompt is empty" + (" and so is messages"
                                                                    if has_messages else ""),
                            "every row needs the prompt text (or a messages list); "
                            "drop rows without one")
            key = ("p", str(prompt))
            if key not in cache:
                # A plain prompt is never parsed as JSON: "[1, 2]" is a valid question.
                cache[key] = Conversation.from_prompt(key[1])
        out[i] = cache[key]
    return out


def _drop_unanswered(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Skip rows that `router collect` recorded without an outcome, saying how many.

    Its output keeps failed calls (`status` "error") and answers the grader could not
    score (`grade_error` set, quality empty) so a rerun can retry them; they carry no
    quality to learn from. Any other row without a quality is still an error.
    """
    skip = np.zeros(len(raw), dtype=bool)
    if "status" in raw.columns:
        failed = (raw["status"].astype(str) == "error").to_numpy()
        if failed.any():
            log.warning("%s: skipped %d row(s) whose call failed (status=error); rerun "
                        "`router collect --retry-errors` to fill them", path, failed.sum())
        skip |= failed
    if "grade_error" in raw.columns:
        ungraded = (raw["grade_error"].notna() & raw["quality"].isna()).to_numpy() & ~skip
        if ungraded.any():
            log.warning("%s: skipped %d row(s) the grader could not score (grade_error)",
                        path, ungraded.sum())
        skip |= ungraded
    if skip.all():
        raise DataError(f"{path}: no row has an outcome ({len(raw)} failed or ungraded)",
                        hint="check the upstream and the grader, then rerun `router collect`")
    # The index keeps each row's place in the file, for error messages (`_row`).
    return raw[~skip] if skip.any() else raw


def _check_latencies(df: pd.DataFrame, path: Path) -> None:
    """`latency_ms` and `ttft_ms`, where the file has them: finite milliseconds >= 0
    or empty (unknown); the columns stay absent when the file has none."""
    hint = ("latency_ms (whole answer) and ttft_ms (time to first token) are "
            "milliseconds: finite numbers >= 0, or empty when unknown")
    for column in LATENCY_COLUMNS:
        if column not in df.columns:
            continue
        values = _numeric(df, column, path, hint=hint)
        bad = np.isinf(values) | (values < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise _fail(path, _row(df, i), f"{column} is {_show(values[i])}, not a finite "
                        "number >= 0", hint)
        df[column] = values


def read_outcome_rows(path: str | os.PathLike[str]) -> pd.DataFrame:
    """One outcome file (`read_table`), every row checked; stops at the first bad row.

    Returns the file's rows (their index is the 0-based data row, for error
    messages) with `prompt_id` and `model` as stripped text, `quality` in [0, 1],
    `messages` the JSON text of the row's chat messages (a bare `prompt` becomes
    one user message; the `prompt` column is dropped), `input_tokens` (from the
    file, else estimated from the conversation), `output_tokens` (NaN where
    unknown), `cost_usd` (NaN where the file has none: pricing needs a catalog)
    `weight` (1/propensity, the propensity clipped to >= `MIN_PROPENSITY`;
    1.0 without one) and, where the file has them, `latency_ms` and `ttft_ms`
    (float64 milliseconds, NaN where unknown). Other columns are kept as they
    are. Rows `router collect` wrote without an outcome are skipped with a
    logged warning.
    """
    path = Path(path)
    raw = _drop_unanswered(_checked_columns(read_table(path), path), path)
    df = raw.copy()
    _check_ids(df, path)
    _check_quality(df, path)
    convs = _conversations(df, path)
    texts: dict[int, str] = {}
    for conv in convs:
        if id(conv) not in texts:
            texts[id(conv)] = json.dumps(conv.to_messages(), ensure_ascii=False)
    df["messages"] = [texts[id(c)] for c in convs]
    df = df.drop(columns=[c for c in ("prompt",) if c in df.columns])
    _check_tokens_and_cost(df, path, convs)
    _check_latencies(df, path)
    _weigh(df, path)
    return df


def _checked_columns(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The file's rows (0-based index) with stripped column names; every required
    column present."""
    if len(raw) == 0:
        raise DataError(f"{path}: file has a header but no rows",
                        hint="the table needs at least one (prompt, model) outcome row")
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in ("prompt_id", "model", "quality") if c not in raw.columns]
    if "prompt" not in raw.columns and "messages" not in raw.columns:
        missing.append("prompt (or messages)")
    if missing:
        raise DataError(
            f"{path}: missing required column(s) {', '.join(missing)}; the file has "
            f"{', '.join(map(str, raw.columns)) or 'no columns'}",
            hint="required: prompt_id, prompt or messages, model, quality; rename the "
                 "columns, or convert a benchmark with `router import FORMAT SRC --out FILE`")
    return raw.reset_index(drop=True)


def _check_ids(df: pd.DataFrame, path: Path) -> None:
    for column in ("prompt_id", "model"):
        isna = df[column].isna().to_numpy()
        values = df[column].astype(str).str.strip()
        empty = isna | (values == "").to_numpy()
        if empty.any():
            i = int(np.argmax(empty))
            raise _fail(path, _row(df, i), f"{column} is empty",
                        f"every row needs a {column}")
        df[column] = values.astype(object)


def _check_quality(df: pd.DataFrame, path: Path) -> None:
    quality = _numeric(df, "quality", path,
                       hint="quality must be a number in [0, 1] (0/1 correctness or a "
                            "rescaled score)")
    bad = ~((quality >= 0) & (quality <= 1))
    if bad.any():
        i = int(np.argmax(bad))
        shown = df["quality"].iloc[i]
        what = "missing" if pd.isna(shown) else f"{_show(shown)}, outside [0, 1]"
        raise _fail(path, _row(df, i), f"quality is {what}",
                    "quality must be a number in [0, 1]: rescale scores (e.g. (s-1)/9 for "
                    "1-10) and drop rows without an outcome")
    df["quality"] = quality


def _check_tokens_and_cost(df: pd.DataFrame, path: Path, convs: np.ndarray) -> None:
    """Token counts and cost: non-negative or empty; input tokens estimated where empty."""
    n = len(df)
    tok_hint = "token counts must be non-negative numbers (or empty)"
    for column in ("input_tokens", "output_tokens"):
        values = (_numeric(df, column, path, hint=tok_hint) if column in df.columns
                  else np.full(n, np.nan))
        if (values < 0).any():
            i = int(np.argmax(values < 0))
            raise _fail(path, _row(df, i), f"{column} is negative ({_show(values[i])})", tok_hint)
        df[column] = values
    estimated = np.array([c.input_tokens for c in convs], dtype="float64")
    df["input_tokens"] = np.where(np.isnan(df["input_tokens"].to_numpy()), estimated,
                                  df["input_tokens"].to_numpy())
    cost = (_numeric(df, "cost_usd", path, hint="cost_usd must be a non-negative number")
            if "cost_usd" in df.columns else np.full(n, np.nan))
    if (cost < 0).any():
        i = int(np.argmax(cost < 0))
        raise _fail(path, _row(df, i), f"cost_usd is negative ({_show(cost[i])})",
                    "cost_usd must be a non-negative number")
    df["cost_usd"] = cost


def _weigh(df: pd.DataFrame, path: Path) -> None:
    """`weight`: 1/propensity (clipped), 1.0 without one."""
    if "propensity" not in df.columns:
        df["weight"] = 1.0
        return
    prop = _numeric(df, "propensity", path, hint="propensity must be a probability")
    bad = (prop < 0) | (prop > 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise _fail(path, _row(df, i), f"propensity is {_show(prop[i])}, outside [0, 1]",
                    "propensity is the probability the logging policy chose this "
                    "model; it must be in [0, 1]")
    # Rows without a propensity (e.g. offline evals mixed into logs) weigh 1.
    df["weight"] = np.where(np.isnan(prop), 1.0, 1.0 / np.clip(prop, MIN_PROPENSITY, None))
