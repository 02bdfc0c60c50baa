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

from router.registry._files import new_version_id
from router.registry._registry import (
    DEFAULT_REGISTRY_ROOT,
    REGISTRY_ENV_VAR,
    Registry,
    VersionInfo,
)

__all__ = [
    "DEFAULT_REGISTRY_ROOT",
    "REGISTRY_ENV_VAR",
    "VersionInfo",
    "Registry",
    "new_version_id",
]
