"""Build the C++ test of the integer k-bit kernels (src/xnor_gemm/tests/kbit_test.cc) and run it:
every available ISA, 1 and 2 threads, against a plain reference of the DoReFa fake quantisation
(integers compared with ==, floats with == against the documented epilogue and within 1 ulp of
the exact value). Once as built for use (-O3, the kernels' own flags) and once under
AddressSanitizer + UBSan (--quick grid), each in its own build directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cmake() -> str | None:
    local = Path(sys.executable).parent / "cmake"
    return str(local) if local.exists() else shutil.which("cmake")


def _build_and_run(build: Path, extra: list[str], args: list[str]) -> str:
    cmake = _cmake()
    if cmake is None or shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("needs cmake and a C++ compiler")
    configure = [
        cmake,
        "-S",
        str(ROOT),
        "-B",
        str(build),
        "-DBINMX_PYTHON=OFF",
        "-DBINMX_RUNTIME=OFF",
        "-DBINMX_TESTS=ON",
        *extra,
    ]
    res = subprocess.run(configure, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run(
        [cmake, "--build", str(build), "--target", "kbit_test", "-j", "2"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    exe = next(build.rglob("kbit_test"))
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:halt_on_error=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    res = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=1200, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-8000:]
    assert "kbit cases:" in res.stdout and " 0 failures" in res.stdout, out[-8000:]
    assert "available:" in res.stdout and "scalar" in res.stdout, out[-8000:]
    assert "runtime error" not in out and "AddressSanitizer" not in out, out[-8000:]
    return res.stdout


@pytest.mark.slow
def test_kbit_kernels_release() -> None:
    out = _build_and_run(ROOT / "build" / "kbit-test", ["-DCMAKE_BUILD_TYPE=Release"], [])
    print(out)


@pytest.mark.slow
def test_kbit_kernels_under_asan_and_ubsan() -> None:
    out = _build_and_run(
        ROOT / "build" / "kbit-asan",
        ["-DBINMX_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
        ["--quick"],
    )
    print(out)
