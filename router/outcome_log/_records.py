"""The outcome log's data contract: records, table columns and row conversion.

`RequestRecord` and `FeedbackRecord` are what the app hands to the log; the
`request_row` / `_feedback_row` functions turn them into rows of plain Python
values in `_REQUEST_COLUMNS` order (validated here, on the request path, so the
writer thread never meets a value a driver cannot bind), and `_decode` turns rows
read back into dicts. Both backends share these, plus `SCHEMA_VERSION` and its
check, so SQLite and PostgreSQL store the same table. `redact_url` makes a log
URL safe to print. Public names are re-exported by `router.outcome_log._open`.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from router.errors import ConfigError, DataError

__all__ = [
    "SCHEMA_VERSION",
    "RequestRecord",
    "FeedbackRecord",
    "redact_url",
]

#: Version of the tables below; stored in `schema_version`. Bump it with a migration.
SCHEMA_VERSION = 1

FEEDBACK_SOURCES = frozenset({"score", "thumbs"})
ENDPOINTS = frozenset({"chat", "route"})

TimeBound = float | int | datetime | None


@dataclass(slots=True)
class RequestRecord:
    """One routed request, as the app logs it after the response is finished.

    `chosen_model` is the policy's decision, `served_model` the model that actually
    answered after fallbacks (they differ when the chosen model failed). `propensity`
    is the probability the policy chose `chosen_model` (1.0 without exploration): the
    off-policy estimators need it. `conversation` is JSON text of the messages, or
    None in privacy mode (then only `conversation_hash` identifies the prompt).
    """

    request_id: str
    ts: float = field(default_factory=time.time)
    client_key_id: str | None = None
    conversation_hash: str = ""
    conversation: str | None = None
    feature_schema_version: int | None = None
    model_version: str | None = None
    quality_bar: float | None = None
    utility_lambda: float | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    chosen_model: str | None = None
    served_model: str | None = None
    propensity: float = 1.0
    explored: bool = False
    fallback_path: list[dict[str, Any]] = field(default_factory=list)
    cache_hit: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    ttfb_ms: float | None = None
    latency_ms: float | None = None
    status: int = 200
    error: str | None = None
    endpoint: str = "chat"
    stream: bool = False


@dataclass(slots=True)
class FeedbackRecord:
    """A quality judgement of one request: a score in [0, 1] or a thumb (up=1, down=0)."""

    request_id: str
    quality: float
    source: str = "score"
    ts: float = field(default_factory=time.time)
    comment: str | None = None


# Column order of the `requests` table; rows are built in this order.
_REQUEST_COLUMNS: tuple[str, ...] = (
    "request_id", "ts", "client_key_id", "conversation_hash", "conversation",
    "feature_schema_version", "model_version", "quality_bar", "utility_lambda",
    "candidates", "chosen_model", "served_model", "propensity", "explored",
    "fallback_path", "cache_hit", "input_tokens", "output_tokens", "cost_usd",
    "ttfb_ms", "latency_ms", "status", "error", "endpoint", "stream",
)
_JSON_COLUMNS = ("candidates", "fallback_path")
_BOOL_COLUMNS = ("explored", "cache_hit", "stream")
_FEEDBACK_COLUMNS: tuple[str, ...] = ("request_id", "ts", "quality", "source", "comment")
_JOINED_EXTRA = ("feedback_quality", "feedback_latest", "feedback_count")

_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, safe for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _epoch(value: TimeBound, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise DataError(f"{name}={value.isoformat()} has no time zone",
                            hint="pass an aware datetime (e.g. tzinfo=UTC) or epoch seconds")
        return value.timestamp()
    return float(value)


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays (the predictor's outputs) become plain numbers and lists.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_json_default)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def request_row(r: RequestRecord) -> tuple[Any, ...]:
    """The record as a row of plain Python values (numpy scalars converted here, so the
    writer never meets a value the database driver cannot bind)."""
    if not r.request_id:
        raise DataError("RequestRecord.request_id is empty", hint="give every request an id")
    return (
        str(r.request_id), float(r.ts), r.client_key_id, r.conversation_hash, r.conversation,
        _opt_int(r.feature_schema_version), r.model_version, _opt_float(r.quality_bar),
        _opt_float(r.utility_lambda), _dumps(r.candidates), r.chosen_model, r.served_model,
        float(r.propensity), bool(r.explored), _dumps(r.fallback_path), bool(r.cache_hit),
        _opt_int(r.input_tokens), _opt_int(r.output_tokens), _opt_float(r.cost_usd),
        _opt_float(r.ttfb_ms), _opt_float(r.latency_ms), int(r.status), r.error, r.endpoint,
        bool(r.stream),
    )


def _feedback_row(fb: FeedbackRecord) -> tuple[Any, ...]:
    q = float(fb.quality)
    if not (0.0 <= q <= 1.0) or math.isnan(q):
        raise DataError(f"feedback quality {fb.quality!r} for request {fb.request_id!r} "
                        "is outside [0, 1]", hint="send a score in [0, 1] or a thumb up/down")
    for name, value in (("request_id", fb.request_id), ("comment", fb.comment)):
        if value is not None and "\x00" in value:
            # PostgreSQL refuses NUL in text: the row would be dropped at write time,
            # after the caller was told it was accepted. Refused here, on both backends.
            raise DataError(f"feedback {name} contains a NUL character (\\u0000), which "
                            "the outcome log cannot store", hint=f"remove it from {name}")
    if fb.source not in FEEDBACK_SOURCES:
        raise DataError(f"feedback source {fb.source!r} is not one of {sorted(FEEDBACK_SOURCES)}",
                        hint="use 'score' or 'thumbs'")
    return (fb.request_id, float(fb.ts), q, fb.source, fb.comment)


def _decode(row: dict[str, Any], *, decode_json: bool) -> dict[str, Any]:
    for col in _BOOL_COLUMNS:
        if col in row and row[col] is not None:
            row[col] = bool(row[col])
    for col in _JSON_COLUMNS:
        value = row.get(col)
        if decode_json and isinstance(value, str):
            row[col] = json.loads(value)
        elif not decode_json and value is not None and not isinstance(value, str):
            row[col] = json.dumps(value, separators=(",", ":"))
    return row

def _check_version(found: Sequence[Any], where: str) -> bool:
    """True when the schema_version row must be inserted; raise on a foreign version."""
    if not found:
        return True
    version = int(found[0])
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"outcome log {where} has schema version {version}; this router writes "
            f"version {SCHEMA_VERSION}",
            hint="point the router at a new log, or upgrade the router that reads it")
    return False
