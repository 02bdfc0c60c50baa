"""One importer per format name, for `router import FORMAT SRC`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from router.errors import DataError
from training.importers._alpacaeval import import_alpacaeval
from training.importers._common import PathLike
from training.importers._mtbench import import_mtbench
from training.importers._routellm import import_routellm
from training.importers._routerbench import import_routerbench

__all__ = ["IMPORTERS", "import_benchmark"]

IMPORTERS: dict[str, Callable[..., pd.DataFrame]] = {
    "routellm": import_routellm,
    "routerbench": import_routerbench,
    "alpacaeval": import_alpacaeval,
    "mtbench": import_mtbench,
}


def import_benchmark(fmt: str, src: PathLike, **options: Any) -> pd.DataFrame:
    """Dispatch to the importer for `fmt` (one of `IMPORTERS`)."""
    try:
        importer = IMPORTERS[fmt]
    except KeyError:
        raise DataError(f"unknown import format {fmt!r}",
                        hint=f"use one of {', '.join(IMPORTERS)}") from None
    return importer(src, **{k: v for k, v in options.items() if v is not None})
