"""What the fake provider says: deterministic answer text, recorded outcomes, and
the answers it gave, remembered so a judge grading one can recover its quality.

Split from `router.fake_upstream` (the HTTP side): nothing here knows about HTTP.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.conversation import parse_conversation
from router.errors import DataError

__all__ = ["OutcomeTable", "load_outcome_table", "fake_answer", "AnswerMemory"]

_WORDS = (
    "the", "answer", "follows", "from", "premises", "because", "each", "step", "preserves",
    "invariant", "we", "compute", "value", "then", "check", "it", "against", "constraint",
    "and", "result", "holds", "therefore", "consider", "first", "simple", "case",
    "generalise", "carefully", "to", "all", "inputs",
)


@dataclass(frozen=True)
class OutcomeTable:
    """Recorded (prompt, model) outcomes, looked up by conversation digest."""

    quality: Mapping[tuple[str, str], float]
    output_tokens: Mapping[tuple[str, str], int]
    models: tuple[str, ...]
    source: str

    def lookup(self, digest: str, model: str) -> tuple[float | None, int | None]:
        key = (digest, model)
        return self.quality.get(key), self.output_tokens.get(key)


def load_outcome_table(path: str | os.PathLike[str]) -> OutcomeTable:
    """Read a canonical outcome table (CSV, CSV.gz, Parquet, JSONL) for answering.

    Only what the fake needs is validated: a prompt (`prompt` or `messages`),
    `model`, and `quality` in [0, 1]; `output_tokens` is used when present.
    """
    import pandas as pd  # heavy; only when a table is actually used

    resolved = Path(path)
    name = resolved.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(resolved)
        elif name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            frame = pd.read_json(resolved, lines=True)
        else:
            frame = pd.read_csv(resolved)
    except FileNotFoundError:
        raise DataError(f"outcome table not found: {resolved}",
                        hint="pass --outcomes with an existing CSV, CSV.gz, Parquet or JSONL file"
                        ) from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{resolved}: cannot read outcome table: {exc}") from None
    if frame.empty:
        raise DataError(f"{resolved}: outcome table is empty")
    prompt_column = "messages" if "messages" in frame.columns else "prompt"
    missing = [c for c in (prompt_column, "model", "quality") if c not in frame.columns]
    if missing:
        raise DataError(f"{resolved}: missing column(s) {', '.join(missing)}",
                        hint="the canonical table needs prompt (or messages), model, quality")
    quality: dict[tuple[str, str], float] = {}
    tokens: dict[tuple[str, str], int] = {}
    digests: dict[str, str] = {}
    has_tokens = "output_tokens" in frame.columns
    columns = [prompt_column, "model", "quality"] + (["output_tokens"] if has_tokens else [])
    for row_no, row in enumerate(frame[columns].itertuples(index=False), start=2):
        raw = row[0]
        where = f"{resolved}, row {row_no}"
        try:
            value = float(row[2])
        except (TypeError, ValueError):
            raise DataError(f"{where}: quality must be a number, got {row[2]!r}") from None
        if not (0.0 <= value <= 1.0):
            raise DataError(f"{where}: quality must be in [0, 1], got {value!r}",
                            hint="rescale scores to [0, 1], e.g. (score - 1) / 9 for 1-10")
        cache_key = raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True)
        digest = digests.get(cache_key)
        if digest is None:
            parsed: Any = raw
            if prompt_column == "messages" and isinstance(raw, str):
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    raise DataError(f"{where}: messages is not valid JSON: {raw[:60]!r}",
                                    hint="messages must be a JSON list of "
                                         '{"role": ..., "content": ...} objects') from None
            elif prompt_column == "prompt":
                parsed = str(raw)
            digest = parse_conversation(parsed, where=where).digest
            digests[cache_key] = digest
        key = (digest, str(row[1]))
        quality[key] = value
        if has_tokens and row[3] == row[3]:  # NaN-safe: NaN != NaN
            tokens[key] = max(1, int(round(float(row[3]))))
    return OutcomeTable(quality, tokens, tuple(dict.fromkeys(frame["model"].astype(str))),
                        str(resolved))


def fake_answer(digest: str, model: str, n_tokens: int) -> str:
    """Deterministic text of exactly `n_tokens` by `estimate_tokens` (4 chars each)."""
    seed = int.from_bytes(hashlib.sha256(f"{model}\0{digest}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    words: list[str] = [model + ":"]
    length = len(words[0])
    target = 4 * n_tokens
    while length < target:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:target]


class AnswerMemory:
    """Recent answers and their quality, so a judge grading a fake answer can find it.

    Keyed by the answer's first `PREFIX` characters; a judge prompt is scanned
    window by window, which is linear in its length.
    """

    PREFIX = 32

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def remember(self, text: str, quality: float) -> None:
        if len(text) < self.PREFIX:
            return
        key = text[:self.PREFIX]
        self._items[key] = (text, quality)
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def find(self, haystack: str) -> float | None:
        if not self._items:
            return None
        for start in range(len(haystack) - self.PREFIX + 1):
            hit = self._items.get(haystack[start:start + self.PREFIX])
            if hit is not None and haystack.startswith(hit[0], start):
                return hit[1]
        return None

    def clear(self) -> None:
        self._items.clear()
