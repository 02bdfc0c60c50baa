"""The quality model's artifact: the folder `QualityModel.save` writes and `load`
reads.

The artifact is a folder (see CONTRIBUTING.md, "The artifact"): `meta.json`,
`catalog.json`, `features.joblib`, `quality.lgb` and, when trained,
`output_tokens.lgb`, `linear.npz` (float32 coefficients (buckets x models),
intercepts), `latency.lgb` and `ttft.lgb` (the timing heads' boosters; their per-
model constants are in meta.json's `timing_heads`). `meta.json` lists the sha256 of
every other file; `load` checks format version, feature schema version, presence and
integrity and raises `ArtifactError` naming what is wrong. `save` writes to a
temporary sibling folder and renames it into place, so a reader never sees half an
artifact.
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
from router.predictor._latency import LatencyHead

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
    "READABLE_FORMAT_VERSIONS",
    "TIMING_FILES",
    "library_versions",
    "read_artifact",
    "sha256_file",
    "write_artifact",
]

# 2: the linear quality head (linear.npz, meta "linear_weight").
# 3: the quality bar is a calibrated target mean quality.
# 4: latency and time-to-first-token heads (latency.lgb, ttft.lgb, meta "timing_heads").
ARTIFACT_FORMAT_VERSION = 4
# Format 3 differs only by having no timing heads: it loads, without latency.
READABLE_FORMAT_VERSIONS = (3, ARTIFACT_FORMAT_VERSION)
META, CATALOG, FEATURES, QUALITY, OUTPUT_TOKENS, LINEAR = (
    "meta.json", "catalog.json", "features.joblib", "quality.lgb", "output_tokens.lgb",
    "linear.npz")
# The timing heads' boosters, in the order (latency, time to first token).
TIMING_FILES = ("latency.lgb", "ttft.lgb")
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
    target = Path(directory)
    if target.exists() and not (target.is_dir() and (
            (target / META).is_file() or not any(target.iterdir()))):
        raise ArtifactError(f"{target}: exists and is not a model artifact; "
                            "refusing to overwrite it",
                            hint="choose a new --out folder or remove this one")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        files = _write_parts(model, staging)
        meta = _meta(model, staging, files)
        (staging / META).write_text(json.dumps(meta, indent=2, sort_keys=True,
                                                default=str) + "\n", encoding="utf-8")
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, meta


def _write_parts(model: QualityModel, staging: Path) -> list[str]:
    """Every file but meta.json into `staging`; returns their names."""
    import joblib

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
    boosters = [(OUTPUT_TOKENS, model.output_tokens_)]
    boosters += [(name, None if head is None else head.booster)
                 for name, head in zip(TIMING_FILES, _heads(model), strict=True)]
    for name, booster in boosters:
        if booster is not None:
            booster.save_model(str(staging / name))
            files.append(name)
    return files


def _heads(model: QualityModel) -> tuple[LatencyHead | None, LatencyHead | None]:
    return getattr(model, "latency_", None), getattr(model, "ttft_", None)


def _meta(model: QualityModel, staging: Path, files: list[str]) -> dict[str, Any]:
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
        "timing_heads": {name: None if head is None else head.to_meta()
                         for name, head in zip(TIMING_FILES, _heads(model), strict=True)},
        "library_versions": meta.get("library_versions") or library_versions(),
        "files": {name: sha256_file(staging / name) for name in files},
    })
    return meta


def _swap_in(staging: Path, target: Path) -> None:
    """Rename the finished folder into place, replacing an older artifact."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_artifact(directory: str | os.PathLike[str],
                  model_cls: type[QualityModel]) -> QualityModel:
    """A new `model_cls()` read from an artifact folder, after checking the format
    and feature schema versions and every file's sha256. A folder of the previous
    format (`READABLE_FORMAT_VERSIONS`) loads without latency heads."""
    folder = Path(directory)
    retrain = f"retrain it: router train --data FILE --out {folder}"
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: model folder not found",
                            hint="pass the folder written by `router train --out DIR`")
    meta = _read_meta(folder, retrain)
    _check_files(folder, meta, retrain)
    model = model_cls()
    _load_parts(folder, meta, model, retrain)
    _check_shapes(folder, model, retrain)
    model.metadata = meta
    return model


