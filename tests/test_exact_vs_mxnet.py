"""Every ISA (scalar, avx2, avx512) at 1 and 2 threads meets MXNet's own operators exactly.

The binary layers compute integer dot products of +-1 values, so QConvolution must equal
MXNet's Convolution on sign()ed data and QFullyConnected MXNet's FullyConnected, bit for bit
(``==``), on every kernel path and thread count -- including data and weights holding NaN,
+Inf, -Inf, -0.0 and +0.0. binmx's sign is sgn(v) = -1 for v < 0, else +1: -0.0 and NaN give
+1 (MXNet's own ``sign`` would give 0 and NaN), so the reference applies that sgn in NumPy
and hands MXNet +-1 floats. A bias is one float add after the exact integer in both.

The path and the thread count are chosen per call with BINMX_ISA / OMP_NUM_THREADS (read on
every call, src/xnor_gemm/dispatch.cc); a path this CPU or build lacks is skipped with the
reason.
"""

from __future__ import annotations

import contextlib
import os

import binmx
import mxnet as mx
import numpy as np
import pytest
from binmx import xnor

ISAS = ["scalar", "avx2", "avx512"]
THREADS = ["1", "2"]


def _sgn(a: np.ndarray) -> np.ndarray:
    return np.where(a < 0, -1.0, 1.0).astype(np.float32)


