"""Opening an outcome log: the backend by URL scheme, and bad URLs, files and options named.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from router.errors import ConfigError
from router.outcome_log import (
    PostgresOutcomeLog,
    SQLiteOutcomeLog,
    open_outcome_log,
    redact_url,
)
from tests.router.outcome_log.stores import POSTGRES_URL

# -- URLs and bad input --------------------------------------------------------------------

def test_open_picks_the_backend_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_outcome_log(tmp_path / "a.db"), SQLiteOutcomeLog)
    assert open_outcome_log(str(tmp_path / "a.db")).path == tmp_path / "a.db"
    assert open_outcome_log("sqlite:///rel/out.db").path == Path("rel/out.db")
    assert open_outcome_log(f"sqlite:///{tmp_path}/b.db").path == tmp_path / "b.db"
    pg = open_outcome_log("postgresql://u@db.internal/router", batch_size=10)
    assert isinstance(pg, PostgresOutcomeLog) and pg.batch_size == 10
    assert isinstance(open_outcome_log("postgres://u@h/db"), PostgresOutcomeLog)


def test_unknown_scheme_names_the_url_without_password() -> None:
    with pytest.raises(ConfigError) as err:
        open_outcome_log("mysql://admin:hunter2@db/router")
    assert "mysql://admin:***@db/router" in str(err.value) and "hunter2" not in str(err.value)
    assert "postgresql://" in (err.value.hint or "")


async def test_unreachable_postgres_names_the_url_without_password() -> None:
    log = open_outcome_log("postgresql://bob:hunter2@127.0.0.1:1/nowhere")
    with pytest.raises(ConfigError) as err:
        await log.start()
    message = str(err.value)
    assert "postgresql://bob:***@127.0.0.1:1/nowhere" in message
    assert "hunter2" not in message


@pytest.mark.postgres
async def test_missing_postgres_database_is_a_config_error() -> None:
    base = POSTGRES_URL.rsplit("/", 1)[0]
    with pytest.raises(ConfigError, match="no_such_db_router"):
        await open_outcome_log(f"{base}/no_such_db_router_test").start()


async def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"my precious notes, not a database" * 100)
    with pytest.raises(ConfigError, match=str(path)):
        await SQLiteOutcomeLog(path).start()
    assert path.read_bytes() == b"my precious notes, not a database" * 100


def test_export_from_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"no outcome log at {tmp_path / 'none.db'}"):
        SQLiteOutcomeLog(tmp_path / "none.db").export_dataframe()


def test_bad_batching_options_are_named() -> None:
    with pytest.raises(ConfigError, match="batch_size=0"):
        SQLiteOutcomeLog("x.db", batch_size=0)


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("postgresql://u:p%40ss@h:5432/db?sslmode=require") == \
        "postgresql://u:***@h:5432/db?sslmode=require"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
