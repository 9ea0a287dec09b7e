"""Build the C++ core tests (src/xnor_gemm/tests) under AddressSanitizer + UBSan and run them.

The sanitizer build lives in its own directory (build/asan) so the flags never reach the
static library that the Python modules link.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "asan"


def _cmake() -> str | None:
    local = Path(sys.executable).parent / "cmake"
    return str(local) if local.exists() else shutil.which("cmake")


@pytest.mark.slow
@pytest.mark.parametrize("target", ["xnor_gemm_test", "bconv_test"])
def test_core_under_asan_and_ubsan(target: str) -> None:
    cmake = _cmake()
    if cmake is None or shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("needs cmake and a C++ compiler")
    configure = [
        cmake,
        "-S",
        str(ROOT),
        "-B",
        str(BUILD),
        "-DBINMX_PYTHON=OFF",
        "-DBINMX_TESTS=ON",
        "-DBINMX_SANITIZE=ON",
        "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
    ]
    res = subprocess.run(configure, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run(
        [cmake, "--build", str(BUILD), "--target", target, "-j", "2"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    exe = next(p for p in BUILD.rglob(target) if p.is_file())
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:halt_on_error=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    res = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-8000:]
    assert "0 failures" in res.stdout, out[-8000:]
    assert "available:" in res.stdout and "scalar" in res.stdout, out[-8000:]
    assert "runtime error" not in out and "AddressSanitizer" not in out, out[-8000:]
