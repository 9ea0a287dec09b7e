"""pytest set-up of the binmx-runtime tests (helpers are in rt_helpers.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_isa(monkeypatch):
    """Each test starts with the machine's best ISA unless it sets BINMX_ISA itself."""
    monkeypatch.delenv("BINMX_ISA", raising=False)
    yield
