"""`Registry`: the versions under a root, which one is current, promote and rollback.

The layout and its reasons are in the `router.registry` docstring.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from router.errors import ArtifactError, ConfigError
from router.registry._files import (
    VERSION_ID,
    atomic_write,
    locked,
    metrics_of,
    new_version_id,
    now_iso,
    read_meta,
)
from router.registry._history import append_event, promotion_stack, read_history

__all__ = ["DEFAULT_REGISTRY_ROOT", "REGISTRY_ENV_VAR", "Registry", "VersionInfo"]

# The repository's models/, beside catalog.toml (this file is router/registry/_registry.py).
DEFAULT_REGISTRY_ROOT = Path(__file__).resolve().parents[2] / "models"
REGISTRY_ENV_VAR = "ROUTER_REGISTRY"

_VERSIONS = "versions"
_POINTER = "CURRENT"
_HISTORY = "history.jsonl"
_LOCK = ".lock"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One registered version as `router models list` shows it."""

    id: str
    created: str
    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    is_current: bool = False


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
        if text is not None and not VERSION_ID.match(text):
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
            if (not folder.is_dir() or folder.name.startswith(".")
                    or not VERSION_ID.match(folder.name)):
                continue
            try:
                meta = read_meta(folder)
            except ArtifactError:
                meta = {}
            created = str(meta.get("created") or meta.get("registered_at") or
                          datetime.fromtimestamp(folder.stat().st_mtime, UTC)
                          .isoformat(timespec="seconds"))
            infos.append(VersionInfo(id=folder.name, created=created, path=folder,
                                     metrics=metrics_of(meta),
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
        meta = read_meta(folder)
        events = [e for e in self.history() if e.get("version") == version_id]
        return {
            "version_id": version_id,
            "path": str(folder),
            "is_current": version_id == self._pointer_text(),
            "created": meta.get("created"),
            "metrics": metrics_of(meta),
            "files": sorted(p.name for p in folder.iterdir() if p.is_file()),
            "history": events,
            "meta": meta,
        }

    def history(self) -> list[dict[str, Any]]:
        """Promote / rollback events, oldest first."""
        return read_history(self.history_path)

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
        meta = read_meta(source)
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
            meta["registered_at"] = now_iso()
            meta.setdefault("created", meta["registered_at"])
            atomic_write(target / "meta.json", json.dumps(meta, indent=2, sort_keys=True,
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
        with locked(self.root / _LOCK):
            previous = self._pointer_text()
            atomic_write(self.pointer_path, version_id + "\n")
            append_event(self.history_path, {
                "ts": now_iso(), "action": "promote", "version": version_id,
                "previous": previous, "reason": reason})
        return previous

    def rollback(self, *, reason: str = "", verify: bool = True) -> str:
        """Go back to the version that was current before the current one; return its id.

        Promotions form a stack: promote pushes, rollback pops, so two rollbacks go
        back two promotions. Versions whose folders were deleted are skipped. The
        target is verified like a promotion (`verify`): a corrupt one is refused.
        """
        with locked(self.root / _LOCK):
            current = self._pointer_text()
            stack = promotion_stack(self.history())
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
            atomic_write(self.pointer_path, target + "\n")
            append_event(self.history_path, {
                "ts": now_iso(), "action": "rollback", "version": target,
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

    @staticmethod
    def _check_id(version_id: str) -> None:
        if not isinstance(version_id, str) or not VERSION_ID.match(version_id):
            raise ConfigError(
                f"invalid version id {version_id!r}",
                hint="use letters, digits, '.', '_' or '-' (no slashes), up to 128 characters",
            )
