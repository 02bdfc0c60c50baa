"""What the fake provider says: deterministic answer text, recorded outcomes, and
the answers it gave, remembered so a judge grading one can recover its quality.

Split from `router.fake._server` (the HTTP side): nothing here knows about HTTP.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from router.conversation import parse_conversation

__all__ = ["OutcomeTable", "load_outcome_table", "fake_answer", "AnswerMemory"]

# The outcome table's timing columns (milliseconds), used where present.
_TIMINGS = ("latency_ms", "ttft_ms")

_WORDS = (
    "the", "answer", "follows", "from", "premises", "because", "each", "step", "preserves",
    "invariant", "we", "compute", "value", "then", "check", "it", "against", "constraint",
    "and", "result", "holds", "therefore", "consider", "first", "simple", "case",
    "generalise", "carefully", "to", "all", "inputs",
)


@dataclass(frozen=True)
class OutcomeTable:
    """Recorded (prompt, model) outcomes, looked up by conversation digest; the
    timings (`latency_ms` whole answer, `ttft_ms` first token) where the table has them."""

    quality: Mapping[tuple[str, str], float]
    output_tokens: Mapping[tuple[str, str], int]
    models: tuple[str, ...]
    source: str
    latency_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)
    ttft_ms: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def lookup(self, digest: str, model: str) -> tuple[float | None, int | None]:
        key = (digest, model)
        return self.quality.get(key), self.output_tokens.get(key)

    def timing(self, digest: str, model: str) -> tuple[float | None, float | None]:
        """(whole-answer latency, time to first token) recorded for the pair, ms."""
        key = (digest, model)
        return self.latency_ms.get(key), self.ttft_ms.get(key)


def load_outcome_table(paths: str | os.PathLike[str]) -> OutcomeTable:
    """Read canonical outcome tables for answering: every table `router train` reads.

    Files and folders of them, read and checked row by row by
    `router.outcome_tables.read_outcome_rows` (training's reader), so a row's
    conversation is its `messages` where set, else its `prompt`. Repeated
    (prompt, model) outcomes are averaged, as training does; `output_tokens`
    is used where known, and so are `latency_ms` and `ttft_ms` (averaged too).
    """
    # pandas is heavy: only when a table is actually used.
    import pandas as pd

    from router.outcome_tables import expand_paths, read_outcome_rows

    files = expand_paths(paths)
    wanted = ["messages", "model", "quality", "output_tokens", *_TIMINGS]
    frames = [frame[[c for c in wanted if c in frame]]
              for frame in (read_outcome_rows(path) for path in files)]
    rows = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    timings = [c for c in _TIMINGS if c in rows]
    digests = {text: parse_conversation(json.loads(text)).digest
               for text in pd.unique(rows["messages"])}
    rows = rows.assign(digest=rows["messages"].map(digests), model=rows["model"].astype(str))
    merged = rows.groupby(["digest", "model"], sort=False)[
        ["quality", "output_tokens", *timings]].mean()
    quality = {key: float(q) for key, q in merged["quality"].items()}
    tokens = {key: max(1, int(round(float(t))))
              for key, t in merged["output_tokens"].dropna().items()}
    timed = {c: {key: float(v) for key, v in merged[c].dropna().items()} for c in timings}
    source = str(files[0]) if len(files) == 1 else f"{len(files)} files under {paths}"
    return OutcomeTable(quality, tokens, tuple(pd.unique(rows["model"])), source,
                        latency_ms=timed.get("latency_ms", {}), ttft_ms=timed.get("ttft_ms", {}))


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
