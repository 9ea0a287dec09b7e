"""Fuzz the runtime's file readers under AddressSanitizer + UndefinedBehaviorSanitizer.

Builds only rt_loader_fuzz_test (src/runtime/tests/loader_fuzz_test.cc) with
-DBINMX_SANITIZE=ON in its own directory (build/rt-asan) and runs it: >= 1,000 seeded mutations
of each format (params in memory and from a file, symbol JSON, .npy in memory and from a file),
each of which must load or raise binmx::rt::Error -- no other exception, crash, leak or
out-of-bounds access.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from cmake_build import ROOT, SANITIZER_ENV, build_targets

BUILD = ROOT / "build" / "rt-asan"
TARGETS = [
    "params",
    "params_file",
    "symbol_json",
    "npy",
    "npy_file",
    "model_symbol_lenet_fold",
    "model_params_lenet_fold",
    "model_symbol_qops_fold",
    "model_params_qops_fold",
]


@pytest.mark.slow
def test_loaders_survive_mutations_under_asan_and_ubsan() -> None:
    exe = build_targets(BUILD, ["rt_loader_fuzz_test"], sanitize=True)["rt_loader_fuzz_test"]
    env = {**os.environ, **SANITIZER_ENV}
    res = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-8000:]
    assert "loader_fuzz_test: 0 failures" in res.stdout, out[-8000:]
    assert "runtime error" not in out and "AddressSanitizer" not in out, out[-8000:]
    counts = {
        m.group(1): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        for m in re.finditer(
            r"^(\w+): (\d+) mutations \((\d+) rejected with binmx::rt::Error, (\d+) accepted\)$",
            res.stdout,
            re.MULTILINE,
        )
    }
    assert sorted(counts) == sorted(TARGETS), res.stdout
    for name, (total, rejected, accepted) in counts.items():
        assert total >= 1000, (name, total)
        assert rejected + accepted == total, name
        # Both outcomes occur: the mutations reach past the first check and still break files.
        assert rejected > 0 and accepted > 0, (name, rejected, accepted)
