"""FastChat MT-Bench single-answer judgments -> quality (score - 1) / 9 per turn."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from router.errors import DataError
from training.importers._common import PathLike, existing_file, tokens_of

__all__ = ["import_mtbench"]

log = logging.getLogger(__name__)

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
    resolved = existing_file(path)
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


_REQUIRED = ("question_id", "model", "score", "turn")
_COLUMNS = ["prompt_id", "prompt", "messages", "model", "quality", "output_tokens", "task",
            "turn"]


def _judgments(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, judgment) per non-empty line, with its keys checked."""
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
            missing = [k for k in _REQUIRED if k not in rec]
            if missing:
                raise DataError(f"{where}: missing key(s) {', '.join(missing)}; it has "
                                f"{', '.join(rec)}",
                                hint="expected FastChat's model_judgment/gpt-4_single.jsonl")
            yield where, rec


def _check_score_and_turn(where: str, score: Any, turn: Any) -> None:
    if isinstance(score, bool) or not isinstance(score, int | float) or not 1 <= score <= 10:
        raise DataError(f"{where}: score is {score!r}",
                        hint="MT-Bench scores are 1-10 (-1 marks a failed judgment)")
    if turn not in (1, 2):
        raise DataError(f"{where}: turn is {turn!r}", hint="MT-Bench turns are 1 or 2")


def _row(rec: dict[str, Any], known: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The canonical row of one judgment; None when its question text is unknown."""
    score, turn = rec["score"], rec["turn"]
    qid = str(rec["question_id"])
    parsed, answer = _parse_judge_prompt(rec.get("user_prompt"), turn)
    question = known.get(qid)
    texts = ([str(t) for t in question["turns"][:turn]]
             if question and len(question.get("turns", [])) >= turn else parsed)
    if not texts:
        return None
    category = (question or {}).get("category")
    return {"prompt_id": f"mtbench-{qid}" + ("-turn2" if turn == 2 else ""),
            "prompt": "\n".join(texts),
            "messages": (json.dumps([{"role": "user", "content": t} for t in texts],
                                    ensure_ascii=False) if turn == 2 else None),
            "model": str(rec["model"]), "quality": (float(score) - 1.0) / 9.0,
            "output_tokens": tokens_of(answer),
            "task": f"mt_bench/{category}" if category else "mt_bench",
            "turn": int(turn)}


def import_mtbench(src: PathLike, *, questions: PathLike | None = None) -> pd.DataFrame:
    """FastChat single-answer judgments (JSONL) -> quality (score - 1) / 9 per turn."""
    path = existing_file(src)
    known = _read_questions(questions) if questions else {}
    rows: list[dict[str, Any]] = []
    failed = no_text = 0
    for where, rec in _judgments(path):
        if rec["score"] == -1:
            failed += 1
            continue
        _check_score_and_turn(where, rec["score"], rec["turn"])
        row = _row(rec, known)
        if row is None:
            no_text += 1
        else:
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
    # Several judges (or repeated runs) of one answer are averaged.
    return (pd.DataFrame(rows).groupby(["prompt_id", "model"], sort=False, as_index=False)
            .agg(prompt=("prompt", "first"), messages=("messages", "first"),
                 quality=("quality", "mean"), output_tokens=("output_tokens", "mean"),
                 task=("task", "first"), turn=("turn", "first"))[_COLUMNS])
