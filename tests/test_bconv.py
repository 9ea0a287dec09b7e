"""Direct binary convolution / dense fast path (src/xnor_gemm/bconv.*) through the operators,
on every ISA path and thread count, against binmx.reference with ==; and input_affine."""

from __future__ import annotations

import contextlib
import os

import binmx
import mxnet as mx
import numpy as np
import pytest
from binmx import reference as ref
from binmx import xnor

MXNetError = mx.base.MXNetError
CHANNELS = (1, 3, 63, 64, 65, 127, 128, 129, 256, 512)


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


@contextlib.contextmanager
def _env(**env: str):
    """BINMX_ISA / OMP_NUM_THREADS for the ops run inside (read on every call)."""
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


def _epilogue(dots: np.ndarray, alpha, bias, axis: int) -> np.ndarray:
    """The kernels' float epilogue: float32(dot) * alpha, then + bias (two roundings)."""
    out = dots.astype(np.float32)
    shape = [1] * out.ndim
    shape[axis] = -1
    if alpha is not None:
        out = (out * alpha.reshape(shape)).astype(np.float32)
    if bias is not None:
        out = (out + bias.reshape(shape)).astype(np.float32)
    return out


def _conv_case(rng: np.random.Generator, channels: int, pad_value: int) -> dict:
    k = int(rng.choice([1, 3, 5, 7]))
    dil = int(rng.choice([1, 2]))
    pad = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
    hw = []
    for d in range(2):
        lo = max(1, dil * (k - 1) + 1 - 2 * pad[d])
        hw.append(int(rng.integers(lo, lo + 8)) | 1)  # odd spatial sizes
    return dict(
        channels=channels,
        h=hw[0],
        w=hw[1],
        kernel=(k, k),
        stride=(int(rng.choice([1, 2])), int(rng.choice([1, 2]))),
        dilate=(dil, dil),
        pad=pad,
        groups=1,
        pad_value=pad_value,
        batch=int(rng.integers(1, 4)),
        num_filter=int(rng.choice([1, 5, 8, 17, 33])),
    )


