"""Build the C++ core tests (src/xnor_gemm/tests) under AddressSanitizer + UBSan and run them:
xnor_gemm_test (packing, the xnor GEMM, ParallelFor), bconv_sanitizer_test (the direct binary
convolution and dense layer, whose kernels read past the valid pixels by design) and bconv_test
(every path against a naive reference over the boundary grid and 600 random configurations).

The sanitizer build lives in its own directory (build/asan) so the flags never reach the
static library that the Python modules link.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from cmake_build import ROOT, SANITIZER_ENV, build_targets

BUILD = ROOT / "build" / "asan"


@pytest.mark.slow
def test_core_under_asan_and_ubsan() -> None:
    targets = ["xnor_gemm_test", "bconv_sanitizer_test", "bconv_test"]
    exes = build_targets(BUILD, targets, sanitize=True)
    env = {**os.environ, **SANITIZER_ENV}
    for target, summary in (
        ("xnor_gemm_test", "gemm cases"),
        ("bconv_sanitizer_test", "bconv"),
        ("bconv_test", "bconv_test"),
    ):
        exe = exes[target]
        res = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600, env=env)
        out = res.stdout + res.stderr
        assert res.returncode == 0, f"{target}:\n" + out[-8000:]
        assert summary in res.stdout and " 0 failures" in res.stdout, f"{target}:\n" + out[-8000:]
        assert "available:" in res.stdout and "scalar" in res.stdout, out[-8000:]
        assert "runtime error" not in out and "AddressSanitizer" not in out, out[-8000:]
