"""Shared pytest fixtures: a per-test seed that is printed when a test fails."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A deterministic seed per test (override with BINMX_TEST_SEED); shown on failure."""
    base = int(os.environ.get("BINMX_TEST_SEED", "0"))
    value = (zlib.crc32(request.node.nodeid.encode()) + base) % (2**31)
    request.node.user_properties.append(("seed", value))
    return value


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for key, value in item.user_properties:
            if key == "seed":
                report.sections.append(("seed", f"test seed = {value}"))
