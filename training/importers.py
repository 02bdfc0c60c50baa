"""Convert public routing benchmarks into the canonical outcome table.

Each importer reads one published format and returns a DataFrame with
`prompt_id`, `prompt` (and `messages` where a row is a multi-turn chat),
`model`, `quality` in [0, 1], `output_tokens` (estimated from the answer text
where the format ships it), `cost_usd` (only RouterBench ships costs) and
`task`; `training.data.write_outcomes` writes it and `load_outcomes` reads it
back and prices it. Formats and their mapping:

* `routellm`: RouteLLM evaluation CSVs (`mmlu/responses/mmlu_*.csv`,
  `gsm8k/gsm8k_responses.csv`): a `prompt` (or `Prompt`) column, one boolean /
  0-1 column per model, optional `<model>_response` answer columns. One row per
  (prompt, model column); prompt ids are `<benchmark>-<sha1(prompt)[:12]>`, the
  ids of `../shared/data`, unless the file has an id column.
* `routerbench`: RouterBench wide tables (pickle or CSV): `sample_id`, `prompt`,
  `eval_name`, and per model `<model>` (quality), `<model>|total_cost`,
  `<model>|model_response`. A prompt stored as a stringified list ("['...']")
  becomes its text, or one user message per element.
* `alpacaeval`: AlpacaEval `annotations.json`: pairwise preferences
  (`preference` 1 = output_1 wins, 2 = output_2 wins, 1.5 = tie) become a win
  score per (instruction, generator), averaged over its comparisons.
* `mtbench`: FastChat MT-Bench single-answer judgments (`gpt-4_single.jsonl`):
  quality = (score - 1) / 9; score -1 (judge output not parsed) is dropped. The
  question text comes from `--questions question.jsonl` when given, else from
  the judge prompt. Turn 1 is `mtbench-<question_id>`; turn 2 is
  `mtbench-<question_id>-turn2`, a two-message chat (both user questions; the
  first answer differs per model, so it is left out), kept only when both
  question texts are known, otherwise dropped with a warning.

Pickle files run code when read: import only RouterBench pickles you trust.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.catalog import estimate_tokens
from router.errors import DataError

__all__ = [
    "IMPORTERS",
    "import_benchmark",
    "import_routellm",
    "import_routerbench",
    "import_alpacaeval",
    "import_mtbench",
    "prompt_hash_id",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def prompt_hash_id(prefix: str, text: str) -> str:
    """`<prefix>-<first 12 hex of sha1(text)>`: the id scheme of the bundled data."""
    return f"{prefix}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


def _tokens(text: Any) -> float:
    return float(estimate_tokens(text)) if isinstance(text, str) and text else np.nan


def _need(path: Path, columns: list[str], have: Any, hint: str) -> None:
    missing = [c for c in columns if c not in have]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the file has "
                        f"{', '.join(map(str, have)) or 'no columns'}", hint=hint)


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV with only empty cells missing; a short header or empty file is a DataError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, keep_default_na=False, na_values=[""], index_col=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except pd.errors.ParserWarning:
        raise DataError(f"{path}: a row has more fields than the header",
                        hint="quote text that contains commas") from None


def _exists(path: PathLike) -> Path:
    resolved = Path(path)
    if not resolved.exists():
        raise DataError(f"{resolved}: file not found", hint="check the SRC path")
    return resolved


# --------------------------------------------------------------------------- RouteLLM

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
    root = _exists(src)
    files = (sorted(p for p in root.rglob("*") if p.name.endswith((".csv", ".csv.gz")))
             if root.is_dir() else [root])
    if not files:
        raise DataError(f"{root}: no .csv files in this folder",
                        hint="point SRC at RouteLLM's mmlu/responses/ or a *_responses.csv")
    frames = [_routellm_file(p, task, rename or {}) for p in files]
    return pd.concat(frames, ignore_index=True)


def _routellm_file(path: Path, task: str | None, rename: Mapping[str, str]) -> pd.DataFrame:
    raw = _read_csv(path)
    prompt_col = next((c for c in ("prompt", "Prompt") if c in raw.columns), None)
    if prompt_col is None:
        _need(path, ["prompt"], list(raw.columns),
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
        out_tokens = (raw[response].map(_tokens) if response in raw.columns
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


# ------------------------------------------------------------------------ RouterBench

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
    path = _exists(src)
    raw = pd.read_pickle(path) if path.name.endswith((".pkl", ".pickle")) else _read_csv(path)
    hint = ("RouterBench tables have sample_id, prompt, eval_name and per model "
            "<model>, <model>|total_cost, <model>|model_response")
    _need(path, ["sample_id", "prompt", "eval_name"], list(raw.columns), hint)
    models = [str(c)[: -len("|total_cost")] for c in raw.columns
              if str(c).endswith("|total_cost")]
    if not models:
        raise DataError(f"{path}: no <model>|total_cost columns; the file has "
                        f"{', '.join(map(str, raw.columns))}", hint=hint)
    _need(path, models, list(raw.columns), hint)
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
            output_tokens=(raw[response].map(_tokens) if response in raw.columns
                           else np.nan),
            cost_usd=pd.to_numeric(raw[f"{model}|total_cost"], errors="coerce"))
        frames.append(frame[quality.notna()])
    columns = ["prompt_id", "prompt", *(["messages"] if "messages" in base else []),
               "model", "quality", "output_tokens", "cost_usd", "task"]
    return pd.concat(frames, ignore_index=True)[columns]


# ------------------------------------------------------------------------ AlpacaEval

def import_alpacaeval(src: PathLike) -> pd.DataFrame:
    """AlpacaEval `annotations.json` -> mean win score per (instruction, generator)."""
    path = _exists(src)
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
                         "quality": score, "output_tokens": _tokens(out), "task": task})
    if skipped:
        log.warning("%s: skipped %d annotation(s) without a preference", path, skipped)
    if not rows:
        raise DataError(f"{path}: no annotation has a preference")
    table = pd.DataFrame(rows)
    return (table.groupby(["prompt_id", "model"], sort=False, as_index=False)
            .agg(prompt=("prompt", "first"), quality=("quality", "mean"),
                 output_tokens=("output_tokens", "mean"), task=("task", "first"))
            [["prompt_id", "prompt", "model", "quality", "output_tokens", "task"]])


# -------------------------------------------------------------------------- MT-Bench

_SINGLE_REF = re.compile(r"\[Question\]\n(?P<q>.*?)\n\n\[The Start of Reference Answer\]\n"
                         r".*?\n\[The End of Reference Answer\]\n\n\[The Start of Assistant's "
                         r"Answer\]\n(?P<a>.*?)\n\[The End of Assistant's Answer\]", re.S)
_SINGLE = re.compile(r"\[Question\]\n(?P<q>.*?)\n\n\[The Start of Assistant's Answer\]"
                     r"\n(?P<a>.*?)\n\[The End of Assistant's Answer\]", re.S)
_MULTI = re.compile(r"<\|The Start of Assistant A's Conversation with User\|>\n\n### User:\n"
                    r"(?P<q1>.*?)\n\n### Assistant A:\n(?P<a1>.*?)\n\n### User:\n(?P<q2>.*?)"
                    r"\n\n### Assistant A:\n(?P<a2>.*?)\n\n<\|The End of Assistant A's "
                    r"Conversation with User\|>", re.S)


def _parse_judge_prompt(text: Any, turn: int) -> tuple[list[str] | None, str | None]:
    """(question texts up to `turn`, judged answer) from a FastChat judge prompt."""
    if not isinstance(text, str):
        return None, None
    if turn == 1:
        # Math prompts carry a reference answer; match it first so it is not
        # taken for part of the question.
        match = _SINGLE_REF.search(text) or _SINGLE.search(text)
        return ([match["q"]], match["a"]) if match else (None, None)
    match = _MULTI.search(text)
    return ([match["q1"], match["q2"]], match["a2"]) if match else (None, None)


def _read_questions(path: PathLike) -> dict[str, dict[str, Any]]:
    questions = {}
    resolved = _exists(path)
    for number, line in enumerate(resolved.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            questions[str(rec["question_id"])] = rec
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{resolved}, line {number}: expected a JSON object with "
                            f"question_id and turns",
                            hint="pass FastChat's data/mt_bench/question.jsonl") from None
    return questions


def import_mtbench(src: PathLike, *, questions: PathLike | None = None) -> pd.DataFrame:
    """FastChat single-answer judgments (JSONL) -> quality (score - 1) / 9 per turn."""
    path = _exists(src)
    known = _read_questions(questions) if questions else {}
    required = ["question_id", "model", "score", "turn"]
    rows: list[dict[str, Any]] = []
    failed = no_text = 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg})",
                                hint="expected one judgment object per line") from None
            missing = [k for k in required if k not in rec]
            if missing:
                raise DataError(f"{where}: missing key(s) {', '.join(missing)}; it has "
                                f"{', '.join(rec)}",
                                hint="expected FastChat's model_judgment/gpt-4_single.jsonl")
            score, turn = rec["score"], rec["turn"]
            if score == -1:
                failed += 1
                continue
            if isinstance(score, bool) or not isinstance(score, int | float) \
                    or not 1 <= score <= 10:
                raise DataError(f"{where}: score is {score!r}",
                                hint="MT-Bench scores are 1-10 (-1 marks a failed judgment)")
            if turn not in (1, 2):
                raise DataError(f"{where}: turn is {turn!r}", hint="MT-Bench turns are 1 or 2")
            qid = str(rec["question_id"])
            parsed, answer = _parse_judge_prompt(rec.get("user_prompt"), turn)
            question = known.get(qid)
            texts = ([str(t) for t in question["turns"][:turn]]
                     if question and len(question.get("turns", [])) >= turn else parsed)
            if not texts:
                no_text += 1
                continue
            category = (question or {}).get("category")
            row = {"prompt_id": f"mtbench-{qid}" + ("-turn2" if turn == 2 else ""),
                   "prompt": "\n".join(texts),
                   "messages": (json.dumps([{"role": "user", "content": t} for t in texts],
                                           ensure_ascii=False) if turn == 2 else None),
                   "model": str(rec["model"]), "quality": (float(score) - 1.0) / 9.0,
                   "output_tokens": _tokens(answer),
                   "task": f"mt_bench/{category}" if category else "mt_bench",
                   "turn": int(turn)}
            rows.append(row)
    if failed:
        log.warning("%s: dropped %d judgment(s) with score -1 (judge output not parsed)",
                    path, failed)
    if no_text:
        log.warning("%s: dropped %d judgment(s) whose question text is unknown; pass "
                    "--questions question.jsonl to keep them", path, no_text)
    if not rows:
        raise DataError(f"{path}: no usable judgments",
                        hint="expected FastChat's model_judgment/gpt-4_single.jsonl")
    table = pd.DataFrame(rows)
    # Several judges (or repeated runs) of one answer are averaged.
    return (table.groupby(["prompt_id", "model"], sort=False, as_index=False)
            .agg(prompt=("prompt", "first"), messages=("messages", "first"),
                 quality=("quality", "mean"), output_tokens=("output_tokens", "mean"),
                 task=("task", "first"), turn=("turn", "first"))
            [["prompt_id", "prompt", "messages", "model", "quality", "output_tokens",
              "task", "turn"]])


IMPORTERS: dict[str, Callable[..., pd.DataFrame]] = {
    "routellm": import_routellm,
    "routerbench": import_routerbench,
    "alpacaeval": import_alpacaeval,
    "mtbench": import_mtbench,
}


def import_benchmark(fmt: str, src: PathLike, **options: Any) -> pd.DataFrame:
    """Dispatch to the importer for `fmt` (one of `IMPORTERS`)."""
    try:
        importer = IMPORTERS[fmt]
    except KeyError:
        raise DataError(f"unknown import format {fmt!r}",
                        hint=f"use one of {', '.join(IMPORTERS)}") from None
    return importer(src, **{k: v for k, v in options.items() if v is not None})
