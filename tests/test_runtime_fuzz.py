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
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "rt-asan"
TARGETS = ["params", "params_file", "symbol_json", "npy", "npy_file", "model_symbol_lenet_fold",
           "model_params_lenet_fold", "model_symbol_qops_fold", "model_params_qops_fold"]


def _cmake() -> str | None:
    local = Path(sys.executable).parent / "cmake"
    return str(local) if local.exists() else shutil.which("cmake")


@pytest.mark.slow
def test_loaders_survive_mutations_under_asan_and_ubsan() -> None:
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
        [cmake, "--build", str(BUILD), "--target", "rt_loader_fuzz_test", "-j", "2"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    exe = next(p for p in BUILD.rglob("rt_loader_fuzz_test") if p.is_file())
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:halt_on_error=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
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
