"""QActivation / QConvolution / QFullyConnected against MXNet's own ops and binmx.reference."""

from __future__ import annotations

import os

import binmx
import mxnet as mx
import numpy as np
import pytest
from binmx import reference as ref
from binmx import xnor

MXNetError = mx.base.MXNetError


def _sgn(a: np.ndarray) -> np.ndarray:
    return np.where(a >= 0, np.float32(1), np.float32(-1))


def _data(rng: np.random.Generator, shape: tuple[int, ...], zeros: float = 0.1) -> np.ndarray:
    """Normal data with a fraction of exact +0.0 and -0.0 (sgn must give +1 for both)."""
    x = rng.standard_normal(shape).astype(np.float32)
    mask = rng.random(shape) < zeros
    x[mask] = np.where(rng.random(int(mask.sum())) < 0.5, 0.0, -0.0).astype(np.float32)
    return x


def _assert_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bad = np.argwhere(got != want)
    assert bad.size == 0, (
        f"{what}: {len(bad)} mismatches, first at {tuple(bad[0])}: got "
        f"{got[tuple(bad[0])]}, want {want[tuple(bad[0])]}"
    )


def _conv_case(rng: np.random.Generator) -> dict:
    groups = int(rng.choice([1, 1, 2, 4]))
    cg = int(rng.choice([1, 3, 63, 64, 65, 130]))
    if groups > 1:
        cg = int(rng.choice([1, 3, 16, 33, 65]))
    k = int(rng.choice([1, 3, 5, 7]))
    kernel = (k, k) if rng.random() < 0.7 else (k, int(rng.choice([1, 3])))
    dil = int(rng.choice([1, 2]))
    pad = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
    size = []
    for d in range(2):
        lo = max(1, dil * (kernel[d] - 1) + 1 - 2 * pad[d])
        size.append(int(rng.integers(lo, lo + 7)))
    return dict(
        batch=int(rng.integers(1, 4)),
        channels=cg * groups,
        h=size[0],
        w=size[1],
        num_filter=groups * int(rng.integers(1, 6)),
        kernel=kernel,
        stride=(int(rng.choice([1, 2])), int(rng.choice([1, 2]))),
        dilate=(dil, dil),
        pad=pad,
        groups=groups,
        pad_value=int(rng.choice([0, 1, -1])),
        bias=bool(rng.random() < 0.5),
        scaling=bool(rng.random() < 0.3),
    )


def _conv_expected(x, w, b, c) -> np.ndarray:
    """MXNet's float Convolution on sgn() data (explicit +-1 border for pad_value != 0)."""
    xs = _sgn(x)
    pad = c["pad"]
    if c["pad_value"] != 0:
        xs = np.pad(
            xs,
            ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])),
            constant_values=np.float32(c["pad_value"]),
        )
        pad = (0, 0)
    out = mx.nd.Convolution(
        mx.nd.array(xs),
        mx.nd.array(_sgn(w)),
        kernel=c["kernel"],
        stride=c["stride"],
        dilate=c["dilate"],
        pad=pad,
        num_filter=c["num_filter"],
        num_group=c["groups"],
        no_bias=True,
    ).asnumpy()
    if c["scaling"]:
        out = out * ref.scaling_alpha(w)[None, :, None, None]
    if b is not None:
        out = out + b[None, :, None, None]
    return out


def _conv_attrs(c: dict) -> dict:
    return dict(
        kernel=c["kernel"],
        stride=c["stride"],
        dilate=c["dilate"],
        pad=c["pad"],
        num_filter=c["num_filter"],
        num_group=c["groups"],
        no_bias=not c["bias"],
        pad_value=c["pad_value"],
        scaling_factor=c["scaling"],
    )


