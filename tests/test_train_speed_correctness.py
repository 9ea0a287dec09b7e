"""The fast float backward (float_conv.cc on OpenBLAS) against the NumPy reference.

QConvolution's STE gradients run either as im2col + GEMM or, for stride 1, as shifted GEMMs on
a shared-padding grid, or as a channels-last im2col ("rows", for small output maps);
BINMX_FLOAT_CONV=im2col|shift|rows forces one (read on every call). All are
checked against binmx.reference on geometries that hit their edges: ragged batch chunks, groups,
dilation, +-1 padding, scaling factor, k-bit. Results must be identical run to run.
"""

from __future__ import annotations

import binmx  # noqa: F401  (registers the Q ops)
import mxnet as mx
import numpy as np
import pytest
from binmx import reference as ref

# float32 GEMM sums (OpenBLAS, blocked) vs float64 NumPy over at most ~2000 terms of size ~1:
# the error is a few 1e-6 relative; 1e-4 leaves room for the order-of-summation spread.
_TOL = dict(rtol=1e-4, atol=1e-4)


def _grads(op, inputs, attrs, dy):
    arrs = [mx.nd.array(a, dtype=a.dtype) for a in inputs]
    for a in arrs:
        a.attach_grad()
    with mx.autograd.record():
        y = op(*arrs, **attrs)
    y.backward(mx.nd.array(dy))
    return y.asnumpy(), [a.grad.asnumpy() for a in arrs]


CONV_CASES = [
    # batch, channels, size, filters, kernel, pad, stride, dilate, groups, pad_value, scaling, bits
    (9, 5, (6, 7), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, 0, False, (1, 1)),
    (3, 8, (5, 5), 6, (3, 3), (1, 1), (1, 1), (1, 1), 2, -1, True, (1, 1)),
    (4, 3, (9, 8), 2, (3, 2), (2, 1), (1, 1), (2, 3), 1, 1, False, (1, 1)),
    (17, 4, (4, 4), 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, 0, True, (1, 1)),
    (5, 6, (12, 12), 5, (5, 5), (0, 0), (1, 1), (1, 1), 1, 0, False, (1, 1)),
    (2, 4, (7, 7), 3, (1, 1), (0, 0), (1, 1), (1, 1), 1, 0, False, (1, 1)),
    (6, 4, (6, 6), 4, (3, 3), (1, 1), (1, 1), (1, 1), 2, 0, False, (2, 3)),
    (6, 4, (8, 7), 4, (3, 3), (1, 1), (2, 2), (1, 1), 1, 0, False, (1, 1)),
    # channels-last path: 16 x 16 transpose tiles with ragged channels (20 a group) and pixels
    # (63), a stride-2 / dilation-2 kernel row, and LeNet's 64-channel 5x5 valid geometry
    (3, 40, (7, 9), 10, (3, 3), (1, 2), (2, 1), (1, 2), 2, 1, False, (1, 1)),
    (2, 64, (12, 12), 16, (5, 5), (0, 0), (1, 1), (1, 1), 1, 0, False, (1, 1)),
]


