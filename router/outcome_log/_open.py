"""`open_outcome_log`: the backend a URL or path names, built but not started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.errors import ConfigError
from router.outcome_log._postgres import PostgresOutcomeLog
from router.outcome_log._records import (
    redact_url,
    request_row,  # noqa: F401 - not public; bench/outcome_log.py imports it from here
)
from router.outcome_log._sqlite import SQLiteOutcomeLog
from router.outcome_log._writer import OutcomeLog

__all__ = ["open_outcome_log"]

def open_outcome_log(url_or_path: str | Path, **options: Any) -> OutcomeLog:
    """Build (not start) the log named by `url_or_path`; see the module docstring.

    `options` go to the backend (`batch_size`, `flush_interval_s`, `max_queue`,
    `close_timeout_s`; `schema` for PostgreSQL). No I/O happens here: `await
    log.start()` connects and raises `ConfigError` if it cannot.
    """
    if isinstance(url_or_path, Path):
        return SQLiteOutcomeLog(url_or_path, **options)
    text = str(url_or_path).strip()
    if not text:
        raise ConfigError("the outcome log URL is empty",
                          hint="set ROUTER_LOG_URL to a file path or postgresql://... URL")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        options.pop("path", None)
        return PostgresOutcomeLog(text, **options)
    if scheme == "sqlite":
        path = text[len("sqlite:///"):] if text.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(f"outcome log URL {text!r} names no file",
                              hint="use sqlite:///relative.db or sqlite:////absolute/path.db")
        return SQLiteOutcomeLog(path, **options)
    if scheme:
        raise ConfigError(f"outcome log URL {redact_url(text)!r} has an unsupported scheme "
                          f"{scheme!r}",
                          hint="use a file path, sqlite:///file.db or postgresql://user@host/db")
    return SQLiteOutcomeLog(text, **options)
