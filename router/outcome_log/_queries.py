"""The log's read queries, built once for both SQL dialects, and the DataFrame export."""

from __future__ import annotations

from typing import Any

from router.outcome_log._records import (
    _BOOL_COLUMNS,
    _JOINED_EXTRA,
    _REQUEST_COLUMNS,
    TimeBound,
    _epoch,
)

__all__ = ["requests_frame", "select_requests"]


def select_requests(*, placeholder: str, requests_table: str, feedback_table: str,
                    joined: bool, since: TimeBound, until: TimeBound,
                    limit: int | None) -> tuple[str, list[Any]]:
    """(SQL, parameters) of the requests with `since <= ts < until`, oldest first.

    `joined` adds `feedback_quality` (mean of all feedback), `feedback_latest` (the
    most recent) and `feedback_count` (0 when none). `placeholder` is the driver's
    parameter mark (`?` for sqlite3, `%s` for psycopg).
    """
    p, rt, ft = placeholder, requests_table, feedback_table
    where, params = [], []
    lo, hi = _epoch(since, "since"), _epoch(until, "until")
    if lo is not None:
        where.append(f"r.ts >= {p}")
        params.append(lo)
    if hi is not None:
        where.append(f"r.ts < {p}")
        params.append(hi)
    cols = ", ".join(f"r.{c}" for c in _REQUEST_COLUMNS)
    if joined:
        cols += (
            ", agg.feedback_quality, "
            f"(SELECT f2.quality FROM {ft} f2 WHERE f2.request_id = r.request_id "
            "ORDER BY f2.ts DESC, f2.id DESC LIMIT 1) AS feedback_latest, "
            "COALESCE(agg.feedback_count, 0) AS feedback_count")
        source = (f"{rt} r LEFT JOIN (SELECT request_id, AVG(quality) AS feedback_quality, "
                  f"COUNT(*) AS feedback_count FROM {ft} GROUP BY request_id) agg "
                  "ON agg.request_id = r.request_id")
    else:
        source = f"{rt} r"
    sql = f"SELECT {cols} FROM {source}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY r.ts, r.request_id"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql, params


def requests_frame(rows: list[dict[str, Any]], *, joined: bool) -> Any:
    """A pandas DataFrame of request rows in column order (the latencies `ttfb_ms`
    and `latency_ms` among them), booleans as bool."""
    import pandas as pd  # deferred: the serving path never needs pandas

    columns = list(_REQUEST_COLUMNS) + (list(_JOINED_EXTRA) if joined else [])
    frame = pd.DataFrame(rows, columns=columns)
    for col in _BOOL_COLUMNS:
        frame[col] = frame[col].astype(bool)
    return frame
