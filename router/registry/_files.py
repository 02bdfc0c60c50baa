"""Files of the registry: version ids, a version's meta.json, atomic writes, the lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from router.errors import ArtifactError

__all__ = ["VERSION_ID", "atomic_write", "locked", "metrics_of", "new_version_id", "now_iso",
           "read_meta"]

VERSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_version_id(now: datetime | None = None) -> str:
    """A sortable, unique id: `v20250101-030000-1a2b3c`."""
    now = now or datetime.now(UTC)
    return f"v{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_meta(folder: Path) -> dict[str, Any]:
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{meta_path}: missing; not a trained model folder",
                            hint="train one with `router train --out DIR`") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{meta_path}: not valid JSON ({exc.msg} at line {exc.lineno})",
                            hint="the artifact is corrupt; train it again") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def metrics_of(meta: dict[str, Any]) -> dict[str, Any]:
    for key in ("metrics", "holdout_metrics", "held_out_metrics"):
        value = meta.get(key)
        if isinstance(value, dict):
            return value
    return {}


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive `flock` on `path` (created if absent) while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
