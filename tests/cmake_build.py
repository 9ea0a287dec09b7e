"""Builds C++ test executables of this repository with CMake, for the tests that run them.

``build_targets(build_dir, targets, sanitize=...)`` configures the repository without Python
(``-DBINMX_PYTHON=OFF -DBINMX_TESTS=ON``; with ``sanitize`` also ``-DBINMX_SANITIZE=ON`` in
RelWithDebInfo), builds only ``targets`` and returns their paths. It skips the calling test
with a reason when cmake or a C++ compiler is missing. ``SANITIZER_ENV`` is the environment
for running a sanitizer build (leaks checked, stop at the first report).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}


def cmake_exe() -> str | None:
    local = Path(sys.executable).parent / "cmake"
    return str(local) if local.exists() else shutil.which("cmake")


def build_targets(
    build_dir: Path, targets: list[str], *, sanitize: bool = False
) -> dict[str, Path]:
    cmake = cmake_exe()
    if cmake is None or shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("needs cmake and a C++ compiler")
    configure = [
        cmake,
        "-S",
        str(ROOT),
        "-B",
        str(build_dir),
        "-DBINMX_PYTHON=OFF",
        "-DBINMX_TESTS=ON",
    ]
    if sanitize:
        configure += ["-DBINMX_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"]
    res = subprocess.run(configure, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run(
        [cmake, "--build", str(build_dir), "--target", *targets, "-j", "2"],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    return {name: next(p for p in build_dir.rglob(name) if p.is_file()) for name in targets}
