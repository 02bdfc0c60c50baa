"""What every importer shares: file checks, CSV reading, ids and token estimates."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from router.catalog import estimate_tokens
from router.errors import DataError

__all__ = ["PathLike", "existing_file", "need_columns", "prompt_hash_id", "read_csv",
           "tokens_of"]

PathLike = str | os.PathLike[str]


def prompt_hash_id(prefix: str, text: str) -> str:
    """`<prefix>-<first 12 hex of sha1(text)>`: the id scheme of the bundled data."""
    return f"{prefix}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


def tokens_of(text: Any) -> float:
    return float(estimate_tokens(text)) if isinstance(text, str) and text else np.nan


def need_columns(path: Path, columns: list[str], have: Any, hint: str) -> None:
    missing = [c for c in columns if c not in have]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the file has "
                        f"{', '.join(map(str, have)) or 'no columns'}", hint=hint)


def read_csv(path: Path) -> pd.DataFrame:
    """A CSV with only empty cells missing; a short header or empty file is a DataError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, keep_default_na=False, na_values=[""], index_col=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except pd.errors.ParserWarning:
        raise DataError(f"{path}: a row has more fields than the header",
                        hint="quote text that contains commas") from None


def existing_file(path: PathLike) -> Path:
    resolved = Path(path)
    if not resolved.exists():
        raise DataError(f"{resolved}: file not found", hint="check the SRC path")
    return resolved