def _run_conv_case(rng, c, *, affine: bool = False, configs=None) -> None:
    x = _data(rng, (c["batch"], c["channels"], c["h"], c["w"]))
    w = _data(rng, (c["num_filter"], c["channels"] // c["groups"], *c["kernel"]))
    alpha = rng.standard_normal(c["num_filter"]).astype(np.float32)
    bias = rng.standard_normal(c["num_filter"]).astype(np.float32)
    geo = dict(
        stride=c["stride"],
        pad=c["pad"],
        dilate=c["dilate"],
        groups=c["groups"],
        pad_value=c["pad_value"],
    )
    extra, in_aff = [], {}
    if affine:
        s = rng.standard_normal(c["channels"]).astype(np.float32)
        t = rng.standard_normal(c["channels"]).astype(np.float32)
        extra = [mx.nd.array(s), mx.nd.array(t)]
        in_aff = dict(in_scale=s, in_shift=t)
    dots = ref.q_conv2d(x, w, **geo, **in_aff)  # exact integers in float64
    want = _epilogue(dots, alpha, bias, axis=1)
    attrs = dict(
        kernel=c["kernel"],
        stride=c["stride"],
        dilate=c["dilate"],
        pad=c["pad"],
        num_filter=c["num_filter"],
        num_group=c["groups"],
        pad_value=c["pad_value"],
        binarized_weights_only=True,
        scaling_factor=True,
        input_affine=affine,
    )
    inputs = [
        mx.nd.array(x),
        mx.nd.array(ref.pack_weight(w), dtype=np.int64),
        mx.nd.array(bias),
        mx.nd.array(alpha),
        *extra,
    ]
    for isa, threads in configs or [(i, t) for i in xnor.available_isas() for t in ("1", "2", "3")]:
        with _env(BINMX_ISA=isa, OMP_NUM_THREADS=threads):
            got = mx.nd.QConvolution(*inputs, **attrs).asnumpy()
        _assert_equal(got, want, f"isa={isa} threads={threads} affine={affine} {c}")


@pytest.mark.parametrize("channels", CHANNELS)
def test_direct_conv_word_boundaries_every_isa_and_thread_count(rng, channels):
    for pad_value in (0, 1, -1):
        _run_conv_case(rng, _conv_case(rng, channels, pad_value))


def test_direct_conv_groups_and_resnet_shapes(rng):
    for cg, groups in ((1, 3), (65, 2), (64, 4), (3, 2)):
        c = _conv_case(rng, cg * groups, int(rng.choice([0, 1, -1])))
        c.update(groups=groups, num_filter=groups * int(rng.integers(1, 9)))
        _run_conv_case(rng, c)
    # ResNet-18 3x3 layers (pad 1, zero padding), batch 2, default ISA, 1 and 2 threads.
    for size, ch in ((56, 64), (28, 128), (14, 256), (7, 512)):
        c = dict(
            channels=ch,
            h=size,
            w=size,
            kernel=(3, 3),
            stride=(1, 1),
            dilate=(1, 1),
            pad=(1, 1),
            groups=1,
            pad_value=0,
            batch=2,
            num_filter=ch // 8,
        )
        _run_conv_case(rng, c, configs=[(xnor.current_isa(), "1"), (xnor.current_isa(), "2")])


def test_direct_conv_border_tables_and_packing_widths(rng):
    # Zero padding with > 16 border patterns (7x7 kernel, pad 3: 7 x 7 classes; the vector
    # kernels' gather path) and <= 16 (their permute path); weight tap popcounts over 5 and
    # 9 words (vector rows with a masked tail); input widths 70 and 37 (packing chunks of
    # 64 + 6 and 37 pixels); filter counts off the register blocks.
    cases = [
        dict(channels=300, h=9, w=70, kernel=(7, 7), pad=(3, 3), num_filter=13),
        dict(channels=520, h=11, w=37, kernel=(3, 3), pad=(1, 1), num_filter=9),
        dict(channels=64, h=10, w=10, kernel=(5, 5), pad=(2, 1), num_filter=17),
    ]
    for c in cases:
        c.update(stride=(1, 1), dilate=(1, 1), groups=1, pad_value=0, batch=2)
        _run_conv_case(rng, c, configs=[(i, "1") for i in xnor.available_isas()])


def test_direct_conv_tail_pixels(rng):
    """A tile's last n = 1..7 output pixels (fewer than a pixel vector): the AVX-512 kernel
    takes them over the tap-words when that is cheaper (kwords = taps * channel words up to
    576), else as one pixel vector; both against the reference on every ISA."""
    for ch, k in ((64, 3), (256, 3), (512, 3), (256, 5), (768, 7)):  # kwords 9 ... 588
        for width in range(9, 16):  # 1 x width outputs: tails of 1..7 pixels
            c = dict(
                channels=ch,
                h=1,
                w=width,
                kernel=(k, k),
                stride=(1, 1),
                dilate=(1, 1),
                pad=(k // 2, k // 2),
                groups=1,
                pad_value=int(rng.choice([0, 1, -1])),
                batch=2,
                num_filter=int(rng.choice([9, 16])),
            )
            _run_conv_case(rng, c, configs=[(i, "1") for i in xnor.available_isas()])


def test_input_affine_conv_matches_reference_and_convolution(rng):
    for _ in range(6):
        c = _conv_case(rng, int(rng.choice([3, 64, 65, 130])), int(rng.choice([0, 1, -1])))
        _run_conv_case(rng, c, affine=True)
    # Float weights (training form), exact zeros of x * s + t, vs Convolution(sgn(x s + t), sgn W).
    x = _data(rng, (2, 70, 9, 8))
    s = rng.standard_normal(70).astype(np.float32)
    t = rng.standard_normal(70).astype(np.float32)
    s[:5] = 1.0
    x[:, :5, :3, :] = -t[None, :5, None, None]  # x * 1 + t == +0.0 exactly: sgn = +1
    w = _data(rng, (16, 70, 3, 3))
    b = rng.standard_normal(16).astype(np.float32)
    got = mx.nd.QConvolution(
        mx.nd.array(x),
        mx.nd.array(w),
        mx.nd.array(b),
        mx.nd.array(s),
        mx.nd.array(t),
        kernel=(3, 3),
        pad=(1, 1),
        num_filter=16,
        input_affine=True,
    ).asnumpy()
    a = ref.sgn(ref.input_affine(x, s, t, axis=1))
    assert (ref.input_affine(x, s, t, axis=1)[:, :5, :3] == 0).all()
    want = mx.nd.Convolution(
        mx.nd.array(a),
        mx.nd.array(ref.sgn(w)),
        mx.nd.array(b),
        kernel=(3, 3),
        pad=(1, 1),
        num_filter=16,
    ).asnumpy()
    _assert_equal(got, want, "input_affine vs Convolution(sgn(x*s+t), sgn W)")
    # act_bit = 1 with a 2-bit weight goes through the float path, same affine semantics.
    got2 = mx.nd.QConvolution(
        mx.nd.array(x),
        mx.nd.array(w),
        mx.nd.array(s),
        mx.nd.array(t),
        kernel=(3, 3),
        pad=(1, 1),
        num_filter=16,
        no_bias=True,
        weight_bit=2,
        input_affine=True,
    ).asnumpy()
    want2 = ref.q_conv2d(x, w, pad=(1, 1), weight_bit=2, in_scale=s, in_shift=t)
    # float path: float32 GEMM of +-1 inputs and 2-bit weights (multiples of 1/3) vs float64
    np.testing.assert_allclose(got2, want2, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("depth", [1, 63, 64, 65, 129, 512])
def test_dense_fast_path_every_isa(rng, depth):
    for rows in (1, 3):
        x = _data(rng, (rows, depth))
        w = _data(rng, (37, depth))
        alpha = rng.standard_normal(37).astype(np.float32)
        bias = rng.standard_normal(37).astype(np.float32)
        s = rng.standard_normal(depth).astype(np.float32)
        t = rng.standard_normal(depth).astype(np.float32)
        for affine in (False, True):
            aff = dict(in_scale=s, in_shift=t) if affine else {}
            want = _epilogue(ref.q_dense(x, w, **aff), alpha, bias, axis=1)
            extra = [mx.nd.array(s), mx.nd.array(t)] if affine else []
            for isa in xnor.available_isas():
                for threads in ("1", "2"):
                    with _env(BINMX_ISA=isa, OMP_NUM_THREADS=threads):
                        got = mx.nd.QFullyConnected(
                            mx.nd.array(x),
                            mx.nd.array(ref.pack_weight(w), dtype=np.int64),
                            mx.nd.array(bias),
                            mx.nd.array(alpha),
                            *extra,
                            num_hidden=37,
                            binarized_weights_only=True,
                            scaling_factor=True,
                            input_affine=affine,
                        ).asnumpy()
                    _assert_equal(got, want, f"isa={isa} threads={threads} rows={rows}")


def test_input_affine_dense_flatten_is_per_feature(rng):
    x = _data(rng, (3, 4, 5, 6))
    w = _data(rng, (10, 120))
    s_c = rng.standard_normal(4).astype(np.float32)
    t_c = rng.standard_normal(4).astype(np.float32)
    s, t = np.repeat(s_c, 30), np.repeat(t_c, 30)  # per channel of (N, C, H, W) -> per feature
    got = mx.nd.QFullyConnected(
        mx.nd.array(x),
        mx.nd.array(w),
        mx.nd.array(s),
        mx.nd.array(t),
        num_hidden=10,
        no_bias=True,
        input_affine=True,
    ).asnumpy()
    a = ref.sgn(ref.input_affine(x, s_c, t_c, axis=1)).reshape(3, 120)
    want = mx.nd.FullyConnected(
        mx.nd.array(a), mx.nd.array(ref.sgn(w)), num_hidden=10, no_bias=True
    ).asnumpy()
    _assert_equal(got, want, "flatten input_affine")
    # flatten=False: features are the last axis.
    x3 = _data(rng, (2, 3, 7))
    w3 = _data(rng, (5, 7))
    s3, t3 = rng.standard_normal(7).astype(np.float32), rng.standard_normal(7).astype(np.float32)
    got3 = mx.nd.QFullyConnected(
        mx.nd.array(x3),
        mx.nd.array(w3),
        mx.nd.array(s3),
        mx.nd.array(t3),
        num_hidden=5,
        no_bias=True,
        flatten=False,
        input_affine=True,
    ).asnumpy()
    want3 = ref.q_dense(x3, w3, flatten=False, in_scale=s3, in_shift=t3).astype(np.float32)
    _assert_equal(got3, want3, "flatten=False input_affine")


def test_input_affine_symbol_inputs_and_errors(rng):
    data = mx.sym.var("data")
    conv = mx.sym.QConvolution(data, kernel=(3, 3), num_filter=4, input_affine=True, name="c1")
    assert conv.list_arguments() == ["data", "c1_weight", "c1_bias", "c1_in_scale", "c1_in_shift"]
    fc = mx.sym.QFullyConnected(
        data,
        num_hidden=3,
        no_bias=True,
        binarized_weights_only=True,
        scaling_factor=True,
        input_affine=True,
        name="f1",
    )
    assert fc.list_arguments() == ["data", "f1_weight", "f1_alpha", "f1_in_scale", "f1_in_shift"]
    arg_shapes, out_shapes, _ = conv.infer_shape(data=(2, 5, 8, 8))
    assert arg_shapes[3] == (5,) and arg_shapes[4] == (5,) and out_shapes[0] == (2, 4, 6, 6)
    inputs = binmx.ops.op_inputs("QConvolution", {"input_affine": "True", "no_bias": "True"})
    assert inputs == ["data", "weight", "in_scale", "in_shift"]

    x = mx.nd.array(_data(rng, (1, 5, 6, 6)))
    w = mx.nd.array(_data(rng, (4, 5, 3, 3)))
    with pytest.raises(MXNetError, match="input_affine"):
        mx.nd.QConvolution(
            x,
            w,
            mx.nd.ones(5),
            mx.nd.zeros(5),
            kernel=(3, 3),
            num_filter=4,
            no_bias=True,
            act_bit=2,
            input_affine=True,
        ).wait_to_read()
    with pytest.raises(MXNetError, match="in_scale"):
        mx.nd.QConvolution(
            x,
            w,
            mx.nd.ones(4),
            mx.nd.zeros(5),
            kernel=(3, 3),
            num_filter=4,
            no_bias=True,
            input_affine=True,
        ).wait_to_read()
    with pytest.raises(ValueError, match="in_scale"):
        mx.nd.QConvolution(x, w, kernel=(3, 3), num_filter=4, no_bias=True, input_affine=True)
    # No backward: a clear error instead of a wrong gradient.
    x.attach_grad()
    with mx.autograd.record():
        y = mx.nd.QConvolution(
            x,
            w,
            mx.nd.ones(5),
            mx.nd.zeros(5),
            kernel=(3, 3),
            num_filter=4,
            no_bias=True,
            input_affine=True,
        )
    with pytest.raises(MXNetError, match="inference"):
        y.backward()
        x.grad.wait_to_read()


def test_float_weight_changed_in_place_is_seen(rng):
    x = mx.nd.array(_data(rng, (1, 65, 7, 7)))
    w = mx.nd.array(_data(rng, (8, 65, 3, 3)))
    first = mx.nd.QConvolution(
        x, w, kernel=(3, 3), pad=(1, 1), num_filter=8, no_bias=True
    ).asnumpy()
    w[:] = -w - 1.0  # every sign flips (w = 0 -> -1, w = -0.0 -> -1)
    second = mx.nd.QConvolution(
        x, w, kernel=(3, 3), pad=(1, 1), num_filter=8, no_bias=True
    ).asnumpy()
    want = ref.q_conv2d(x.asnumpy(), w.asnumpy(), pad=(1, 1)).astype(np.float32)
    _assert_equal(second, want, "after the in-place weight update")
    assert (second != first).any()


def _sign_words(v: np.ndarray) -> np.ndarray:
    """(N, C, H, W) float32 -> int64 (N, H, W, ceil(C/64)) words, bit c % 64 of word c // 64
    set where v < 0 (NaN and -0.0 give a clear bit, as sgn gives +1)."""
    n, c, h, w = v.shape
    words = -(-c // 64)
    bits = np.zeros((n, h, w, words * 64), np.uint8)
    bits[..., :c] = (v < 0).transpose(0, 2, 3, 1)
    packed = np.packbits(bits, axis=-1, bitorder="little")  # 8 bytes per word, little endian
    return packed.view("<u8").view(np.int64).reshape(n, h, w, words)


@pytest.mark.parametrize("channels", [3, 64, 65, 130])
def test_packed_chaining_is_bit_identical(rng, channels):
    """out_packed: the words are the signs of out * out_scale + out_shift (product and sum in
    float32); in_packed: a layer reading them gives exactly what it gives on the float output
    with that input affine. Every ISA and thread count; filters across word boundaries."""
    for _ in range(3):
        c = _conv_case(rng, channels, int(rng.choice([0, 1, -1])))
        f1 = int(rng.choice([5, 64, 70, 129]))
        x = _data(rng, (c["batch"], c["channels"], c["h"], c["w"]))
        w1 = _data(rng, (f1, c["channels"], *c["kernel"]))
        w2 = _data(rng, (c["num_filter"], f1, 3, 3))
        alpha = rng.standard_normal(f1).astype(np.float32)
        bias = rng.standard_normal(f1).astype(np.float32)
        s = rng.standard_normal(f1).astype(np.float32)
        t = rng.standard_normal(f1).astype(np.float32)
        s[:2] = 0.0  # out * 0 + t: the sign of the shift alone, incl. -0.0 / +0.0 products
        geo = dict(
            kernel=c["kernel"],
            stride=c["stride"],
            dilate=c["dilate"],
            pad=c["pad"],
            pad_value=c["pad_value"],
            binarized_weights_only=True,
        )
        first = [mx.nd.array(x), mx.nd.array(ref.pack_weight(w1), dtype=np.int64)]
        first += [mx.nd.array(bias), mx.nd.array(alpha)]
        second_w = mx.nd.array(ref.pack_weight(w2), dtype=np.int64)
        second = dict(kernel=(3, 3), pad=(1, 1), num_filter=c["num_filter"], no_bias=True)
        second["binarized_weights_only"] = True
        y_ref = None
        for isa, threads in [(i, n) for i in xnor.available_isas() for n in ("1", "3")]:
            with _env(BINMX_ISA=isa, OMP_NUM_THREADS=threads):
                y = mx.nd.QConvolution(*first, num_filter=f1, scaling_factor=True, **geo)
                words = mx.nd.QConvolution(
                    *first,
                    mx.nd.array(s),
                    mx.nd.array(t),
                    num_filter=f1,
                    scaling_factor=True,
                    out_packed=True,
                    **geo,
                )
                assert words.dtype == np.int64
                y = y.asnumpy()
                want_words = _sign_words((y * s[None, :, None, None]) + t[None, :, None, None])
                _assert_equal(words.asnumpy(), want_words, f"out_packed isa={isa} {c} F={f1}")
                via_float = mx.nd.QConvolution(
                    mx.nd.array(y),
                    second_w,
                    mx.nd.array(s),
                    mx.nd.array(t),
                    input_affine=True,
                    **second,
                ).asnumpy()
                via_bits = mx.nd.QConvolution(
                    words, second_w, in_packed=True, in_channels=f1, **second
                ).asnumpy()
            _assert_equal(via_bits, via_float, f"in_packed isa={isa} threads={threads} {c}")
            y_ref = via_float if y_ref is None else y_ref
            _assert_equal(via_float, y_ref, f"isa={isa} threads={threads} vs the first path")


def test_packed_input_ignores_bits_past_the_channels(rng):
    x = _data(rng, (2, 70, 6, 5))
    w = _data(rng, (8, 70, 3, 3))
    words = _sign_words(x)
    noisy = words.copy()
    noisy[..., 1] |= np.int64(-1) << np.int64(6)  # bits 70..127 of the last word
    args = dict(kernel=(3, 3), pad=(1, 1), num_filter=8, no_bias=True)
    args["binarized_weights_only"] = True
    wp = mx.nd.array(ref.pack_weight(w), dtype=np.int64)
    want = mx.nd.QConvolution(mx.nd.array(x), wp, **args).asnumpy()
    for given in (words, noisy):
        got = mx.nd.QConvolution(
            mx.nd.array(given, dtype=np.int64), wp, in_packed=True, in_channels=70, **args
        ).asnumpy()
        _assert_equal(got, want, "in_packed vs float input")


def test_packed_chaining_errors(rng):
    x = _data(rng, (1, 8, 6, 6))
    wp = mx.nd.array(ref.pack_weight(_data(rng, (4, 8, 3, 3))), dtype=np.int64)
    words = mx.nd.array(_sign_words(x), dtype=np.int64)
    base = dict(kernel=(3, 3), num_filter=4, no_bias=True, binarized_weights_only=True)
    with pytest.raises(MXNetError, match="in_channels"):
        mx.nd.QConvolution(words, wp, in_packed=True, **base).wait_to_read()
    with pytest.raises(MXNetError, match=r"\(N, H, W, 1\)"):
        mx.nd.QConvolution(mx.nd.array(x), wp, in_packed=True, in_channels=8, **base).wait_to_read()
    with pytest.raises(MXNetError, match="int64"):
        bad = mx.nd.array(_sign_words(x).astype(np.float32))
        mx.nd.QConvolution(bad, wp, in_packed=True, in_channels=8, **base).wait_to_read()
    with pytest.raises(MXNetError, match="binarized_weights_only"):
        mx.nd.QConvolution(
            words,
            mx.nd.array(_data(rng, (4, 8, 3, 3))),
            kernel=(3, 3),
            num_filter=4,
            no_bias=True,
            in_packed=True,
            in_channels=8,
        ).wait_to_read()
    with pytest.raises(MXNetError, match="num_group=1"):
        mx.nd.QConvolution(
            mx.nd.array(x),
            mx.nd.array(ref.pack_weight(_data(rng, (4, 4, 3, 3))), dtype=np.int64),
            mx.nd.ones(4),
            mx.nd.zeros(4),
            out_packed=True,
            num_group=2,
            **base,
        ).wait_to_read()
    with pytest.raises(MXNetError, match="input_affine"):
        mx.nd.QConvolution(
            words,
            wp,
            mx.nd.ones(8),
            mx.nd.zeros(8),
            in_packed=True,
            in_channels=8,
            input_affine=True,
            **base,
        ).wait_to_read()
    with pytest.raises(MXNetError, match="out_scale"):
        mx.nd.QConvolution(
            mx.nd.array(x), wp, mx.nd.ones(5), mx.nd.zeros(4), out_packed=True, **base
        ).wait_to_read()
    conv = mx.sym.QConvolution(mx.sym.var("data"), out_packed=True, name="c", **base)
    assert conv.list_arguments() == ["data", "c_weight", "c_out_scale", "c_out_shift"]
    out_shapes = conv.infer_shape(data=(2, 8, 6, 6))[1]
    out_types = conv.infer_type(data=np.float32)[1]
    assert out_shapes == [(2, 4, 4, 1)] and out_types == [np.int64]
    # No backward.
    xin = mx.nd.array(x)
    xin.attach_grad()
    with mx.autograd.record():
        y = mx.nd.QConvolution(xin, wp, mx.nd.ones(4), mx.nd.zeros(4), out_packed=True, **base)
    with pytest.raises(MXNetError, match="inference"):
        y.backward()
        xin.grad.wait_to_read()