def _read_meta(folder: Path, retrain: str) -> dict[str, Any]:
    """meta.json, checked to be an object of a readable format and feature schema."""
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
    if fmt not in READABLE_FORMAT_VERSIONS:
        raise ArtifactError(f"{folder}: artifact format version {fmt!r}, this router "
                            f"reads version {ARTIFACT_FORMAT_VERSION} (and "
                            f"{', '.join(map(str, READABLE_FORMAT_VERSIONS[:-1]))})",
                            hint=f"use the router release that wrote it, or {retrain}")
    schema = meta.get("feature_schema_version")
    if schema != FEATURE_SCHEMA_VERSION:
        raise ArtifactError(f"{folder}: feature schema version {schema!r}, this router "
                            f"computes version {FEATURE_SCHEMA_VERSION}",
                            hint=f"features changed since it was trained; {retrain}")
    return meta


def _check_files(folder: Path, meta: dict[str, Any], retrain: str) -> None:
    """Every required file listed, every listed file present with its sha256."""
    meta_path = folder / META
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


def _load_parts(folder: Path, meta: dict[str, Any], model: QualityModel,
                retrain: str) -> None:
    """The fitted state from the (checked) files and meta.json into `model`."""
    import joblib
    import lightgbm as lgb

    files = meta["files"]

    def booster(name: str) -> Any:
        return lgb.Booster(model_file=str(folder / name)) if name in files else None

    try:
        model.catalog_ = Catalog.from_dict(json.loads((folder / CATALOG).read_text("utf-8")),
                                           source=str(folder / CATALOG))
        model.features_ = joblib.load(folder / FEATURES)
        model.quality_ = booster(QUALITY)
        model.output_tokens_ = booster(OUTPUT_TOKENS)
        _load_linear(folder, meta, model, retrain)
        model.models_ = tuple(meta["models"])
        model.descriptors_ = np.asarray(meta["descriptors"], dtype=np.float32)
        model.output_medians_ = dict(meta["output_medians"])
        model.default_output_tokens = float(meta["default_output_tokens"])
        model.feature_names_ = list(meta["feature_names"])
        # Format 3 predates latency: no heads, so a latency limit is refused.
        heads = meta.get("timing_heads") or {}
        model.latency_, model.ttft_ = (
            None if heads.get(name) is None
            else LatencyHead.from_meta(heads[name], booster(name), len(model.models_))
            for name in TIMING_FILES)
    except (KeyError, TypeError, ValueError, EOFError, ConfigError, lgb.basic.LightGBMError,
            ImportError, AttributeError) as exc:
        raise ArtifactError(f"{folder}: cannot be read ({type(exc).__name__}: {exc})",
                            hint=retrain) from None


def _load_linear(folder: Path, meta: dict[str, Any], model: QualityModel,
                 retrain: str) -> None:
    model.linear_weight = float(meta["linear_weight"])
    model.linear_coef_ = model.linear_intercept_ = None
    if model.linear_weight <= 0:
        return
    if LINEAR not in meta["files"]:
        raise ArtifactError(f"{folder / META}: corrupt, linear_weight "
                            f"{model.linear_weight} but {LINEAR} is not listed",
                            hint=retrain)
    with np.load(folder / LINEAR, allow_pickle=False) as npz:
        model.linear_coef_ = np.ascontiguousarray(npz["coef"], dtype=np.float32)
        model.linear_intercept_ = np.asarray(npz["intercept"], dtype=np.float64)


def _check_shapes(folder: Path, model: QualityModel, retrain: str) -> None:
    if not isinstance(model.features_, FeatureExtractor):
        raise ArtifactError(f"{folder / FEATURES}: not a FeatureExtractor", hint=retrain)
    if model.linear_coef_ is not None and (
            model.linear_coef_.shape != (len(model.features_.buckets_), len(model.models_))
            or model.linear_intercept_.shape != (len(model.models_),)):
        raise ArtifactError(f"{folder / LINEAR}: shape {model.linear_coef_.shape} does not "
                            "match the features and models", hint=retrain)
    if model.descriptors_.shape != (len(model.models_), len(DESCRIPTOR_NAMES)):
        raise ArtifactError(f"{folder / META}: descriptors do not match the models",
                            hint=retrain)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
