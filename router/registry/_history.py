"""The promotion history: `history.jsonl`, one JSON line per promote or rollback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from router.errors import ArtifactError

__all__ = ["append_event", "promotion_stack", "read_history"]


def read_history(path: Path) -> list[dict[str, Any]]:
    """Promote / rollback events, oldest first (none when the file does not exist)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    events = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            raise ArtifactError(f"{path}: line {number} is not valid JSON",
                                hint="fix or delete the line; CURRENT is unaffected") from None
    return events


def append_event(path: Path, event: dict[str, Any]) -> None:
    """One event appended and fsynced (the caller holds the registry's lock)."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(event, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def promotion_stack(events: list[dict[str, Any]]) -> list[str]:
    """Version ids as promotions pushed and rollbacks popped them; the top is current."""
    stack: list[str] = []
    for event in events:
        if event.get("action") == "promote":
            stack.append(str(event["version"]))
        elif event.get("action") == "rollback":
            if stack:
                stack.pop()
            # The target of a rollback is now on top; make sure it is there.
            if not stack or stack[-1] != event["version"]:
                stack.append(str(event["version"]))
    return stack
