"""Graders for `router collect`: turn one model answer into a quality in [0, 1].

A grader is chosen on the command line with `--grader SPEC`:

- `exact`: the answer, normalised, equals the prompt's `reference`, normalised.
  Normalising lower-cases (casefold), collapses runs of whitespace, strips the
  ends and any trailing punctuation (`.`, `!`, `?`, `,`, `;`, `:`), so
  "Paris." and " paris" both match "Paris". Quality is 1.0 or 0.0.
- `regex` / `regex:PATTERN`: PATTERN (default `LAST_NUMBER`: a number not glued
  to a word, so not the 4 of "gpt-4o") extracts the answer; its *last* match is
  compared with the reference (numbers numerically, so "1,000.0" equals "1000"; otherwise by
  the normalisation above). With a group in PATTERN, group 1 is the answer. An
  answer with no match scores 0.0: the model did not give an answer, which is a
  wrong answer, not a grading failure.
- `judge:MODEL`: an LLM judge called through the same upstream client (one model,
  no fallback, temperature 0) with the rubric below. Its 1-5 score s becomes
  quality (s - 1) / 4. The judge's raw reply is kept (`judge_raw`). A reply with
  no parseable score, or a score outside 1-5, gives quality NaN and a
  `grade_error`; it is counted and reported, never silently scored 0, because a
  0 would teach the router that the model failed when only the judge did.
- `labels:FILE`: human scores joined by (prompt_id, model) from a CSV/JSONL/Parquet
  file with columns `prompt_id`, `model`, `quality` in [0, 1]. A pair without a
  label gets quality NaN and a `grade_error`.

The judge rubric (`JUDGE_RUBRIC`, sent as the system message)::

    You are grading an AI assistant's answer to a user's request.
    Rate the answer on this 1-5 scale:
    5 - correct and complete; nothing important is missing or wrong.
    4 - correct, with minor omissions or imprecision that would not mislead the user.
    3 - partly correct: useful, but with a notable error or gap.
    2 - mostly wrong or unhelpful, with some relevant content.
    1 - wrong, off-topic, harmful, or no answer at all.
    Judge correctness and usefulness for the request only; ignore length and style
    unless they get in the way. If a reference answer is given, treat it as correct.
    Finish with the rating on its own line, exactly in this format: Rating: [[N]]

The user message holds the conversation, the reference (when the prompt has one)
and the answer. The score is the last `[[N]]` in the reply (or, failing that, the
last `Rating: N`), so a judge that reasons before concluding is read correctly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from router.errors import ConfigError, DataError, RouterError

__all__ = [
    "JUDGE_RUBRIC",
    "LAST_NUMBER",
    "GradeInput",
    "Grade",
    "Grader",
    "ExactGrader",
    "RegexGrader",
    "JudgeGrader",
    "LabelsGrader",
    "normalise",
    "parse_judge_score",
    "judge_messages",
    "parse_grader",
]

JUDGE_RUBRIC = (
    "You are grading an AI assistant's answer to a user's request.\n"
    "Rate the answer on this 1-5 scale:\n"
    "5 - correct and complete; nothing important is missing or wrong.\n"
    "4 - correct, with minor omissions or imprecision that would not mislead the user.\n"
    "3 - partly correct: useful, but with a notable error or gap.\n"
    "2 - mostly wrong or unhelpful, with some relevant content.\n"
    "1 - wrong, off-topic, harmful, or no answer at all.\n"
    "Judge correctness and usefulness for the request only; ignore length and style\n"
    "unless they get in the way. If a reference answer is given, treat it as correct.\n"
    "Finish with the rating on its own line, exactly in this format: Rating: [[N]]"
)

# A number standing alone: not the "4" of "gpt-4o" or "v4", a sign only before a digit.
LAST_NUMBER = r"(?<![\w.-])-?\d[\d,]*(?:\.\d+)?(?![\w-])"

_TRAILING_PUNCT = ".!?,;:"
_WS = re.compile(r"\s+")
_BRACKETED = re.compile(r"\[\[\s*([^\[\]]*?)\s*\]\]")
_RATING = re.compile(r"rating\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_GRADER_FORMS = "exact, regex, regex:PATTERN, judge:MODEL, labels:FILE"


def normalise(text: str) -> str:
    """Case-folded, whitespace-collapsed, without trailing punctuation."""
    return _WS.sub(" ", str(text)).strip().casefold().rstrip(_TRAILING_PUNCT).rstrip()


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


@dataclass(frozen=True)
class GradeInput:
    """What a grader sees for one (prompt, model) pair."""

    prompt_id: str
    model: str
    messages: Sequence[Mapping[str, str]]
    answer: str
    reference: str | None = None


@dataclass
class Grade:
    """`quality` in [0, 1], or NaN with `error` saying why it could not be graded.

    `columns` are extra output columns (`judge_raw`, `extracted`, ...); `cost_usd`
    is what grading itself spent (the judge call), counted against the cost cap.
    """

    quality: float
    error: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0


class Grader(Protocol):
    """`spec` names the grader in the output; `needs_reference` makes collect check
    the prompt file has a `reference` for every prompt before spending anything."""

    spec: str
    needs_reference: bool

    async def grade(self, item: GradeInput) -> Grade: ...

    def estimate_cost_usd(self, item_tokens: int) -> float: ...


class ExactGrader:
    """Normalised exact match against the reference."""

    spec = "exact"
    needs_reference = True

    async def grade(self, item: GradeInput) -> Grade:
        ok = normalise(item.answer) == normalise(item.reference or "")
        return Grade(1.0 if ok else 0.0)

    def estimate_cost_usd(self, item_tokens: int) -> float:
        return 0.0


class RegexGrader:
    """The last match of `pattern` in the answer, compared with the reference."""

    needs_reference = True

    def __init__(self, pattern: str | None = None) -> None:
        self.pattern_text = pattern or LAST_NUMBER
        self.spec = "regex" if pattern is None else f"regex:{pattern}"
        try:
            self.pattern = re.compile(self.pattern_text)
        except re.error as exc:
            raise ConfigError(f"--grader regex:{pattern}: not a valid regular expression: "
                              f"{exc}", hint="e.g. --grader 'regex:answer is (\\w+)'") from None

    def extract(self, text: str) -> str | None:
        """The last match (group 1 when the pattern has a group), or None."""
        last = None
        for last in self.pattern.finditer(text):  # noqa: B007 - we want the last one
            pass
        if last is None:
            return None
        return last.group(1) if self.pattern.groups else last.group(0)

    async def grade(self, item: GradeInput) -> Grade:
        extracted = self.extract(item.answer)
        if extracted is None:
            return Grade(0.0, columns={"extracted": None})
        reference = item.reference or ""
        got, want = _as_number(extracted), _as_number(reference.strip())
        if got is not None and want is not None:
            ok = math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
        else:
            ok = normalise(extracted) == normalise(reference)
        return Grade(1.0 if ok else 0.0, columns={"extracted": extracted})

    def estimate_cost_usd(self, item_tokens: int) -> float:
        return 0.0


def parse_judge_score(text: str) -> tuple[int | None, str | None]:
    """(score 1-5, None) or (None, why it cannot be read) from a judge reply."""
    found = _BRACKETED.findall(text)
    raw = found[-1] if found else None
    if raw is None:
        ratings = _RATING.findall(text)
        raw = ratings[-1] if ratings else None
    if raw is None:
        snippet = _WS.sub(" ", text).strip()[:80]
        return None, f"judge reply has no 'Rating: [[N]]' score: {snippet!r}"
    try:
        value = float(raw)
    except ValueError:
        return None, f"judge score {raw!r} is not a number"
    if not value.is_integer() or not 1 <= value <= 5:
        return None, f"judge score {raw} is outside the 1-5 scale"
    return int(value), None


def judge_messages(item: GradeInput) -> list[dict[str, str]]:
    """The judge's conversation: the rubric, then request, reference and answer."""
    conversation = "\n".join(f"[{m['role']}] {m['content']}" for m in item.messages)
    parts = [f"## Conversation\n{conversation}"]
    if item.reference:
        parts.append(f"## Reference answer\n{item.reference}")
    parts.append(f"## Answer to grade\n{item.answer}")
    return [{"role": "system", "content": JUDGE_RUBRIC},
            {"role": "user", "content": "\n\n".join(parts)}]


