"""Fixtures shared by every test package. Module-specific fixtures live beside their tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ROUTER_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`, the real outcome tables (or `$ROUTER_SHARED_DATA`).

    Where it is absent each test using it is skipped with one line saying what is
    missing; in CI (`$CI` set) it must be there, so each fails, with that same one
    line and no traceback (the traceback would only show this fixture).
    """
    if not (SHARED_DATA / "prices.csv").is_file():
        reason = (f"needs ../shared/data, the real outcome tables: {SHARED_DATA} has no "
                  "prices.csv (put the folder beside the checkout or set ROUTER_SHARED_DATA)")
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have it", pytrace=False)
        pytest.skip(reason)  # only outside CI: no ../shared/data beside this checkout
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
