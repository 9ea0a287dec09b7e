"""The binmx-run command: outputs, --profile, --bench, and one-line errors with exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from rt_helpers import FIXTURES


def binmx_run() -> str:
    """$BINMX_RUN, else binmx-run beside this interpreter (where the wheel installs it)."""
    env = os.environ.get("BINMX_RUN")
    if env:
        return env
    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        p = Path(d) / "binmx-run"
        if p.exists():
            return str(p)
    found = shutil.which("binmx-run")
    if found is None:
        pytest.fail("binmx-run is not installed (pip install ./runtime)")
    return found


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binmx_run(), *args], capture_output=True, text=True, timeout=120)


MODEL = str(FIXTURES / "resnet_cifar_fold" / "model")
INPUT = str(FIXTURES / "resnet_cifar_fold" / "input.npy")


def test_output_matches_mxnet(tmp_path) -> None:
    out = tmp_path / "y.npy"
    r = run(
        "--model", MODEL, "--epoch", "1", "--input", INPUT, "--output", str(out), "--threads", "2"
    )
    assert r.returncode == 0, r.stderr
    y, ref = np.load(out), np.load(FIXTURES / "resnet_cifar_fold" / "output.npy")
    assert y.shape == ref.shape
    # Float layers sum in another order than MXNet / oneDNN (see test_runtime_fixtures).
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()


def test_prints_argmax_without_output() -> None:
    r = run("--model", MODEL, "--epoch", "1", "--input", INPUT)
    assert r.returncode == 0, r.stderr
    ref = np.load(FIXTURES / "resnet_cifar_fold" / "output.npy").argmax(1)
    assert f"argmax per row: {ref[0]} {ref[1]}" in r.stdout


def test_profile_and_bench() -> None:
    r = run(
        "--model",
        MODEL,
        "--epoch",
        "1",
        "--input",
        INPUT,
        "--profile",
        "--repeat",
        "3",
        "--bench",
        "5",
        "--threads",
        "1",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("layer"))
    for col in ("op", "output", "binary MACs", "float MACs", "ms", "share", "Gop/s"):
        assert col in header
    assert sum("QConvolution" in line for line in lines) >= 10
    assert any(line.startswith("total") for line in lines)
    bench = [line for line in lines if line.startswith("bench:")]
    assert len(bench) == 1 and "median" in bench[0] and "p90" in bench[0]


@pytest.mark.parametrize(
    "args, code, message",
    [
        ([], 2, "--model is required"),
        (["--model", MODEL], 2, "--epoch is required"),
        (["--model", MODEL, "--epoch", "1"], 2, "--input is required"),
        (["--model", MODEL, "--epoch", "x", "--input", INPUT], 2, "--epoch expects"),
        (["--model", MODEL, "--epoch", "1", "--input", INPUT, "--threads", "0"], 2, "--threads"),
        (["--model", MODEL, "--epoch", "1", "--input", INPUT, "--bench", "-1"], 2, "--bench"),
        (["--model", MODEL, "--epoch", "1", "--input", INPUT, "--frobnicate"], 2, "unknown"),
        (["--model", MODEL + "_nope", "--epoch", "1", "--input", INPUT], 1, "No such file"),
        (["--model", MODEL, "--epoch", "7", "--input", INPUT], 1, "0007.params"),
        (["--model", MODEL, "--epoch", "1", "--input", "/nonexistent.npy"], 1, "nonexistent"),
    ],
)
def test_errors(args, code: int, message: str) -> None:
    r = run(*args)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    first = r.stderr.splitlines()[0]
    assert first.startswith("binmx-run: error:") and message in first, r.stderr


def test_bad_input_files(tmp_path) -> None:
    f64 = tmp_path / "f64.npy"
    np.save(f64, np.zeros((2, 3, 32, 32)))
    r = run("--model", MODEL, "--epoch", "1", "--input", str(f64))
    assert r.returncode == 1 and "float32" in r.stderr and len(r.stderr.splitlines()) == 1
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 4, 32, 32), np.float32))  # 4 channels: the stem takes 3
    r = run("--model", MODEL, "--epoch", "1", "--input", str(wrong))
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"\x93NUMPY garbage")
    r = run("--model", MODEL, "--epoch", "1", "--input", str(junk))
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    r = run("--model", MODEL, "--epoch", "1", "--input", INPUT, "--output", str(tmp_path))
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