class JudgeGrader:
    """LLM-as-judge through the upstream client (see the module docstring).

    `client` is a `router.upstream.UpstreamClient`; the judge is called with
    `chain=[model]` so a failing judge is reported, never replaced by another.
    """

    needs_reference = False

    def __init__(self, model: str, client: Any, *, max_tokens: int = 512) -> None:
        self.model = model
        self.client = client
        self.max_tokens = max_tokens
        self.spec = f"judge:{model}"
        self._spec = client.catalog[model]  # ConfigError naming the known models

    async def grade(self, item: GradeInput) -> Grade:
        from router.upstream import UpstreamError

        body = {"messages": judge_messages(item), "temperature": 0,
                "max_tokens": self.max_tokens}
        columns: dict[str, Any] = {"judge_model": self.model, "judge_raw": None,
                                   "judge_cost_usd": 0.0}
        try:
            result = await self.client.complete(body, chain=[self.model])
        except UpstreamError as exc:
            return Grade(math.nan, f"judge call failed: {exc.message}", columns)
        raw = _message_text(result.response)
        cost = self._spec.cost_usd(result.usage.prompt_tokens, result.usage.completion_tokens)
        columns.update(judge_raw=raw, judge_cost_usd=cost)
        score, error = parse_judge_score(raw)
        if score is None:
            return Grade(math.nan, error, columns, cost_usd=cost)
        return Grade((score - 1) / 4, None, columns, cost_usd=cost)

    def estimate_cost_usd(self, item_tokens: int) -> float:
        # rubric (~200 tokens) + the graded conversation and answer + a short verdict
        return self._spec.cost_usd(200 + item_tokens, 64)