def _conv_inputs(rng, c):
    x = _data(rng, (c["batch"], c["channels"], c["h"], c["w"]))
    w = _data(rng, (c["num_filter"], c["channels"] // c["groups"], *c["kernel"]))
    b = rng.standard_normal(c["num_filter"]).astype(np.float32) if c["bias"] else None
    return x, w, b


def test_qconv_forward_grid_matches_convolution(rng):
    for trial in range(40):
        c = _conv_case(rng)
        x, w, b = _conv_inputs(rng, c)
        args = [mx.nd.array(x), mx.nd.array(w)] + ([mx.nd.array(b)] if b is not None else [])
        got = mx.nd.QConvolution(*args, **_conv_attrs(c)).asnumpy()
        want = _conv_expected(x, w, b, c)
        if c["scaling"]:
            # alpha = mean|W_f| is a float64 sum rounded to float32 in both; the summation order
            # differs (sequential vs numpy pairwise), which can move alpha by 1 ulp.
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6, err_msg=str(c))
        else:
            _assert_equal(got, want, f"trial {trial} {c}")


def test_qconv_packed_is_bit_identical_to_float_path(rng):
    for _ in range(15):
        c = _conv_case(rng)
        x, w, b = _conv_inputs(rng, c)
        attrs = _conv_attrs(c)
        extra = [mx.nd.array(b)] if b is not None else []
        packed = binmx.pack_weight(w)
        _assert_equal(packed, ref.pack_weight(w), f"pack_weight {c}")
        assert packed.dtype == np.int64
        f_out = mx.nd.QConvolution(mx.nd.array(x), mx.nd.array(w), *extra, **attrs)
        p_in = [mx.nd.array(x), mx.nd.array(packed, dtype=np.int64), *extra]
        if c["scaling"]:
            p_in.append(mx.nd.array(ref.scaling_alpha(w)))
        p_out = mx.nd.QConvolution(*p_in, binarized_weights_only=True, **attrs)
        if c["scaling"]:
            # same 1-ulp alpha caveat as above (the packed path takes the NumPy alpha)
            np.testing.assert_allclose(p_out.asnumpy(), f_out.asnumpy(), rtol=2e-6, atol=1e-6)
        else:
            _assert_equal(p_out.asnumpy(), f_out.asnumpy(), f"packed vs float {c}")


@pytest.mark.parametrize("depth", [1, 63, 64, 65, 130, 513])
def test_qfc_forward_matches_fullyconnected(rng, depth):
    for flatten in (True, False):
        hidden = int(rng.integers(1, 70))
        shape = (3, 2, depth) if not flatten else (4, depth)
        x = _data(rng, shape)
        w = _data(rng, (hidden, depth))
        b = rng.standard_normal(hidden).astype(np.float32)
        got = mx.nd.QFullyConnected(
            mx.nd.array(x), mx.nd.array(w), mx.nd.array(b), num_hidden=hidden, flatten=flatten
        ).asnumpy()
        want = (
            mx.nd.FullyConnected(
                mx.nd.array(_sgn(x)),
                mx.nd.array(_sgn(w)),
                num_hidden=hidden,
                flatten=flatten,
                no_bias=True,
            ).asnumpy()
            + b
        )
        _assert_equal(got, want, f"depth={depth} flatten={flatten}")
        packed = binmx.pack_weight(w)
        assert packed.shape == (hidden, (depth + 63) // 64)
        got_p = mx.nd.QFullyConnected(
            mx.nd.array(x),
            mx.nd.array(packed, dtype=np.int64),
            mx.nd.array(b),
            num_hidden=hidden,
            flatten=flatten,
            binarized_weights_only=True,
        ).asnumpy()
        _assert_equal(got_p, got, "packed vs float")
        # scaling: packed with the reference alpha vs float path
        alpha = ref.scaling_alpha(w)
        got_s = mx.nd.QFullyConnected(
            mx.nd.array(x),
            mx.nd.array(w),
            num_hidden=hidden,
            flatten=flatten,
            no_bias=True,
            scaling_factor=True,
        ).asnumpy()
        # alpha summation order (see test_qconv_forward_grid_matches_convolution)
        np.testing.assert_allclose(got_s, (want - b) * alpha, rtol=2e-6, atol=1e-6)


def _grads(op, inputs, attrs, dy):
    arrs = [mx.nd.array(a, dtype=a.dtype) for a in inputs]
    for a in arrs:
        a.attach_grad()
    with mx.autograd.record():
        y = op(*arrs, **attrs)
    y.backward(mx.nd.array(dy))
    return y.asnumpy(), [a.grad.asnumpy() for a in arrs]


# float32 sums (MXNet / our sgemm) vs float64 NumPy over at most a few thousand terms
_GRAD_TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "cfg",
    [
        dict(act_bit=1, scaling=False, pad_value=0, groups=1, stride=(1, 1), dilate=(1, 1)),
        dict(act_bit=1, scaling=True, pad_value=0, groups=2, stride=(2, 1), dilate=(1, 2)),
        dict(act_bit=1, scaling=False, pad_value=-1, groups=1, stride=(1, 2), dilate=(2, 1)),
        dict(act_bit=1, scaling=True, pad_value=1, groups=4, stride=(1, 1), dilate=(1, 1)),
        dict(
            act_bit=2,
            weight_bit=3,
            scaling=False,
            pad_value=0,
            groups=1,
            stride=(1, 1),
            dilate=(1, 1),
        ),
        dict(
            act_bit=32,
            weight_bit=1,
            scaling=True,
            pad_value=0,
            groups=2,
            stride=(2, 2),
            dilate=(1, 1),
        ),
        dict(
            act_bit=4,
            weight_bit=32,
            scaling=False,
            pad_value=0,
            groups=1,
            stride=(1, 1),
            dilate=(2, 2),
        ),
    ],
)
def test_qconv_gradients_match_reference(rng, cfg):
    c = dict(cfg)
    groups = c.pop("groups")
    chans, filters = 4 * groups + 4, 3 * groups
    x = (rng.standard_normal((2, chans, 7, 6)) * 1.2).astype(np.float32)
    x[0, 0, 0, :3] = [1.0, -1.0, 0.0]  # the grad_cancel boundary is inclusive
    w = rng.standard_normal((filters, chans // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    geo = dict(stride=c.pop("stride"), dilate=c.pop("dilate"), pad=(1, 2), groups=groups)
    bits = dict(act_bit=c["act_bit"], weight_bit=c.get("weight_bit", c["act_bit"]))
    attrs = dict(
        kernel=(3, 3),
        num_filter=filters,
        num_group=groups,
        stride=geo["stride"],
        dilate=geo["dilate"],
        pad=geo["pad"],
        scaling_factor=c["scaling"],
        pad_value=c["pad_value"],
        grad_cancel=0.9,
        **bits,
    )
    kw = dict(geo, scaling_factor=c["scaling"], pad_value=c["pad_value"], **bits)
    out_ref = ref.q_conv2d(x, w, b, **kw)
    dy = rng.standard_normal(out_ref.shape).astype(np.float32)
    y, (dx, dw, db) = _grads(mx.nd.QConvolution, [x, w, b], attrs, dy)
    np.testing.assert_allclose(y, out_ref, **_GRAD_TOL)
    g = ref.q_conv2d_grads(x, w, dy, grad_cancel=0.9, **kw)
    np.testing.assert_allclose(dx, g["data"], **_GRAD_TOL)
    np.testing.assert_allclose(dw, g["weight"], **_GRAD_TOL)
    np.testing.assert_allclose(db, g["bias"], **_GRAD_TOL)
    assert dx[0, 0, 0, 0] == pytest.approx(g["data"][0, 0, 0, 0], abs=1e-4)


@pytest.mark.parametrize("scaling", [False, True])
@pytest.mark.parametrize("act_bit", [1, 3, 32])
def test_qfc_gradients_match_reference(rng, scaling, act_bit):
    x = (rng.standard_normal((5, 3, 10)) * 1.5).astype(np.float32)
    w = rng.standard_normal((7, 30)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    attrs = dict(num_hidden=7, scaling_factor=scaling, act_bit=act_bit, grad_cancel=1.1)
    dy = rng.standard_normal((5, 7)).astype(np.float32)
    y, (dx, dw, db) = _grads(mx.nd.QFullyConnected, [x, w, b], attrs, dy)
    np.testing.assert_allclose(
        y, ref.q_dense(x, w, b, act_bit=act_bit, scaling_factor=scaling), **_GRAD_TOL
    )
    g = ref.q_dense_grads(x, w, dy, act_bit=act_bit, scaling_factor=scaling, grad_cancel=1.1)
    np.testing.assert_allclose(dx, g["data"], **_GRAD_TOL)
    np.testing.assert_allclose(dw, g["weight"], **_GRAD_TOL)
    np.testing.assert_allclose(db, g["bias"], **_GRAD_TOL)


def test_scaling_weight_gradient_is_the_true_derivative(rng):
    """Finite differences of sum(dy * out) wrt one latent weight whose sign does not flip."""
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    w = (rng.standard_normal((2, 3, 3, 3)) + 0.0).astype(np.float32)
    dy = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    kw = dict(pad=(1, 1), scaling_factor=True)
    g = ref.q_conv2d_grads(x, w, dy, **kw)["weight"]
    # The STE treats d sgn(w)/dw as 1: the exact part is the alpha term, which finite
    # differences see when the sign stays fixed; the STE part is alpha * G.
    eps = 1e-3
    wp = w.copy()
    wp[1, 2, 0, 1] += eps if w[1, 2, 0, 1] >= 0 else -eps
    step = wp[1, 2, 0, 1] - w[1, 2, 0, 1]
    f0 = (ref.q_conv2d(x, w, **kw) * dy).sum()
    f1 = (ref.q_conv2d(x, wp, **kw) * dy).sum()
    alpha_part = (f1 - f0) / step
    _, gq = ref.conv2d_grads(_sgn(x), _sgn(w), dy.astype(np.float64), pad=(1, 1))
    ste_part = ref.scaling_alpha(w)[1] * gq[1, 2, 0, 1]
    assert g[1, 2, 0, 1] == pytest.approx(alpha_part + ste_part, rel=1e-3)


def test_qactivation_zeros_boundary_and_backward_only():
    x = np.array([-2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 1.0000001, 3.0], dtype=np.float32)
    dy = np.arange(1, 10, dtype=np.float32)
    y, (dx,) = _grads(mx.nd.QActivation, [x], {}, dy)
    _assert_equal(y, np.array([-1, -1, -1, 1, 1, 1, 1, 1, 1], np.float32), "sgn")
    _assert_equal(dx, np.array([0, 2, 3, 4, 5, 6, 7, 0, 0], np.float32), "grad mask")
    y, (dx,) = _grads(mx.nd.QActivation, [x], dict(backward_only=True, grad_cancel=0.5), dy)
    _assert_equal(y, x, "backward_only forward is identity")
    _assert_equal(dx, np.array([0, 0, 3, 4, 5, 6, 0, 0, 0], np.float32), "grad_cancel=0.5")
    y, (dx,) = _grads(mx.nd.QActivation, [x], dict(act_bit=32), dy)
    _assert_equal(y, x, "act_bit=32 forward")
    _assert_equal(dx, dy, "act_bit=32 backward")


def test_nan_is_plus_one_in_every_path(rng):
    """sgn(NaN) = +1 wherever it is taken (QActivation, the float-weight STE forward, the packed
    bits), the same rule as the sign bits (bit = x < 0); k-bit maps NaN and -0.0 to +0.0."""
    x = np.array([np.nan, -np.nan, -0.0, 0.0, -1.0, 2.0], dtype=np.float32)
    y = mx.nd.QActivation(mx.nd.array(x)).asnumpy()
    _assert_equal(y, np.array([1, 1, 1, 1, -1, 1], np.float32), "QActivation sgn")
    _assert_equal(ref.sgn(x), y, "reference sgn")
    q2 = mx.nd.QActivation(mx.nd.array(x), act_bit=2).asnumpy()
    want2 = np.array([0, 0, 0, 0, 0, 1], np.float32)  # +0.0 bits, not -0.0
    _assert_equal(q2.view(np.int32), want2.view(np.int32), "act_bit=2 bits")
    _assert_equal(ref.quantize_act(x, 2).view(np.int32), want2.view(np.int32), "reference bits")
    xs = rng.standard_normal((3, 130)).astype(np.float32)
    xs.reshape(-1)[::7] = np.nan
    w = rng.standard_normal((5, 130)).astype(np.float32)
    w.reshape(-1)[::11] = np.nan
    float_path = mx.nd.QFullyConnected(
        mx.nd.array(xs), mx.nd.array(w), num_hidden=5, no_bias=True
    ).asnumpy()
    packed_path = mx.nd.QFullyConnected(
        mx.nd.array(xs), mx.nd.array(binmx.pack_weight(w), dtype=np.int64), num_hidden=5,
        no_bias=True, binarized_weights_only=True,
    ).asnumpy()  # fmt: skip
    want = ref.sgn(xs).astype(np.float64) @ ref.sgn(w).astype(np.float64).T
    _assert_equal(float_path, want.astype(np.float32), "float-weight path")
    _assert_equal(packed_path, want.astype(np.float32), "packed path")


def test_kbit_formulas():
    x = np.array([-1.0, 0.0, 0.1, 0.2, 0.5, 0.9, 2.0], dtype=np.float32)
    # act_bit=2: levels 3, q(a) = rint(3a)/3 (half to even: rint(1.5) = 2)
    want = np.array([0, 0, 0, 1 / 3, 2 / 3, 1, 1], dtype=np.float32)
    got = mx.nd.QActivation(mx.nd.array(x), act_bit=2).asnumpy()
    _assert_equal(got, want, "act_bit=2")
    _assert_equal(ref.quantize_act(x, 2), want, "reference act_bit=2")
    # weight_bit=2: 2 q(tanh(W) / (2 max|tanh W|) + 1/2, 2) - 1
    w = np.array([[-3.0, -0.2, 0.0, 0.3, 3.0]], dtype=np.float32)
    t = np.tanh(w.astype(np.float64))
    u = t / (2 * np.abs(t).max()) + 0.5
    wq_hand = (2 * np.rint(3 * u) / 3 - 1).astype(np.float32)
    _assert_equal(ref.quantize_weight(w, 2), wq_hand, "reference weight_bit=2")
    ones = np.ones((1, 5), np.float32)
    got = mx.nd.QFullyConnected(
        mx.nd.array(np.eye(5, dtype=np.float32)),
        mx.nd.array(w),
        num_hidden=1,
        no_bias=True,
        act_bit=32,
        weight_bit=2,
    ).asnumpy()
    np.testing.assert_array_equal(got.T, wq_hand * ones)


def test_no_input_mutation(rng):
    x = _data(rng, (2, 5, 6, 6))
    w = _data(rng, (4, 5, 3, 3))
    b = rng.standard_normal(4).astype(np.float32)
    packed = ref.pack_weight(w)
    cases = [
        (mx.nd.QConvolution, [x, w, b], dict(kernel=(3, 3), num_filter=4, pad=(1, 1))),
        (
            mx.nd.QConvolution,
            [x, w, b],
            dict(kernel=(3, 3), num_filter=4, pad=(1, 1), act_bit=2, scaling_factor=True),
        ),
        (
            mx.nd.QConvolution,
            [x, packed, b, ref.scaling_alpha(w)],
            dict(kernel=(3, 3), num_filter=4, binarized_weights_only=True, scaling_factor=True),
        ),
        (mx.nd.QFullyConnected, [x, _data(rng, (4, 180)), b], dict(num_hidden=4)),
        (mx.nd.QActivation, [x], dict()),
    ]
    for op, inputs, attrs in cases:
        arrs = [mx.nd.array(a, dtype=a.dtype) for a in inputs]
        before = [a.asnumpy().tobytes() for a in arrs]
        for a in arrs:
            a.attach_grad()
        with mx.autograd.record():
            y = op(*arrs, **attrs)
        y.backward(mx.nd.ones(y.shape))
        mx.nd.waitall()
        after = [a.asnumpy().tobytes() for a in arrs]
        assert before == after, f"{op.__name__} {attrs} wrote into an input"


def _err(fn, *needles):
    with pytest.raises((MXNetError, ValueError, TypeError)) as info:
        out = fn()
        if isinstance(out, mx.nd.NDArray):
            out.asnumpy()
    msg = str(info.value)
    for n in needles:
        assert n in msg, f"{n!r} not in error message:\n{msg}"


def test_errors():
    x = mx.nd.ones((1, 6, 5, 5))
    w = mx.nd.ones((4, 6, 3, 3))
    conv = dict(kernel=(3, 3), num_filter=4, no_bias=True)
    qc = mx.nd.QConvolution
    _err(lambda: qc(x, w, **{**conv, "act_bit": 0}), "act_bit", "[1, 32]", "'0'")
    _err(lambda: qc(x, w, **{**conv, "act_bit": 33}), "act_bit", "'33'")
    _err(lambda: qc(x, w, **{**conv, "weight_bit": 40}), "weight_bit", "'40'")
    _err(lambda: qc(x, w, num_filter=4, no_bias=True), "kernel", "missing")
    _err(lambda: qc(x, w, **{**conv, "pad_value": 2}), "pad_value", "'2'")
    _err(lambda: qc(x, w, **{**conv, "kernel": (3, 3, 3)}), "kernel", "2 elements", "3")
    _err(lambda: qc(x, mx.nd.ones((4, 6, 3, 2)), **conv), "weight", "(4, 6, 3, 3)", "(4, 6, 3, 2)")
    _err(
        lambda: qc(
            x, mx.nd.ones((4, 3, 3, 2), dtype=np.int64), binarized_weights_only=True, **conv
        ),
        "weight",
        "(4, 3, 3, 1)",
        "(4, 3, 3, 2)",
    )
    _err(
        lambda: qc(x, mx.nd.ones((4, 3, 3, 1)), binarized_weights_only=True, **conv),
        "weight",
        "int64",
        "float32",
    )
    _err(lambda: qc(x, mx.nd.ones((4, 1, 3, 3)), **{**conv, "num_group": 4}), "num_group", "6")
    _err(
        lambda: qc(mx.nd.ones((1, 6, 5, 5), dtype=np.float64), w, **conv),
        "data",
        "float32",
        "float64",
    )
    _err(lambda: qc(x, w, **{**conv, "layout": "NHWC"}), "layout", "NHWC")
    _err(lambda: qc(x, w, **{**conv, "bogus": 1}), "bogus")
    _err(lambda: qc(x, w, **{**conv, "kernel": (9, 9)}), "kernel")
    _err(
        lambda: qc(x, w, **{**conv, "act_bit": 2, "binarized_weights_only": True}),
        "weight",
        "packed k-bit weight levels",
        "(7,)",  # 4 * 6 * 9 levels at 2 bits
    )
    _err(
        lambda: qc(x, w, **{**conv, "act_bit": 9, "binarized_weights_only": True}),
        "binarized_weights_only",
        "weight_bit <= 8",
        "weight_bit=9",
    )
    _err(lambda: qc(x, **conv), "weight", "missing")
    fc = mx.nd.QFullyConnected
    _err(
        lambda: fc(x, mx.nd.ones((3, 149)), num_hidden=3, no_bias=True),
        "weight",
        "(3, 150)",
        "(3, 149)",
    )
    _err(
        lambda: fc(
            x,
            mx.nd.ones((3, 2), dtype=np.int64),
            num_hidden=3,
            no_bias=True,
            binarized_weights_only=True,
        ),
        "(3, 3)",
        "(3, 2)",
    )
    _err(lambda: fc(x, mx.nd.ones((3, 150)), num_hidden=0, no_bias=True), "num_hidden", "'0'")
    _err(lambda: mx.nd.QActivation(x, act_bit=0), "act_bit", "'0'")
    _err(lambda: mx.nd.QActivation(x, grad_cancel="abc"), "grad_cancel", "abc")
    _err(lambda: mx.nd.QActivation(x, backward_only="maybe"), "backward_only", "maybe")
    _err(
        lambda: mx.sym.QConvolution(mx.sym.var("d"), kernel=(3, 3), num_filter=4, act_bit=0),
        "act_bit",
    )
    _err(lambda: binmx.pack_weight(np.ones((2, 3, 4))), "rank")


def _run_conv_under_env(rng, env: dict[str, str]) -> np.ndarray:
    x = _data(rng, (2, 70, 9, 9))
    w = _data(rng, (20, 70, 3, 3))
    w_fc = _data(rng, (20, 70 * 81))
    old = {k: os.environ.get(k) for k in env}
    mx.nd.waitall()
    os.environ.update(env)
    try:
        out = mx.nd.QConvolution(
            mx.nd.array(x), mx.nd.array(w), kernel=(3, 3), num_filter=20, pad=(1, 1), no_bias=True
        ).asnumpy()
        fc = mx.nd.QFullyConnected(
            mx.nd.array(x), mx.nd.array(w_fc), num_hidden=20, no_bias=True
        ).asnumpy()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return np.concatenate([out.ravel(), fc.ravel()])


def test_isa_and_thread_invariance(seed):
    base = _run_conv_under_env(np.random.default_rng(seed), {})
    assert len(xnor.available_isas()) >= 1
    for isa in xnor.available_isas():
        for threads in ("1", "2", "3"):
            got = _run_conv_under_env(
                np.random.default_rng(seed), {"BINMX_ISA": isa, "OMP_NUM_THREADS": threads}
            )
            _assert_equal(got, base, f"isa={isa} threads={threads}")


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_nhwc_to_nchw_operator(rng, isa):
    """QNHWCToNCHW (binmx.fold's hand-over of oneDNN outputs): exact copies both ways, at shapes
    across the 16-channel tiles; the backward transposes the gradient back; rank is checked."""
    if isa not in binmx.xnor.available_isas():
        pytest.skip(f"{isa} not available on this machine")
    old = os.environ.get("BINMX_ISA")
    os.environ["BINMX_ISA"] = isa  # avx2: the portable loops instead of the AVX-512 tiles
    try:
        for shape in [(1, 5, 7, 3), (2, 9, 4, 16), (3, 4, 4, 70), (1, 56, 56, 64)]:
            x = mx.nd.array(rng.standard_normal(shape).astype(np.float32))
            x.attach_grad()
            with mx.autograd.record():
                y = mx.nd.QNHWCToNCHW(x)
            dy = rng.standard_normal(y.shape).astype(np.float32)
            y.backward(mx.nd.array(dy))
            np.testing.assert_array_equal(y.asnumpy(), x.asnumpy().transpose(0, 3, 1, 2))
            np.testing.assert_array_equal(x.grad.asnumpy(), dy.transpose(0, 2, 3, 1))
    finally:
        mx.nd.waitall()
        if old is None:
            os.environ.pop("BINMX_ISA", None)
        else:
            os.environ["BINMX_ISA"] = old
    with pytest.raises(mx.base.MXNetError, match="rank 4"):
        mx.nd.QNHWCToNCHW(mx.nd.zeros((2, 3, 4))).wait_to_read()


def test_channel_affine_operator(rng):
    """QChannelAffine (binmx.fold's pass 7): out = x * scale + shift per channel, rounded as a
    float32 multiply then add (== NumPy's), relu with NaN kept; the backward against NumPy;
    shapes and dtypes checked."""
    for shape in [(2, 5, 3, 4), (3, 7), (1, 64, 7, 7), (2, 3, 2, 2, 3)]:
        c = shape[1]
        xv = rng.standard_normal(shape).astype(np.float32)
        xv.flat[0] = np.nan
        sv = rng.standard_normal(c).astype(np.float32)
        tv = rng.standard_normal(c).astype(np.float32)
        bshape = (1, c) + (1,) * (len(shape) - 2)
        affine = xv * sv.reshape(bshape) + tv.reshape(bshape)  # float32 throughout
        for relu in (False, True):
            x, s, t = (mx.nd.array(v) for v in (xv, sv, tv))
            for a in (x, s, t):
                a.attach_grad()
            with mx.autograd.record():
                y = mx.nd.QChannelAffine(x, s, t, relu=relu)
            dy = rng.standard_normal(shape).astype(np.float32)
            y.backward(mx.nd.array(dy))
            want = np.where(affine < 0, np.float32(0), affine) if relu else affine
            np.testing.assert_array_equal(y.asnumpy(), want)  # NaN compares equal here
            assert np.isnan(y.asnumpy().flat[0])
            g = np.where(want > 0, dy, 0).astype(np.float64) if relu else dy.astype(np.float64)
            axes = (0,) + tuple(range(2, len(shape)))
            dx = (g * sv.reshape(bshape)).astype(np.float32)
            if relu:  # the NaN position has mask 0, so its gradients are finite
                np.testing.assert_array_equal(x.grad.asnumpy(), dx)
                np.testing.assert_allclose(  # float sums in another order: rounding only
                    s.grad.asnumpy(), (g * np.nan_to_num(xv)).sum(axes), rtol=1e-5, atol=1e-5
                )
            else:
                np.testing.assert_array_equal(x.grad.asnumpy(), dx)
                assert np.isnan(s.grad.asnumpy()[0])  # NaN * dy in channel 0's sum
                np.testing.assert_allclose(
                    s.grad.asnumpy()[1:], (g * xv).sum(axes)[1:], rtol=1e-5, atol=1e-5
                )
            np.testing.assert_allclose(t.grad.asnumpy(), g.sum(axes), rtol=1e-5, atol=1e-5)
    with pytest.raises(mx.base.MXNetError, match=r"`scale` of shape \(3,\)"):
        mx.nd.QChannelAffine(mx.nd.zeros((2, 3, 4)), mx.nd.zeros(4), mx.nd.zeros(3)).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="rank >= 2"):
        mx.nd.QChannelAffine(mx.nd.zeros(3), mx.nd.zeros(3), mx.nd.zeros(3)).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="dtype float32"):
        z = mx.nd.zeros((2, 3), dtype=np.float64)
        mx.nd.QChannelAffine(z, mx.nd.zeros(3), mx.nd.zeros(3)).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="unknown attribute"):
        mx.nd.QChannelAffine(
            mx.nd.zeros((2, 3)), mx.nd.zeros(3), mx.nd.zeros(3), act_type="relu"
        ).wait_to_read()
