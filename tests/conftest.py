"""Fixtures shared by every test package. Module-specific fixtures live beside their tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ROUTER_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`, the real outcome tables; tests using it skip where it is absent."""
    if not (SHARED_DATA / "prices.csv").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"shared data missing at {SHARED_DATA}; CI must have ../shared/data")
        pytest.skip(f"shared data not found at {SHARED_DATA} (needs ../shared/data beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
