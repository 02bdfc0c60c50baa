"""Fixtures of the upstream client's tests: `private_ca`, a throw-away certificate authority."""

from __future__ import annotations

import pytest
import trustme


@pytest.fixture
def private_ca() -> trustme.CA:
    """A throw-away certificate authority (trustme, in the test extra)."""
    return trustme.CA()
