"""The weight side of the Q layers' backward with packed weights (src/operators/weight_grad.h):
the weight gradient is 0, the alpha input gets dalpha_f = sum_i G_f,i sgn(W)_f,i, dx uses
alpha * sgn(W); compared with NumPy (binmx.reference) on both operators."""

from __future__ import annotations

import binmx
import mxnet as mx
import numpy as np
import pytest
from binmx import reference as ref

# float32 sums (our sgemm) vs float64 NumPy over at most a few hundred terms
_TOL = dict(rtol=1e-4, atol=1e-4)


def _sgn(a: np.ndarray) -> np.ndarray:
    return np.where(a < 0, -1.0, 1.0)


def _grads(op, inputs, attrs, dy):
    arrs = [mx.nd.array(a, dtype=a.dtype) for a in inputs]
    for a in arrs:
        a.attach_grad()
    with mx.autograd.record():
        y = op(*arrs, **attrs)
    y.backward(mx.nd.array(dy))
    return y.asnumpy(), [a.grad.asnumpy() for a in arrs]


@pytest.mark.parametrize("channels", [3, 64, 65])
@pytest.mark.parametrize("no_bias", [False, True])
def test_packed_qconv_backward(rng: np.random.Generator, channels: int, no_bias: bool) -> None:
    x = (rng.standard_normal((2, channels, 5, 6)) * 1.2).astype(np.float32)
    x[0, 0, 0, :3] = [1.0, -1.0, 0.0]  # the grad_cancel boundary is inclusive, sgn(0) = +1
    w = rng.standard_normal((4, channels, 3, 3)).astype(np.float32)
    alpha = rng.uniform(0.5, 2.0, 4).astype(np.float32)  # any alpha, not mean |W|
    b = rng.standard_normal(4).astype(np.float32)
    packed = np.asarray(binmx.pack_weight(w))
    attrs = dict(
        kernel=(3, 3),
        num_filter=4,
        pad=(1, 1),
        no_bias=no_bias,
        binarized_weights_only=True,
        scaling_factor=True,
    )
    inputs = [x, packed, alpha] if no_bias else [x, packed, b, alpha]
    dy = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    _, grads = _grads(mx.nd.QConvolution, inputs, attrs, dy)
    dx, dw, dalpha = grads[0], grads[1], grads[-1]
    sw = _sgn(w)
    want_dx, _ = ref.conv2d_grads(_sgn(x), alpha[:, None, None, None] * sw, dy, pad=(1, 1))
    want_dx = want_dx * (np.abs(x) <= 1.0)
    _, g = ref.conv2d_grads(_sgn(x), sw, dy, pad=(1, 1))
    want_dalpha = (g * sw).reshape(4, -1).sum(axis=1)
    np.testing.assert_allclose(dx, want_dx, **_TOL)
    assert dw.dtype == np.int64 and np.count_nonzero(dw) == 0
    np.testing.assert_allclose(dalpha, want_dalpha, **_TOL)
    if not no_bias:
        np.testing.assert_allclose(grads[2], dy.sum(axis=(0, 2, 3)), **_TOL)


@pytest.mark.parametrize("depth", [1, 63, 64, 65, 129])
def test_packed_qfc_backward(rng: np.random.Generator, depth: int) -> None:
    x = (rng.standard_normal((5, depth)) * 1.5).astype(np.float32)
    x[0, 0] = 0.0
    w = rng.standard_normal((7, depth)).astype(np.float32)
    alpha = rng.uniform(0.5, 2.0, 7).astype(np.float32)
    packed = np.asarray(binmx.pack_weight(w))
    attrs = dict(num_hidden=7, no_bias=True, binarized_weights_only=True, scaling_factor=True)
    dy = rng.standard_normal((5, 7)).astype(np.float32)
    _, (dx, dw, dalpha) = _grads(mx.nd.QFullyConnected, [x, packed, alpha], attrs, dy)
    sw = _sgn(w)
    want_dx = (dy.astype(np.float64) @ (alpha[:, None] * sw)) * (np.abs(x) <= 1.0)
    g = dy.astype(np.float64).T @ _sgn(x)
    np.testing.assert_allclose(dx, want_dx, **_TOL)
    assert dw.dtype == np.int64 and np.count_nonzero(dw) == 0
    np.testing.assert_allclose(dalpha, (g * sw).sum(axis=1), **_TOL)