@pytest.mark.parametrize("method", ["im2col", "shift", "rows", "auto"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"n{c[0]}c{c[1]}k{c[4]}s{c[6]}g{c[8]}")
def test_qconv_backward_paths_match_reference(rng, monkeypatch, method, case):
    n, c, size, f, kernel, pad, stride, dilate, groups, pad_value, scaling, bits = case
    if method != "auto":
        monkeypatch.setenv("BINMX_FLOAT_CONV", method)
    x = (rng.standard_normal((n, c, *size)) * 1.2).astype(np.float32)
    x.flat[:3] = [1.0, -1.0, 0.0]  # grad_cancel boundary (inclusive) and sign(0) = +1
    w = rng.standard_normal((f, c // groups, *kernel)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    act_bit, weight_bit = bits
    geo = dict(stride=stride, dilate=dilate, pad=pad, groups=groups)
    kw = dict(
        geo, scaling_factor=scaling, pad_value=pad_value, act_bit=act_bit, weight_bit=weight_bit
    )
    out_ref = ref.q_conv2d(x, w, b, **kw)
    dy = rng.standard_normal(out_ref.shape).astype(np.float32)
    attrs = dict(
        kernel=kernel,
        num_filter=f,
        num_group=groups,
        stride=stride,
        dilate=dilate,
        pad=pad,
        scaling_factor=scaling,
        pad_value=pad_value,
        grad_cancel=1.0,
        act_bit=act_bit,
        weight_bit=weight_bit,
    )
    y, (dx, dw, db) = _grads(mx.nd.QConvolution, [x, w, b], attrs, dy)
    g = ref.q_conv2d_grads(x, w, dy, grad_cancel=1.0, **kw)
    np.testing.assert_allclose(y, out_ref, **_TOL)
    np.testing.assert_allclose(dx, g["data"], **_TOL)
    np.testing.assert_allclose(dw, g["weight"], **_TOL)
    np.testing.assert_allclose(db, g["bias"], **_TOL)
    # the masked entries are exactly zero, not merely small
    masked = np.abs(x) > 1.0
    assert np.all(dx[masked] == 0.0), np.argwhere(dx[masked] != 0.0)[:5]


@pytest.mark.parametrize("method", ["im2col", "shift", "rows"])
def test_qconv_backward_is_deterministic(rng, monkeypatch, method):
    monkeypatch.setenv("BINMX_FLOAT_CONV", method)
    x = rng.standard_normal((13, 16, 8, 8)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((13, 24, 8, 8)).astype(np.float32)
    attrs = dict(kernel=(3, 3), pad=(1, 1), num_filter=24, no_bias=True)
    first = _grads(mx.nd.QConvolution, [x, w], attrs, dy)[1]
    for _ in range(3):
        again = _grads(mx.nd.QConvolution, [x, w], attrs, dy)[1]
        for a, b in zip(first, again, strict=True):
            assert np.array_equal(a, b), np.argwhere(a != b)[:5]


@pytest.mark.parametrize("act_bit", [1, 4, 32])
def test_qfc_large_backward_matches_reference(rng, act_bit):
    """Sizes big enough for the GEMM to be split over threads (m * n * k >= 2^20)."""
    x = (rng.standard_normal((300, 200)) * 1.3).astype(np.float32)
    w = rng.standard_normal((100, 200)).astype(np.float32)
    b = rng.standard_normal(100).astype(np.float32)
    dy = rng.standard_normal((300, 100)).astype(np.float32)
    attrs = dict(num_hidden=100, act_bit=act_bit, scaling_factor=True)
    y, (dx, dw, db) = _grads(mx.nd.QFullyConnected, [x, w, b], attrs, dy)
    g = ref.q_dense_grads(x, w, dy, act_bit=act_bit, scaling_factor=True)
    np.testing.assert_allclose(
        y, ref.q_dense(x, w, b, act_bit=act_bit, scaling_factor=True), **_TOL
    )
    np.testing.assert_allclose(dx, g["data"], **_TOL)
    # dW sums 300 terms; relative 1e-4 of the largest entry (|G| up to ~50)
    np.testing.assert_allclose(dw, g["weight"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(db, g["bias"], **_TOL)


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("method", ["im2col", "rows"])
def test_qconv_backward_many_chunks_match_reference(rng, monkeypatch, method, threads):
    # 100 images: several batch chunks per parallel block, so each block's dW partial starts
    # with a beta = 0 GEMM and accumulates the later chunks.
    monkeypatch.setenv("BINMX_FLOAT_CONV", method)
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    x = rng.standard_normal((100, 8, 6, 6)).astype(np.float32)
    w = rng.standard_normal((12, 8, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((100, 12, 6, 6)).astype(np.float32)
    attrs = dict(kernel=(3, 3), pad=(1, 1), num_filter=12, no_bias=True)
    dx, dw = _grads(mx.nd.QConvolution, [x, w], attrs, dy)[1]
    g = ref.q_conv2d_grads(x, w, dy, grad_cancel=1.0, pad=(1, 1))
    np.testing.assert_allclose(dx, g["data"], **_TOL)
    # dW sums 3600 terms of size ~1: relative 1e-4 of the largest entries (~200)
    np.testing.assert_allclose(dw, g["weight"], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.parametrize("hidden", [127, 128, 129, 300])
def test_qfc_blocked_sign_weight_backward_matches_reference(rng, monkeypatch, hidden, threads):
    """1-bit float weights without scaling: dx = dy . sgn(W) runs over blocks of 128 hidden
    rows (sgn made per block, partial products accumulated), on 2 threads in two slices of
    dx's columns (big enough to split: 37 * 300 * hidden >= 2^20 for hidden >= 95); exact
    zeros in W count as +1."""
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    x = (rng.standard_normal((37, 300)) * 1.3).astype(np.float32)
    w = rng.standard_normal((hidden, 300)).astype(np.float32)
    w.flat[:7] = 0.0
    dy = rng.standard_normal((37, hidden)).astype(np.float32)
    attrs = dict(num_hidden=hidden, no_bias=True)
    dx, dw = _grads(mx.nd.QFullyConnected, [x, w], attrs, dy)[1]
    g = ref.q_dense_grads(x, w, dy)
    np.testing.assert_allclose(dx, g["data"], **_TOL)
    np.testing.assert_allclose(dw, g["weight"], **_TOL)


@pytest.mark.parametrize("isa", ["avx2", "scalar"])
def test_qconv_rows_portable_transposes_match_reference(rng, monkeypatch, isa):
    # BINMX_ISA below avx512 makes the channels-last path use its portable transpose loops
    # instead of the AVX-512 tiles; ragged 20-channel groups and 63-pixel images.
    monkeypatch.setenv("BINMX_FLOAT_CONV", "rows")
    monkeypatch.setenv("BINMX_ISA", isa)
    x = rng.standard_normal((3, 40, 7, 9)).astype(np.float32)
    w = rng.standard_normal((10, 20, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((3, 10, 7, 9)).astype(np.float32)
    attrs = dict(kernel=(3, 3), pad=(1, 1), num_filter=10, num_group=2, no_bias=True)
    dx, dw = _grads(mx.nd.QConvolution, [x, w], attrs, dy)[1]
    g = ref.q_conv2d_grads(x, w, dy, grad_cancel=1.0, pad=(1, 1), groups=2)
    np.testing.assert_allclose(dx, g["data"], **_TOL)
    np.testing.assert_allclose(dw, g["weight"], **_TOL)
