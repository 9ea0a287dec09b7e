"""The runtime's float layers (src/runtime/float_ops.h): conv + bias + relu + max-pool and dense.

Builds the C++ runtime tests (cmake -DBINMX_PYTHON=OFF -DBINMX_TESTS=ON into build/rt-tests),
runs ``rt_float_ops_test`` (every kernel path against a double reference over a grid of
geometries, thread-count invariance compared bit for bit), and, where MXNet imports, compares a
few real model shapes with ``mx.nd.Convolution`` + ``Activation`` + ``Pooling`` and
``mx.nd.FullyConnected`` through ``rt_float_io`` (raw float32 files in and out).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from cmake_build import ROOT, build_targets

BUILD = ROOT / "build" / "rt-tests"
EXE_DIR = BUILD / "src" / "runtime"
ISAS = ["scalar", "avx2", "avx512"]  # rt_float_io maps an unavailable one to the next path down


@pytest.fixture(scope="module")
def exe_dir() -> Path:
    build_targets(BUILD, ["rt_float_ops_test", "rt_float_io"])
    return EXE_DIR


@pytest.mark.slow
def test_float_ops_grid(exe_dir: Path) -> None:
    run = subprocess.run([str(exe_dir / "rt_float_ops_test")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " 0 failures" in run.stdout


def _run_io(exe_dir: Path, args: list[str]) -> str:
    run = subprocess.run([str(exe_dir / "rt_float_io"), *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else v


# (batch, channels, h, w, filters, kernel, stride, pad, dilate, groups, bias, relu, pool)
# pool: None or (kernel, stride, pad, convention)
CONV_CASES = [
    (1, 3, 224, 224, 64, 7, 2, 3, 1, 1, True, True, (3, 2, 1, "valid")),  # ResNet-18 stem
    (2, 1, 28, 28, 64, 5, 1, 0, 1, 1, True, True, (2, 2, 0, "valid")),  # LeNet conv0
    (2, 8, 13, 11, 12, 3, 2, 2, 2, 4, True, False, (3, 2, 1, "full")),  # groups, dilation
    (1, 17, 9, 7, 33, 1, 1, 0, 1, 1, False, False, None),  # 1x1, no im2col
    (1, 128, 28, 28, 256, 1, 2, 0, 1, 1, False, False, None),  # 1x1 stride-2 shortcut
    (1, 2, 5, 5, 3, 1, 1, 0, 1, 1, True, False, (1, 3, 0, "full")),  # empty windows: -FLT_MAX
    (2, 3, 10, 9, 5, (1, 3), (2, 1), (0, 1), 1, 1, True, True, (2, 2, 1, "full")),
    (2, 4, 15, 28, 32, 3, 1, 1, 1, 2, True, True, (2, 2, 0, "full")),  # direct, groups
    (1, 2, 12, 28, 16, 3, 1, 1, 1, 1, False, False, None),  # direct, no pool
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[:5]}k{c[5]}s{c[6]}")
def test_conv_matches_mxnet(
    exe_dir: Path, tmp_path: Path, rng: np.random.Generator, case: tuple
) -> None:
    mx = pytest.importorskip("mxnet")
    n, c, h, w, f, k, s, p, d, g, with_bias, relu, pool = case
    k, s, p, d = _pair(k), _pair(s), _pair(p), _pair(d)
    x = rng.uniform(-1, 1, (n, c, h, w)).astype(np.float32)
    wt = rng.uniform(-1, 1, (f, c // g, *k)).astype(np.float32)
    b = rng.uniform(-1, 1, (f,)).astype(np.float32)

    def reference(xv: np.ndarray, wv: np.ndarray, bv: np.ndarray | None, act: bool) -> np.ndarray:
        y = mx.nd.Convolution(
            mx.nd.array(xv),
            mx.nd.array(wv),
            None if bv is None else mx.nd.array(bv),
            kernel=k,
            stride=s,
            pad=p,
            dilate=d,
            num_filter=f,
            num_group=g,
            no_bias=bv is None,
        )
        if act:
            y = mx.nd.Activation(y, act_type="relu")
        if pool is not None:
            y = mx.nd.Pooling(
                y,
                kernel=_pair(pool[0]),
                stride=_pair(pool[1]),
                pad=_pair(pool[2]),
                pool_type="max",
                pooling_convention=pool[3],
            )
        return y.asnumpy()

    want = reference(x, wt, b if with_bias else None, relu)
    # Tolerance: each output is a float sum of K = (C/g) kh kw products (+ bias), computed by
    # two different summation orders (ours, oneDNN's); each is within K * 2^-24 * sum |x w|
    # of the exact value (worst-case recursive-summation bound), so the two differ by at most
    # twice that. conv(|x|, |w|) + |b| is that sum of magnitudes; relu and max are 1-Lipschitz,
    # so pooling the magnitudes bounds a pooled output's error too.
    mag = reference(np.abs(x), np.abs(wt), np.abs(b) if with_bias else None, False)
    terms = (c // g) * k[0] * k[1] + 2
    tol = 2 * terms * 2.0**-24 * mag + 1e-30
    # A window with no cell inside the conv output is -FLT_MAX in both, exactly.
    tol[mag == np.finfo(np.float32).min] = 0.0
    for name, arr in (("x", x), ("w", wt), ("b", b)):
        arr.tofile(tmp_path / f"{name}.bin")
    geom = ",".join(str(v) for v in (n, c, h, w, f, *k, *s, *p, *d, g))
    pool_arg = "none"
    if pool is not None:
        pool_arg = ",".join(
            str(v) for v in (*_pair(pool[0]), *_pair(pool[1]), *_pair(pool[2]), pool[3] == "full")
        )
        pool_arg = pool_arg.replace("True", "1").replace("False", "0")
    for isa in ISAS:
        for threads in (1, 2):
            out = tmp_path / f"y_{isa}_{threads}.bin"
            info = _run_io(
                exe_dir,
                [
                    "conv",
                    geom,
                    str(int(with_bias)),
                    str(int(relu)),
                    pool_arg,
                    isa,
                    str(threads),
                    str(tmp_path / "x.bin"),
                    str(tmp_path / "w.bin"),
                    str(tmp_path / "b.bin"),
                    str(out),
                ],
            )
            shape = tuple(int(v) for v in info.split("shape=")[1].split(","))
            assert shape == want.shape, f"{info}: MXNet's shape is {want.shape}"
            got = np.fromfile(out, dtype=np.float32).reshape(shape)
            err = np.abs(got.astype(np.float64) - want)
            bad = np.argwhere(~(err <= tol))
            assert bad.size == 0, (
                f"{info} threads={threads}: {len(bad)} outputs off, first at {tuple(bad[0])}: "
                f"got {got[tuple(bad[0])]!r}, MXNet {want[tuple(bad[0])]!r}, "
                f"tol {tol[tuple(bad[0])]!r}"
            )


@pytest.mark.parametrize(
    ("rows", "depth", "hidden", "with_bias", "relu"),
    [(1, 512, 1000, True, False), (7, 65, 17, True, True), (64, 800, 10, False, False)],
)
def test_dense_matches_mxnet(
    exe_dir: Path,
    tmp_path: Path,
    rng: np.random.Generator,
    rows: int,
    depth: int,
    hidden: int,
    with_bias: bool,
    relu: bool,
) -> None:
    mx = pytest.importorskip("mxnet")
    x = rng.uniform(-1, 1, (rows, depth)).astype(np.float32)
    wt = rng.uniform(-1, 1, (hidden, depth)).astype(np.float32)
    b = rng.uniform(-1, 1, (hidden,)).astype(np.float32)

    def reference(xv: np.ndarray, wv: np.ndarray, bv: np.ndarray) -> np.ndarray:
        y = mx.nd.FullyConnected(
            mx.nd.array(xv),
            mx.nd.array(wv),
            mx.nd.array(bv) if with_bias else None,
            num_hidden=hidden,
            no_bias=not with_bias,
        )
        return y.asnumpy()

    want = reference(x, wt, b)
    if relu:
        want = np.maximum(want, 0)
    # Same bound as the conv test: two summation orders of `depth` products, each within
    # depth * 2^-24 * sum |x w| of the exact sum.
    tol = 2 * (depth + 2) * 2.0**-24 * reference(np.abs(x), np.abs(wt), np.abs(b)) + 1e-30
    for name, arr in (("x", x), ("w", wt), ("b", b)):
        arr.tofile(tmp_path / f"{name}.bin")
    for isa in ISAS:
        for threads in (1, 2):
            out = tmp_path / "y.bin"
            info = _run_io(
                exe_dir,
                [
                    "dense",
                    f"{rows},{depth},{hidden}",
                    str(int(with_bias)),
                    str(int(relu)),
                    isa,
                    str(threads),
                    str(tmp_path / "x.bin"),
                    str(tmp_path / "w.bin"),
                    str(tmp_path / "b.bin"),
                    str(out),
                ],
            )
            got = np.fromfile(out, dtype=np.float32).reshape(rows, hidden)
            err = np.abs(got.astype(np.float64) - want)
            bad = np.argwhere(~(err <= tol))
            assert bad.size == 0, (
                f"{info} threads={threads}: first bad output {tuple(bad[0])}: "
                f"got {got[tuple(bad[0])]!r}, MXNet {want[tuple(bad[0])]!r}"
            )


def test_io_tool_rejects_bad_geometry(exe_dir: Path, tmp_path: Path) -> None:
    """A geometry the runtime refuses is a one-line error, not a crash."""
    np.zeros(64, np.float32).tofile(tmp_path / "x.bin")
    np.zeros(9, np.float32).tofile(tmp_path / "w.bin")
    run = subprocess.run(
        [
            str(exe_dir / "rt_float_io"),
            "conv",
            "1,1,2,2,1,3,3,1,1,0,0,1,1,1",
            "0",
            "0",
            "none",
            "avx512",
            "1",
            str(tmp_path / "x.bin"),
            str(tmp_path / "w.bin"),
            "-",
            str(tmp_path / "y.bin"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "larger than the padded input" in run.stderr
