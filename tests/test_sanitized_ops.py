"""The operator and converter bad-input suites under AddressSanitizer + UBSan.

The operator library is built a second time with ``-DBINMX_SANITIZE=ON`` in its own build
directory (build/asan-ops; incremental after the first run) and loaded into MXNet in place of
the installed one (``BINMX_OPS_LIBRARY``). Python and MXNet are not instrumented, so the ASan
runtime is preloaded (``LD_PRELOAD``), with libstdc++ right after it: ASan's ``__cxa_throw``
interceptor must find the real function when it starts, and python3.11 itself does not link
libstdc++. Any ASan or UBSan report aborts the forked child of that case, which the suite then
counts as a crash; the run must end with no crash, hang or wrong result and no report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "asan-ops"


def _tool(name: str) -> str | None:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def _runtime(cxx: str, name: str) -> str | None:
    res = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True)
    path = res.stdout.strip()
    return path if res.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


@pytest.fixture(scope="module")
def sanitized_env() -> dict[str, str]:
    cmake = _tool("cmake")
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cmake is None or cxx is None:
        pytest.skip("needs cmake and a C++ compiler")
    asan, stdcxx = _runtime(cxx, "libasan.so"), _runtime(cxx, "libstdc++.so.6")
    if asan is None or stdcxx is None:
        pytest.skip("the compiler has no libasan.so / libstdc++.so.6 to preload")
    import pybind11  # the build's own requirement

    configure = [
        cmake,
        "-S",
        str(ROOT),
        "-B",
        str(BUILD),
        "-DBINMX_SANITIZE=ON",
        "-DBINMX_PYTHON=ON",
        "-DBINMX_RUNTIME=OFF",
        "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        f"-DPython_EXECUTABLE={sys.executable}",
        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
    ]
    res = subprocess.run(configure, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    res = subprocess.run(
        [cmake, "--build", str(BUILD), "--target", "binmx_ops", "-j", "2"],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    lib = BUILD / "src" / "operators" / "libbinmx_ops.so"
    import scipy_openblas32

    env = dict(os.environ)
    env.update(
        LD_PRELOAD=f"{asan} {stdcxx}",
        LD_LIBRARY_PATH=os.path.join(os.path.dirname(scipy_openblas32.__file__), "lib"),
        BINMX_OPS_LIBRARY=str(lib),
        ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
        BINMX_BAD_INPUT_TIMEOUT="300",
    )
    probe = subprocess.run(
        [sys.executable, "-c", "import binmx._library as l, binmx; print(l._LOADED)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-4000:]
    assert probe.stdout.strip().splitlines()[-1] == str(lib), probe.stdout
    return env


def _run_suite(script: str, env: dict[str, str]) -> str:
    res = subprocess.run(
        [sys.executable, str(ROOT / "tests" / script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    out = res.stdout + res.stderr
    print(res.stdout[-2000:])  # the counts line, shown with -s / on failure
    assert "ERROR: AddressSanitizer" not in out, out[-8000:]
    assert "runtime error:" not in out, out[-8000:]
    assert res.returncode == 0, out[-8000:]
    assert "crash 0, hang 0, wrong 0" in res.stdout, res.stdout[-4000:]
    return res.stdout


@pytest.mark.slow
def test_operator_bad_inputs_under_asan_ubsan(sanitized_env: dict[str, str]) -> None:
    _run_suite("test_bad_input_ops.py", sanitized_env)


@pytest.mark.slow
def test_converter_bad_inputs_under_asan_ubsan(sanitized_env: dict[str, str]) -> None:
    _run_suite("test_bad_input_converter.py", sanitized_env)
