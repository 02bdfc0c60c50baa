"""Without `../shared/data` the tests that read it say so in one line each."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

SHARED_TESTS = ["tests/router/test_catalog.py::test_shared_prices_load",
                "tests/training/test_data.py::test_bundled_data_loads_priced_from_prices_csv"]


def _pytest(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "ROUTER_SHARED_DATA")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rsE", *SHARED_TESTS],
        cwd=REPO_ROOT, env={**clean, "ROUTER_SHARED_DATA": str(tmp_path / "absent"),
                             "COLUMNS": "1000", **env},  # summary lines are not cut
        capture_output=True, text=True, timeout=120)


MISSING = ("needs ../shared/data, the real outcome tables: {} has no prices.csv (put the "
           "folder beside the checkout or set ROUTER_SHARED_DATA)")


def test_missing_shared_data_is_one_skip_line_per_test(tmp_path):
    done = _pytest(tmp_path)
    assert done.returncode == 0, done.stdout
    reason = MISSING.format(tmp_path / "absent")
    skipped = [ln for ln in done.stdout.splitlines() if ln.startswith("SKIPPED")]
    assert len(skipped) == 2 and all(ln.endswith(f": {reason}") for ln in skipped), skipped
    assert "Traceback" not in done.stdout and "conftest.py" not in done.stdout


def test_in_ci_missing_shared_data_fails_each_test_in_one_line(tmp_path):
    done = _pytest(tmp_path, CI="1")
    assert done.returncode == 1, done.stdout
    reason = MISSING.format(tmp_path / "absent")
    errors = [ln for ln in done.stdout.splitlines() if ln.startswith("ERROR")]
    assert len(errors) == 2 and all(ln.endswith(f"{reason}; CI must have it")
                                    for ln in errors), errors
    assert "conftest.py" not in done.stdout  # no traceback through the fixture
