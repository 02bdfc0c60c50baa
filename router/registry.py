"""The model registry: immutable version folders and an atomically swapped pointer.

Layout under the registry root (by default the repository's `models/`, beside
`catalog.toml`)::

    models/
      versions/<version_id>/   one trained artifact each (meta.json, quality.lgb, ...)
      CURRENT                  the current version id, one line, replaced with os.replace
      history.jsonl            one JSON line per promote / rollback (who was current when)

Why this shape: a server hot-reloads by reading `CURRENT` (a single small file
that is either the old or the new id, never half written), a bad model is undone
by `rollback` without retraining, and every version describes itself through its
own `meta.json` so `router models show` needs nothing else.

Versions are immutable: `add` copies an artifact into a temporary folder inside
`versions/` and renames it into place, so a reader never sees a half-copied
version, and refuses an id that already exists. Writers (promote, rollback) take
an exclusive `flock` on `.lock` so a retrain process and an operator running
`router models rollback` at the same time cannot interleave their history.

`promote` and `rollback` verify a version before `CURRENT` names it: every file's
checksum, a real load and a check prediction, as a starting server does. Why: a
running server refuses a corrupt version and keeps its old model, but a server
started afterwards has no old model and exits, so a bad promote became an outage
at the next restart or scale-up. `CURRENT` is confined to the registry: it must
hold a plain version id whose folder (symlinks resolved) lies inside `versions/`;
anything else (a hand-edited path, `..`) is refused, never loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from router.errors import ArtifactError, ConfigError

__all__ = [
    "DEFAULT_REGISTRY_ROOT",
    "REGISTRY_ENV_VAR",
    "VersionInfo",
    "Registry",
    "new_version_id",
]

DEFAULT_REGISTRY_ROOT = Path(__file__).resolve().parents[1] / "models"
REGISTRY_ENV_VAR = "ROUTER_REGISTRY"

_VERSIONS = "versions"
_POINTER = "CURRENT"
_HISTORY = "history.jsonl"
_LOCK = ".lock"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def new_version_id(now: datetime | None = None) -> str:
    """A sortable, unique id: `v20250101-030000-1a2b3c`."""
    now = now or datetime.now(UTC)
    return f"v{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One registered version as `router models list` shows it."""

    id: str
    created: str
    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    is_current: bool = False


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _read_meta(folder: Path) -> dict[str, Any]:
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


def _metrics_of(meta: dict[str, Any]) -> dict[str, Any]:
    for key in ("metrics", "holdout_metrics", "held_out_metrics"):
        value = meta.get(key)
        if isinstance(value, dict):
            return value
    return {}


def _atomic_write(path: Path, text: str) -> None:
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


