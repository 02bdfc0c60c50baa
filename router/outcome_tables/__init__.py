"""Outcome-table files: the formats read and written, and each file's rows checked.

The canonical outcome table (one row per (prompt, model): prompt, model,
quality, tokens, cost, latency, propensity) is training's input and what the fake
provider answers from. Both read it here, so they accept the same tables and
report a bad row the same way; `training.data` adds pricing and combines files.
"""

from router.outcome_tables._files import (
    SUPPORTED_SUFFIXES,
    PathsLike,
    expand_paths,
    read_table,
    write_outcomes,
)
from router.outcome_tables._rows import LATENCY_COLUMNS, MIN_PROPENSITY, read_outcome_rows

__all__ = [
    "LATENCY_COLUMNS",
    "MIN_PROPENSITY",
    "SUPPORTED_SUFFIXES",
    "PathsLike",
    "expand_paths",
    "read_outcome_rows",
    "read_table",
    "write_outcomes",
]