def _message_text(response: Mapping[str, Any]) -> str:
    try:
        content = response["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


class LabelsGrader:
    """Human scores from a file, joined by (prompt_id, model)."""

    needs_reference = False

    def __init__(self, path: str | Path) -> None:
        from training.data import read_table

        self.path = Path(path)
        self.spec = f"labels:{path}"
        table = read_table(self.path)
        table.columns = [str(c).strip() for c in table.columns]
        missing = [c for c in ("prompt_id", "model", "quality") if c not in table.columns]
        if missing:
            raise DataError(f"{self.path}: labels file is missing column(s) "
                            f"{', '.join(missing)}",
                            hint="columns: prompt_id, model, quality (a score in [0, 1])")
        self.labels: dict[tuple[str, str], float] = {}
        for row, (pid, model, quality) in enumerate(
                zip(table["prompt_id"], table["model"], table["quality"], strict=True), start=1):
            where = f"{self.path}, row {row}"
            try:
                value = float(quality)
            except (TypeError, ValueError):
                raise DataError(f"{where}: quality must be a number, got {quality!r}",
                                hint="scores must be in [0, 1]") from None
            if not 0.0 <= value <= 1.0:
                raise DataError(f"{where}: quality {quality!r} is outside [0, 1]",
                                hint="rescale scores to [0, 1], e.g. (s - 1) / 4 for 1-5")
            key = (str(pid).strip(), str(model).strip())
            if key in self.labels:
                raise DataError(f"{where}: a second label for prompt_id {key[0]!r} and "
                                f"model {key[1]!r}",
                                hint="keep one label per (prompt_id, model); average them "
                                     "first if several people scored it")
            self.labels[key] = value

    async def grade(self, item: GradeInput) -> Grade:
        value = self.labels.get((item.prompt_id, item.model))
        if value is None:
            return Grade(math.nan, f"no label for prompt_id {item.prompt_id!r} and model "
                                   f"{item.model!r} in {self.path}")
        return Grade(value)

    def estimate_cost_usd(self, item_tokens: int) -> float:
        return 0.0


def parse_grader(spec: str, *, client: Any = None) -> Grader:
    """Build the grader named by `--grader SPEC` (forms in the module docstring).

    `client` (an `UpstreamClient`) is needed by `judge:MODEL` only.
    """
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "exact" and not sep:
        return ExactGrader()
    if kind == "regex":
        return RegexGrader(arg if sep else None)
    if kind == "judge":
        if not arg:
            raise ConfigError("--grader judge: names no judge model",
                              hint="e.g. --grader judge:gpt-4o (a model in the catalog)")
        if client is None:
            raise RouterError("the judge grader needs an upstream client")
        return JudgeGrader(arg, client)
    if kind == "labels":
        if not arg:
            raise ConfigError("--grader labels: names no file",
                              hint="e.g. --grader labels:scores.csv (prompt_id, model, "
                                   "quality)")
        return LabelsGrader(arg)
    raise ConfigError(f"unknown grader {spec!r}", hint=f"use one of: {_GRADER_FORMS}")