class Registry:
    """Versions of the quality model under `root` and which one is current.

    `Registry()` uses `$ROUTER_REGISTRY` or the repository's `models/`. Nothing
    is read or created until a method is called.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            root = os.environ.get(REGISTRY_ENV_VAR) or DEFAULT_REGISTRY_ROOT
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- paths -------------------------------------------------------------
    @property
    def versions_dir(self) -> Path:
        return self.root / _VERSIONS

    @property
    def pointer_path(self) -> Path:
        return self.root / _POINTER

    @property
    def history_path(self) -> Path:
        return self.root / _HISTORY

    def path_of(self, version_id: str) -> Path:
        """The folder of a registered version; `ArtifactError` naming the known ones if not."""
        self._check_id(version_id)
        folder = self.versions_dir / version_id
        if folder.is_dir():
            self._check_inside(folder, f"version {version_id!r}")
        else:
            known = [v.id for v in self.versions()]
            raise ArtifactError(
                f"{self.root}: no version {version_id!r}",
                hint=("known versions: " + ", ".join(known[-10:])) if known
                else "the registry is empty; add one with `router retrain` or Registry.add",
            )
        return folder

    # -- reading -----------------------------------------------------------
    def current_version(self) -> str | None:
        """The current version id, or None when nothing was promoted yet.

        Raises `ArtifactError` when `CURRENT` holds anything but a version id (a
        path, `..`): the pointer may only name a folder of this registry.
        """
        text = self._pointer_text()
        if text is not None and not _ID_RE.match(text):
            raise ArtifactError(
                f"{self.pointer_path}: holds {text[:200]!r}, which is not a version id; "
                f"CURRENT may only name a folder under {self.versions_dir}",
                hint="promote a registered version: `router models promote VERSION`",
            )
        return text

    def current(self) -> Path | None:
        """The current version's folder (None when nothing was promoted yet).

        Raises `ArtifactError` when `CURRENT` names a folder that is gone or that
        lies outside the registry, because serving silently without a model
        would hide the broken registry, and serving from elsewhere would load
        whatever a hand edit pointed at.
        """
        version_id = self.current_version()
        if version_id is None:
            return None
        folder = self.versions_dir / version_id
        if not folder.is_dir():
            raise ArtifactError(
                f"{self.pointer_path}: names version {version_id!r} but "
                f"{folder} does not exist",
                hint="promote an existing version: `router models promote VERSION`",
            )
        self._check_inside(folder, f"{self.pointer_path}: version {version_id!r}")
        return folder

    def verify(self, version_id: str) -> Path:
        """Check that `version_id` would serve; return its folder.

        What a starting server does, without serving: every file's sha256 against
        `meta.json`, a real `QualityModel.load` and a check prediction. Raises
        `ArtifactError` naming the version and what is wrong.
        """
        folder = self.path_of(version_id)
        from router.predictor import QualityModel  # heavy (lightgbm): only when verifying
        from router.service import RoutingService

        try:
            model = QualityModel.load(folder)
            RoutingService.build(model, model.catalog_, path=folder).validate()
        except Exception as exc:  # noqa: BLE001 - any failure means "would not serve"
            why = exc.message if isinstance(exc, ArtifactError) else \
                f"{type(exc).__name__}: {exc}"
            raise ArtifactError(
                f"version {version_id!r} cannot be served: {why}",
                hint="retrain it (`router retrain`) or promote another version; "
                     "CURRENT was not changed",
            ) from exc
        return folder

    def versions(self) -> list[VersionInfo]:
        """Every registered version, oldest first (by creation time, then id)."""
        if not self.versions_dir.is_dir():
            return []
        current = self._pointer_text()  # a broken pointer must not hide the versions
        infos = []
        for folder in self.versions_dir.iterdir():
            if not folder.is_dir() or folder.name.startswith(".") or not _ID_RE.match(folder.name):
                continue
            try:
                meta = _read_meta(folder)
            except ArtifactError:
                meta = {}
            created = str(meta.get("created") or meta.get("registered_at") or
                          datetime.fromtimestamp(folder.stat().st_mtime, UTC)
                          .isoformat(timespec="seconds"))
            infos.append(VersionInfo(id=folder.name, created=created, path=folder,
                                     metrics=_metrics_of(meta),
                                     is_current=folder.name == current))
        return sorted(infos, key=lambda v: (v.created, v.id))

    def show(self, version_id: str | None = None) -> dict[str, Any]:
        """Everything known about one version (default: the current one)."""
        if version_id is None:
            version_id = self.current_version()
            if version_id is None:
                raise ArtifactError(f"{self.root}: no current version",
                                    hint="promote one: `router models promote VERSION`")
        folder = self.path_of(version_id)
        meta = _read_meta(folder)
        events = [e for e in self.history() if e.get("version") == version_id]
        return {
            "version_id": version_id,
            "path": str(folder),
            "is_current": version_id == self._pointer_text(),
            "created": meta.get("created"),
            "metrics": _metrics_of(meta),
            "files": sorted(p.name for p in folder.iterdir() if p.is_file()),
            "history": events,
            "meta": meta,
        }

    def history(self) -> list[dict[str, Any]]:
        """Promote / rollback events, oldest first."""
        try:
            lines = self.history_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        events = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                raise ArtifactError(f"{self.history_path}: line {number} is not valid JSON",
                                    hint="fix or delete the line; CURRENT is unaffected") from None
        return events

    # -- writing -----------------------------------------------------------
    def add(self, artifact_dir: str | os.PathLike[str], *, version_id: str | None = None,
            move: bool = False, extra_meta: dict[str, Any] | None = None) -> str:
        """Register a trained artifact folder as a new immutable version; return its id.

        The id is `version_id`, else the artifact's own `meta.json` `version_id`,
        else a new timestamped one. The copy's `meta.json` gets `version_id`,
        `registered_at` and `extra_meta` merged in (e.g. the gate's comparison),
        so the version describes itself. Refuses an id that exists already.
        `move=True` renames instead of copying when the source is on the same disk.
        """
        source = Path(artifact_dir)
        if not source.is_dir():
            raise ArtifactError(f"{source}: not a folder",
                                hint="pass the folder written by `router train --out DIR`")
        meta = _read_meta(source)
        if version_id is None:
            version_id = str(meta.get("version_id") or "") or new_version_id()
        self._check_id(version_id)
        final = self.versions_dir / version_id
        if final.exists():
            raise ArtifactError(f"{final}: version {version_id!r} already exists; "
                                "versions are immutable",
                                hint="pass another version id, or omit it to get a new one")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=f".{version_id}."))
        try:
            target = staging / "artifact"
            if move:
                shutil.move(str(source), target)
            else:
                shutil.copytree(source, target)
            meta.update(extra_meta or {})
            meta["version_id"] = version_id
            meta["registered_at"] = _now()
            meta.setdefault("created", meta["registered_at"])
            _atomic_write(target / "meta.json", json.dumps(meta, indent=2, sort_keys=True,
                                                           default=str) + "\n")
            try:
                # rename(2) onto a non-existent name is atomic; onto an existing
                # folder it fails, which is the refusal we want under a race.
                os.rename(target, final)
            except OSError:
                raise ArtifactError(f"{final}: version {version_id!r} already exists; "
                                    "versions are immutable",
                                    hint="pass another version id") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return version_id

    def promote(self, version_id: str, *, reason: str = "", verify: bool = True) -> str | None:
        """Make `version_id` current (atomically), record it in the history and
        return what `CURRENT` held before (None when nothing was promoted yet).

        `verify` (the default) first checks the version the way a starting server
        loads it (see `verify`) and refuses a corrupt one, leaving `CURRENT` as it
        was; pass False only for a version verified moments ago.
        """
        if verify:
            self.verify(version_id)
        else:
            self.path_of(version_id)
        with self._locked():
            previous = self._pointer_text()
            _atomic_write(self.pointer_path, version_id + "\n")
            self._append({"ts": _now(), "action": "promote", "version": version_id,
                          "previous": previous, "reason": reason})
        return previous

    def rollback(self, *, reason: str = "", verify: bool = True) -> str:
        """Go back to the version that was current before the current one; return its id.

        Promotions form a stack: promote pushes, rollback pops, so two rollbacks go
        back two promotions. Versions whose folders were deleted are skipped. The
        target is verified like a promotion (`verify`): a corrupt one is refused.
        """
        with self._locked():
            current = self._pointer_text()
            stack = self._stack()
            while current is not None and stack and stack[-1] == current:
                stack.pop()
            while stack and not (self.versions_dir / stack[-1]).is_dir():
                stack.pop()
            if not stack:
                raise ArtifactError(
                    f"{self.root}: nothing to roll back to "
                    f"(current: {current or 'none'}, no earlier promoted version)",
                    hint="promote a specific version: `router models promote VERSION`",
                )
            target = stack[-1]
            if verify:
                self.verify(target)
            _atomic_write(self.pointer_path, target + "\n")
            self._append({"ts": _now(), "action": "rollback", "version": target,
                          "previous": current, "reason": reason})
        return target

    # -- internals ---------------------------------------------------------
    def _pointer_text(self) -> str | None:
        """`CURRENT` as written, unchecked (what promote and rollback replace)."""
        try:
            text = self.pointer_path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return text or None

    def _check_inside(self, folder: Path, what: str) -> None:
        """Refuse a version folder that resolves outside `versions/` (a symlink)."""
        inside = self.versions_dir.resolve()
        if not folder.resolve().is_relative_to(inside):
            raise ArtifactError(
                f"{what} resolves to {folder.resolve()}, outside the registry's {inside}",
                hint="versions must be folders inside the registry; register the model "
                     "with `router retrain` or Registry.add instead of linking it",
            )

    def _stack(self) -> list[str]:
        stack: list[str] = []
        for event in self.history():
            if event.get("action") == "promote":
                stack.append(str(event["version"]))
            elif event.get("action") == "rollback":
                if stack:
                    stack.pop()
                # The target of a rollback is now on top; make sure it is there.
                if not stack or stack[-1] != event["version"]:
                    stack.append(str(event["version"]))
        return stack

    def _append(self, event: dict[str, Any]) -> None:
        with self.history_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / _LOCK).open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _check_id(version_id: str) -> None:
        if not isinstance(version_id, str) or not _ID_RE.match(version_id):
            raise ConfigError(
                f"invalid version id {version_id!r}",
                hint="use letters, digits, '.', '_' or '-' (no slashes), up to 128 characters",
            )
