"""The quality model's artifact: the folder `QualityModel.save` writes and `load` reads.

The artifact is a folder (see CONTRIBUTING.md, "The artifact"): `meta.json`,
`catalog.json`, `features.joblib`, `quality.lgb` and, when trained,
`output_tokens.lgb` and `linear.npz` (float32 coefficients (buckets x models),
intercepts). `meta.json` lists the sha256 of every other file; `load`
checks format version, feature schema version, presence and integrity and raises
`ArtifactError` naming what is wrong. `save` writes to a temporary sibling folder
and renames it into place, so a reader never sees half an artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from router.catalog import Catalog
from router.errors import ArtifactError, ConfigError
from router.features import FEATURE_SCHEMA_VERSION, FeatureExtractor
from router.predictor._design import DESCRIPTOR_NAMES

if TYPE_CHECKING:
    from router.predictor._model import QualityModel

__all__ = [
    "ARTIFACT_FORMAT_VERSION",
    "CATALOG",
    "FEATURES",
    "LINEAR",
    "META",
    "OUTPUT_TOKENS",
    "QUALITY",
    "library_versions",
    "read_artifact",
    "sha256_file",
    "write_artifact",
]

# 2: the linear quality head (linear.npz, meta "linear_weight").
ARTIFACT_FORMAT_VERSION = 3  # 3: the quality bar is a calibrated target mean quality
META, CATALOG, FEATURES, QUALITY, OUTPUT_TOKENS, LINEAR = (
    "meta.json", "catalog.json", "features.joblib", "quality.lgb", "output_tokens.lgb",
    "linear.npz")
_REQUIRED_FILES = (CATALOG, FEATURES, QUALITY)


def library_versions() -> dict[str, str]:
    """Versions recorded in every artifact (a model is only trusted with its stack)."""
    import lightgbm
    import pandas
    import sklearn

    return {"python": platform.python_version(), "numpy": np.__version__,
            "pandas": pandas.__version__, "scikit-learn": sklearn.__version__,
            "lightgbm": lightgbm.__version__}


def write_artifact(model: QualityModel, directory: str | os.PathLike[str]
                   ) -> tuple[Path, dict[str, Any]]:
    """Write fitted `model`'s artifact folder atomically; returns (its path, meta.json).

    An existing folder is replaced only when it is an artifact itself (has a
    `meta.json`) or is empty, so a mistyped `--out` cannot delete user files.
    """
    import joblib

    target = Path(directory)
    if target.exists() and not (target.is_dir() and (
            (target / META).is_file() or not any(target.iterdir()))):
        raise ArtifactError(f"{target}: exists and is not a model artifact; "
                            "refusing to overwrite it",
                            hint="choose a new --out folder or remove this one")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        (staging / CATALOG).write_text(
            json.dumps(model.catalog_.to_dict(), indent=2, sort_keys=True) + "\n",
            encoding="utf-8")
        joblib.dump(model.features_, staging / FEATURES)
        model.quality_.save_model(str(staging / QUALITY))
        files = [CATALOG, FEATURES, QUALITY]
        if model.linear_coef_ is not None:
            with (staging / LINEAR).open("wb") as handle:
                np.savez(handle, coef=model.linear_coef_, intercept=model.linear_intercept_)
            files.append(LINEAR)
        if model.output_tokens_ is not None:
            model.output_tokens_.save_model(str(staging / OUTPUT_TOKENS))
            files.append(OUTPUT_TOKENS)
        meta = dict(model.metadata)
        meta.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
        if not meta.get("version_id"):
            meta["version_id"] = (f"v{datetime.now(UTC):%Y%m%d-%H%M%S}-"
                                  f"{sha256_file(staging / QUALITY)[:8]}")
        meta.update({
            "format_version": ARTIFACT_FORMAT_VERSION,
            "feature_schema_version": FEATURE_SCHEMA_VERSION,
            "models": list(model.models_),
            "descriptors": model.descriptors_.tolist(),
            "output_medians": model.output_medians_,
            "default_output_tokens": float(model.default_output_tokens),
            "linear_weight": (float(model.linear_weight)
                              if model.linear_coef_ is not None else 0.0),
            "feature_names": list(model.feature_names_),
            "library_versions": meta.get("library_versions") or library_versions(),
            "files": {name: sha256_file(staging / name) for name in files},
        })
        (staging / META).write_text(json.dumps(meta, indent=2, sort_keys=True,
                                                default=str) + "\n", encoding="utf-8")
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
        os.rename(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, meta


def read_artifact(directory: str | os.PathLike[str],
                  model_cls: type[QualityModel]) -> QualityModel:
    """A new `model_cls()` read from an artifact folder, after checking the format
    and feature schema versions and every file's sha256."""
    import joblib
    import lightgbm as lgb

    folder = Path(directory)
    retrain = f"retrain it: router train --data FILE --out {folder}"
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: model folder not found",
                            hint="pass the folder written by `router train --out DIR`")
    meta_path = folder / META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{meta_path}: missing; {folder} is not a trained model "
                            "folder", hint="pass the folder written by `router train "
                            "--out DIR`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{meta_path}: corrupt, not valid JSON ({exc})",
                            hint=retrain) from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_path}: corrupt, expected a JSON object", hint=retrain)
    fmt = meta.get("format_version")
    if fmt != ARTIFACT_FORMAT_VERSION:
        raise ArtifactError(f"{folder}: artifact format version {fmt!r}, this router "
                            f"reads version {ARTIFACT_FORMAT_VERSION}",
                            hint=f"use the router release that wrote it, or {retrain}")
    schema = meta.get("feature_schema_version")
    if schema != FEATURE_SCHEMA_VERSION:
        raise ArtifactError(f"{folder}: feature schema version {schema!r}, this router "
                            f"computes version {FEATURE_SCHEMA_VERSION}",
                            hint=f"features changed since it was trained; {retrain}")
    files = meta.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{meta_path}: corrupt, no 'files' checksums", hint=retrain)
    for name in _REQUIRED_FILES:
        if name not in files:
            raise ArtifactError(f"{meta_path}: corrupt, {name} is not listed", hint=retrain)
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path}: missing from the model folder", hint=retrain)
        if sha256_file(path) != digest:
            raise ArtifactError(f"{path}: corrupt (sha256 differs from meta.json)",
                                hint=retrain)
    model = model_cls()
    try:
        model.catalog_ = Catalog.from_dict(json.loads((folder / CATALOG).read_text("utf-8")),
                                           source=str(folder / CATALOG))
        model.features_ = joblib.load(folder / FEATURES)
        model.quality_ = lgb.Booster(model_file=str(folder / QUALITY))
        model.output_tokens_ = (lgb.Booster(model_file=str(folder / OUTPUT_TOKENS))
                                if OUTPUT_TOKENS in files else None)
        model.linear_weight = float(meta["linear_weight"])
        model.linear_coef_ = model.linear_intercept_ = None
        if model.linear_weight > 0:
            if LINEAR not in files:
                raise ArtifactError(f"{meta_path}: corrupt, linear_weight "
                                    f"{model.linear_weight} but {LINEAR} is not listed",
                                    hint=retrain)
            with np.load(folder / LINEAR, allow_pickle=False) as npz:
                model.linear_coef_ = np.ascontiguousarray(npz["coef"], dtype=np.float32)
                model.linear_intercept_ = np.asarray(npz["intercept"], dtype=np.float64)
        model.models_ = tuple(meta["models"])
        model.descriptors_ = np.asarray(meta["descriptors"], dtype=np.float32)
        model.output_medians_ = dict(meta["output_medians"])
        model.default_output_tokens = float(meta["default_output_tokens"])
        model.feature_names_ = list(meta["feature_names"])
    except (KeyError, TypeError, ValueError, EOFError, ConfigError, lgb.basic.LightGBMError,
            ImportError, AttributeError) as exc:
        raise ArtifactError(f"{folder}: cannot be read ({type(exc).__name__}: {exc})",
                            hint=retrain) from None
    if not isinstance(model.features_, FeatureExtractor):
        raise ArtifactError(f"{folder / FEATURES}: not a FeatureExtractor", hint=retrain)
    if model.linear_coef_ is not None and (
            model.linear_coef_.shape != (len(model.features_.buckets_), len(model.models_))
            or model.linear_intercept_.shape != (len(model.models_),)):
        raise ArtifactError(f"{folder / LINEAR}: shape {model.linear_coef_.shape} does not "
                            "match the features and models", hint=retrain)
    if model.descriptors_.shape != (len(model.models_), len(DESCRIPTOR_NAMES)):
        raise ArtifactError(f"{meta_path}: descriptors do not match the models",
                            hint=retrain)
    model.metadata = meta
    return model


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