def _special(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normal values with about 3% each of NaN, +Inf, -Inf, -0.0 and +0.0."""
    x = rng.standard_normal(shape).astype(np.float32)
    pick = rng.random(shape)
    for i, v in enumerate((np.nan, np.inf, -np.inf, -0.0, 0.0)):
        x[(pick >= 0.03 * i) & (pick < 0.03 * (i + 1))] = v
    return x


@contextlib.contextmanager
def _env(**env: str):
    mx.nd.waitall()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        mx.nd.waitall()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _require(isa: str) -> None:
    if isa not in xnor.available_isas():
        pytest.skip(f"the {isa} path is not built or not supported by this CPU")


def _assert_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bad = np.argwhere(got != want)
    assert bad.size == 0, (
        f"{what}: {len(bad)} mismatches, first at {tuple(bad[0])}: got {got[tuple(bad[0])]}, "
        f"want {want[tuple(bad[0])]}"
    )


# (channels, H, W, filters, kernel, stride, pad, dilate, groups): word boundaries of the
# channels (63/64/65, 127/128/129), odd sizes, padding, strides, dilation and groups.
CONV_CASES = [
    (1, 7, 7, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (3, 9, 8, 5, (3, 3), (2, 1), (1, 0), (1, 1), 1),
    (63, 6, 6, 17, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (64, 5, 7, 64, (1, 1), (2, 2), (0, 0), (1, 1), 1),
    (65, 6, 5, 65, (3, 3), (1, 2), (2, 1), (1, 1), 1),
    (127, 5, 5, 8, (3, 1), (1, 1), (1, 0), (2, 1), 1),
    (128, 4, 4, 33, (2, 2), (1, 1), (1, 1), (1, 1), 1),
    (129, 5, 6, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (16, 9, 9, 8, (3, 3), (1, 1), (1, 1), (1, 1), 4),
    (130, 6, 6, 10, (3, 3), (2, 2), (1, 1), (1, 1), 2),
    (8, 10, 10, 4, (3, 3), (3, 3), (4, 4), (2, 2), 1),
]


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
def test_qconvolution_equals_convolution(isa: str, threads: str) -> None:
    _require(isa)
    rng = np.random.default_rng(ISAS.index(isa) * 10 + int(threads))
    for c, h, w, f, kernel, stride, pad, dilate, groups in CONV_CASES:
        x = _special(rng, (2, c, h, w))
        wt = _special(rng, (f, c // groups, *kernel))
        bias = rng.standard_normal(f).astype(np.float32)
        attrs = dict(
            kernel=kernel, stride=stride, pad=pad, dilate=dilate, num_filter=f, num_group=groups
        )
        want = mx.nd.Convolution(
            mx.nd.array(_sgn(x)), mx.nd.array(_sgn(wt)), mx.nd.array(bias), **attrs
        ).asnumpy()
        packed = mx.nd.array(np.asarray(binmx.pack_weight(wt)), dtype=np.int64)
        with _env(BINMX_ISA=isa, OMP_NUM_THREADS=threads):
            assert xnor.current_isa() == isa
            float_w = mx.nd.QConvolution(
                mx.nd.array(x), mx.nd.array(wt), mx.nd.array(bias), **attrs
            ).asnumpy()
            packed_w = mx.nd.QConvolution(
                mx.nd.array(x), packed, mx.nd.array(bias), binarized_weights_only=True, **attrs
            ).asnumpy()
        what = f"isa={isa} threads={threads} C={c} F={f} {attrs}"
        _assert_equal(float_w, want, what + " float weights")
        _assert_equal(packed_w, want, what + " packed weights")


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
def test_qconvolution_residual_and_affine_equal_mxnet(isa: str, threads: str) -> None:
    """The fused extras: sgn(x * s + t) as the activation, and a residual added last."""
    _require(isa)
    rng = np.random.default_rng(100 + ISAS.index(isa))
    for c in (5, 64, 65):
        x = _special(rng, (2, c, 6, 6))
        wt = _special(rng, (9, c, 3, 3))
        s = rng.standard_normal(c).astype(np.float32)
        t = rng.standard_normal(c).astype(np.float32)
        res = rng.standard_normal((2, 9, 6, 6)).astype(np.float32)
        attrs = dict(kernel=(3, 3), pad=(1, 1), num_filter=9, no_bias=True)
        # float32 product then sum, rounded separately, as the packing pass computes it
        prod = (x * s.reshape(1, -1, 1, 1)).astype(np.float32)
        act = _sgn((prod + t.reshape(1, -1, 1, 1)).astype(np.float32))
        conv = mx.nd.Convolution(mx.nd.array(act), mx.nd.array(_sgn(wt)), **attrs)
        want = (conv + mx.nd.array(res)).asnumpy()
        with _env(BINMX_ISA=isa, OMP_NUM_THREADS=threads):
            got = mx.nd.QConvolution(
                mx.nd.array(x),
                mx.nd.array(wt),
                mx.nd.array(s),
                mx.nd.array(t),
                mx.nd.array(res),
                input_affine=True,
                residual=True,
                **attrs,
            ).asnumpy()
        _assert_equal(got, want, f"isa={isa} threads={threads} C={c} affine+residual")


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
def test_qfullyconnected_equals_fully_connected(isa: str, threads: str) -> None:
    _require(isa)
    rng = np.random.default_rng(200 + ISAS.index(isa))
    for rows, depth, hidden in [
        (1, 1, 3),
        (3, 63, 5),
        (4, 64, 64),
        (2, 65, 17),
        (5, 129, 8),
        (7, 513, 33),
        (1, 1000, 10),
    ]:
        x = _special(rng, (rows, depth))
        wt = _special(rng, (hidden, depth))
        bias = rng.standard_normal(hidden).astype(np.float32)
        want = mx.nd.FullyConnected(
            mx.nd.array(_sgn(x)), mx.nd.array(_sgn(wt)), mx.nd.array(bias), num_hidden=hidden
        ).asnumpy()
        packed = mx.nd.array(np.asarray(binmx.pack_weight(wt)), dtype=np.int64)
        with _env(BINMX_ISA=isa, OMP_NUM_THREADS=threads):
            float_w = mx.nd.QFullyConnected(
                mx.nd.array(x), mx.nd.array(wt), mx.nd.array(bias), num_hidden=hidden
            ).asnumpy()
            packed_w = mx.nd.QFullyConnected(
                mx.nd.array(x),
                packed,
                mx.nd.array(bias),
                num_hidden=hidden,
                binarized_weights_only=True,
            ).asnumpy()
        what = f"isa={isa} threads={threads} rows={rows} depth={depth} hidden={hidden}"
        _assert_equal(float_w, want, what + " float weights")
        _assert_equal(packed_w, want, what + " packed weights")
