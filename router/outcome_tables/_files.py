"""Reading and writing outcome-table files, in every format the router accepts.

Formats, chosen by extension: `.csv`, `.csv.gz`, `.parquet`/`.pq`, `.jsonl`,
`.jsonl.gz`/`.ndjson`. A directory stands for every such file inside it
(recursively, sorted; this is how Parquet partitions are read). `write_outcomes`
writes the same formats, so importers and `router demo-data` produce exactly
what `training.data.load_outcomes` reads. Nothing here validates rows: that is
`router.outcome_tables._rows`'s job (and pricing `training.data`'s).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.errors import DataError

__all__ = ["SUPPORTED_SUFFIXES", "PathsLike", "expand_paths", "read_table", "write_outcomes"]

SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".jsonl", ".jsonl.gz", ".ndjson")

PathsLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def expand_paths(paths: PathsLike) -> list[Path]:
    items: Iterable[Any] = [paths] if isinstance(paths, str | os.PathLike) else paths
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p))
            if not found:
                raise DataError(f"{path}: directory holds no outcome files",
                                hint=f"expected files ending in {', '.join(SUPPORTED_SUFFIXES)}")
            files.extend(found)
        elif not path.exists():
            raise DataError(f"{path}: file not found",
                            hint="check the path; `router demo-data --out demo.csv` makes a "
                                 "sample table")
        else:
            files.append(path)
    if not files:
        raise DataError("no outcome files given", hint="pass at least one --data FILE")
    return files


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read one file into a raw DataFrame (format by extension), no validation.

    CSV cells are read with only the empty cell as missing, so a prompt that
    says "NA" or "null" stays text.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix is None:
        raise DataError(f"{path}: unknown file type",
                        hint=f"use one of {', '.join(SUPPORTED_SUFFIXES)}")
    try:
        if suffix in (".csv", ".csv.gz"):
            with warnings.catch_warnings():
                # Without index_col=False pandas silently turns extra leading fields into
                # an index; with it, it warns and drops data. Either way: refuse.
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(path, keep_default_na=False, na_values=[""],
                                   dtype={"prompt_id": str, "model": str}, index_col=False)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return _read_jsonl(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except pd.errors.ParserWarning:
        raise DataError(f"{path}: a row has more fields than the header",
                        hint="quote text that contains commas (\"...\"), as CSV writers "
                             "do") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty",
                        hint="the file needs a header and at least one row") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: cannot be read as {suffix}: {exc}",
                        hint="check that the extension matches the content") from None


def _read_jsonl(path: Path) -> pd.DataFrame:
    compression = "gzip" if path.name.lower().endswith(".gz") else None
    try:
        return pd.read_json(path, lines=True, dtype=False, precise_float=True,
                            compression=compression)
    except ValueError:
        pass
    # pandas does not say which line is bad; find it so the user can fix it.
    with _open_text(path, "r") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not valid JSON: {exc.msg}",
                                hint="each line must be one JSON object") from None
            if not isinstance(value, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got "
                                f"{type(value).__name__}",
                                hint="each line must be one JSON object") from None
    raise DataError(f"{path}: file is empty", hint="the file needs at least one JSON line")


def write_outcomes(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a table in the format named by `path`'s extension; returns the path.

    The writer shared by importers and `router demo-data`, so what they write is
    exactly what `load_outcomes` reads. Parent folders are created.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix is None:
        raise DataError(f"{path}: unknown output file type",
                        hint=f"use one of {', '.join(SUPPORTED_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".csv", ".csv.gz"):
        # mtime=0: the same table gives the same bytes, so files can be diffed and hashed.
        table.to_csv(path, index=False,
                     compression={"method": "gzip", "mtime": 0} if suffix == ".csv.gz"
                     else None)
    elif suffix in (".parquet", ".pq"):
        table.to_parquet(path, index=False)
    else:
        # json.dumps writes floats exactly (pandas' to_json rounds to 10 digits).
        with _open_text(path, "w") as handle:
            for record in table.to_dict(orient="records"):
                handle.write(json.dumps({k: _jsonable(v) for k, v in record.items()},
                                        ensure_ascii=False) + "\n")
    return path


def _open_text(path: Path, mode: str) -> Any:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.GzipFile(path, mode + "b", mtime=0), encoding="utf-8")
    return path.open(mode, encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if value is pd.NaT or value is None:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value
