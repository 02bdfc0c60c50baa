"""The prompts file of `router collect`: read, validate, and shape each prompt as sent.

Every model must see exactly the same conversation, so the messages are fixed here
once (the optional system prompt included) and the same `PromptItem` is sent to
each candidate and written to the output as `messages`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.conversation import Conversation, parse_conversation
from router.errors import DataError

__all__ = ["PromptItem", "load_prompts"]


@dataclass(frozen=True)
class PromptItem:
    """One prompt as it will be sent: `messages` include the system prompt, if any."""

    prompt_id: str
    messages: tuple[dict[str, str], ...]
    reference: str | None
    input_tokens: int

    @property
    def messages_json(self) -> str:
        return json.dumps(list(self.messages), ensure_ascii=False)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def load_prompts(path: str | os.PathLike[str], *, system_prompt: str | None = None
                 ) -> list[PromptItem]:
    """Read a prompts file (CSV, CSV.gz, JSONL, Parquet): `prompt_id`, `prompt` or
    `messages` (JSON list of chat messages), optional `reference`.

    `system_prompt` is put first in every conversation that has no system
    message of its own, so every model sees the same instructions.
    """
    from training.data import read_table

    path = Path(path)
    raw = read_table(path)
    raw.columns = [str(c).strip() for c in raw.columns]
    if len(raw) == 0:
        raise DataError(f"{path}: no prompts", hint="the file needs a header and one row "
                                                    "per prompt")
    missing = [c for c in ("prompt_id",) if c not in raw.columns]
    if "prompt" not in raw.columns and "messages" not in raw.columns:
        missing.append("prompt (or messages)")
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the file has "
                        f"{', '.join(raw.columns)}",
                        hint="columns: prompt_id, prompt (or messages), optional reference")
    items: list[PromptItem] = []
    seen: dict[str, int] = {}
    records = raw.to_dict("records")
    for row_no, record in enumerate(records, start=1):
        where = f"{path}, row {row_no}"
        pid_raw = record.get("prompt_id")
        pid = "" if _is_missing(pid_raw) else str(pid_raw).strip()
        if not pid:
            raise DataError(f"{where}: prompt_id is empty", hint="every prompt needs an id")
        if pid in seen:
            raise DataError(f"{where}: prompt_id {pid!r} already used in row {seen[pid]}",
                            hint="give every prompt its own id")
        seen[pid] = row_no
        value = record.get("messages")
        if not _is_missing(value):
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: messages is not valid JSON ({exc.msg})",
                                    hint='messages must be a JSON list of {"role": ..., '
                                         '"content": ...} objects') from None
            conv = parse_conversation(value, where=f"{where}: messages")
        else:
            prompt = record.get("prompt")
            if _is_missing(prompt) or not str(prompt).strip():
                raise DataError(f"{where}: prompt is empty",
                                hint="every row needs the prompt text (or a messages list)")
            conv = Conversation.from_prompt(str(prompt))
        messages = conv.to_messages()
        if system_prompt and not conv.system:
            messages = [{"role": "system", "content": system_prompt}, *messages]
            conv = parse_conversation(messages, where=where)
        reference = record.get("reference")
        reference = None if _is_missing(reference) else str(reference)
        items.append(PromptItem(pid, tuple(messages), reference, conv.input_tokens))
    return items
