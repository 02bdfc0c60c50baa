"""The outcome log: every routed request and every piece of feedback, batched off the request path.

Two backends behind one interface (`OutcomeLog`):

- `SQLiteOutcomeLog(path)`: the default, a single file, no set-up. WAL mode so the
  report command and the retraining job can read while the router writes.
- `PostgresOutcomeLog(url)`: for several router replicas writing one log.

`open_outcome_log(url_or_path)` picks one: `postgresql://...` / `postgres://...`
-> PostgreSQL; `sqlite:///relative.db`, `sqlite:////absolute.db` (SQLAlchemy's
convention) or a plain path -> SQLite; any other scheme is a `ConfigError`.

How writes work, and why
------------------------
`log(record)` is called on the request path, so it never awaits and never does
I/O: it turns the record into a row (microseconds), appends it to an in-memory
queue under a lock held only for the append, and returns. One background writer
thread per log drains the queue and writes **one transaction per batch**
(`executemany`), when `batch_size` rows (default 256) are waiting or
`flush_interval_s` (default 0.2 s) after the first waiting row, whichever comes
first. A thread (not an asyncio task) does the I/O because both sqlite3 and the
sync psycopg driver block; the event loop never waits on the disk or the network.

Feedback (`add_feedback`) goes through the same queue, so it is always written
after the request it refers to. It first checks that the request id is known:
ids still in the queue (or in the batch being written) count as known, then the
database is asked. Unknown ids return False (the app answers 404).

Back-pressure: the queue is bounded (`max_queue`, default 100,000 rows). When it is
full, `log()` **drops the record, returns False, increments `dropped`** and logs a
warning (at most one every 10 s). We drop rather than block because blocking
`log()` would stall every request in the event loop behind a slow database; the
`dropped` counter is exported as a metric so the loss is never silent. Feedback
is never dropped for a full queue (it is rare and precious): it may exceed
`max_queue`.

Write failures: an operational error (database locked, connection lost, server
restarting) keeps the batch and retries with backoff (0.1 s doubling to 5 s);
meanwhile new rows queue up to `max_queue`. Any other error (a row the database
rejects) writes the batch row by row, drops only the rows that fail, counts them
in `dropped` and logs them.

What a crash can lose
---------------------
- `await close()` (graceful shutdown) writes **everything** queued before it returns
  (it waits up to `close_timeout_s`, default 30 s, for an unreachable database; rows
  still unwritten then are counted in `dropped` and logged as an error).
- A crash (SIGKILL, power loss of the process, `os._exit`) loses the rows not yet
  committed: the queue plus the batch in flight. While the writer keeps up, that is
  **at most `batch_size` records or the last `flush_interval_s` of traffic** (about
  0.2 s). If the database has been slow or down, the backlog can be larger, bounded
  by `max_queue`; `queue_size` shows it.
- SQLite runs with `synchronous=NORMAL` in WAL mode: a committed batch survives a
  process crash; an operating-system crash or power cut may lose the last commits.

Reading back
------------
`query_requests` and `query_joined` (async, for the app and the report command)
return dicts with JSON columns decoded. `export_dataframe` is synchronous and needs
neither the app nor `start()`: the retraining job calls
`open_outcome_log(url).export_dataframe(since=...)` and gets a pandas DataFrame,
one row per request, with `feedback_quality` (mean), `feedback_latest`,
`feedback_count`; `candidates`, `fallback_path` and `conversation` stay JSON text
there, like `messages` in the canonical outcome table.

Where the code lives
--------------------
`open_outcome_log` is in `router.outcome_log._open`. Records and row conversion
are in `router.outcome_log._records`, the
queue, writer thread and queries in `router.outcome_log._writer` (`OutcomeLog`), the
backends in `router.outcome_log._sqlite` and `router.outcome_log._postgres`.
"""

from router.outcome_log._open import (
    open_outcome_log,
)
from router.outcome_log._postgres import (
    PostgresOutcomeLog,
)
from router.outcome_log._records import (
    SCHEMA_VERSION,
    FeedbackRecord,
    RequestRecord,
    redact_url,
    request_row,
)
from router.outcome_log._sqlite import (
    SQLiteOutcomeLog,
)
from router.outcome_log._writer import (
    OutcomeLog,
    OutcomeLogUnavailable,
)

__all__ = [
    "FeedbackRecord",
    "OutcomeLog",
    "OutcomeLogUnavailable",
    "PostgresOutcomeLog",
    "RequestRecord",
    "SCHEMA_VERSION",
    "SQLiteOutcomeLog",
    "open_outcome_log",
    "redact_url",
    "request_row",
]
