"""The direct binary convolution and dense layer of the core (src/xnor_gemm/bconv.h) through
binmx.xnor, without MXNet's operators (the core alone): every available ISA and 1, 2, 3
threads against binmx.reference.

The integer part (``dot``) is exact in float32 (|dot| < 2^24), so every comparison is ==: the
kernels' epilogue is ``float32(dot) * alpha`` rounded, then ``+ bias`` rounded, then
``+ residual`` rounded (never fused), which is exactly NumPy's float32 arithmetic below.
"""

from __future__ import annotations

import numpy as np
import pytest
from binmx import reference as ref
from binmx import xnor

ISAS = xnor.available_isas()
THREADS = (1, 2, 3)
# Word (64) and vector (128 / 256 / 512 bits) boundaries of the channel axis.
CHANNELS = (*range(1, 11), 63, 64, 65, 127, 128, 129, 511, 512, 513)


def _data(rng: np.random.Generator, shape: tuple[int, ...], zeros: float = 0.1) -> np.ndarray:
    """Normal data with a fraction of exact +0.0 and -0.0 (sgn must give +1 for both)."""
    x = rng.standard_normal(shape).astype(np.float32)
    mask = rng.random(shape) < zeros
    x[mask] = np.where(rng.random(int(mask.sum())) < 0.5, 0.0, -0.0).astype(np.float32)
    return x


def _assert_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    bad = np.argwhere(got != want)
    assert bad.size == 0, (
        f"{what}: {len(bad)} mismatches, first at {tuple(bad[0])}: got "
        f"{got[tuple(bad[0])]!r}, want {want[tuple(bad[0])]!r}"
    )


def _dots(x, w, *, stride=1, pad=0, dilate=1, groups=1, pad_value=0, in_scale=None, in_shift=None):
    """Reference integer conv of the signs (float64 holds them exactly), as int64."""
    if in_scale is not None:
        x = ref.input_affine(x, in_scale, in_shift, axis=1)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    out = ref.conv2d(
        ref.sgn(x),
        ref.sgn(w),
        stride=pair(stride),
        pad=pair(pad),
        dilate=pair(dilate),
        groups=groups,
        pad_value=float(pad_value),
    )
    return out.astype(np.int64)


def _epilogue(dots: np.ndarray, alpha=None, bias=None, residual=None, axis: int = 1) -> np.ndarray:
    """float32(dot) * alpha, then + bias, then + residual: one float32 rounding each."""
    out = dots.astype(np.float32)
    shape = [1] * out.ndim
    shape[axis] = -1
    if alpha is not None:
        out = (out * alpha.reshape(shape)).astype(np.float32)
    if bias is not None:
        out = (out + bias.reshape(shape)).astype(np.float32)
    if residual is not None:
        out = (out + residual).astype(np.float32)
    return out


def _pack_nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW floats -> packed activations int64[N, H, W, ceil(C/64)] (bit = x < 0)."""
    n, c, h, w = x.shape
    return ref.pack_bits(x.transpose(0, 2, 3, 1).reshape(n * h * w, c)).reshape(n, h, w, -1)


# ---- weight packing --------------------------------------------------------------------------


@pytest.mark.parametrize("c", CHANNELS)
def test_pack_conv_weights_fast_and_plain_match_reference(c: int, rng) -> None:
    w = _data(rng, (5, c, 3, 2))
    want = ref.pack_weight(w)
    _assert_equal(xnor.pack_conv_weights(w, fast=False), want, f"plain c={c}")
    _assert_equal(xnor.pack_conv_weights(w), want, f"fast c={c}")


def test_pack_conv_weights_groups(rng) -> None:
    w = _data(rng, (6, 65, 3, 3))  # groups=3: C = 195, 65 channels a group
    _assert_equal(xnor.pack_conv_weights(w, groups=3), ref.pack_weight(w), "groups=3")


# ---- convolution -----------------------------------------------------------------------------


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c", CHANNELS)
def test_conv_channels_grid(c: int, isa: str, threads: int, rng) -> None:
    """3x3, pad 1 (border correction) on a 5x6 image, integer output, then alpha/bias."""
    x, w = _data(rng, (2, c, 5, 6)), _data(rng, (7, c, 3, 3))
    wp = xnor.pack_conv_weights(w)
    want = _dots(x, w, pad=1)
    got = xnor.binary_conv2d(x, wp, pad=1, isa=isa, threads=threads)
    _assert_equal(got, want.astype(np.float32), f"dots c={c} isa={isa} threads={threads}")
    alpha = np.abs(_data(rng, (7,), 0.0)) + np.float32(0.1)
    bias = _data(rng, (7,), 0.0)
    got = xnor.binary_conv2d(x, wp, pad=1, alpha=alpha, bias=bias, isa=isa, threads=threads)
    _assert_equal(got, _epilogue(want, alpha, bias), f"epilogue c={c} isa={isa}")


GEOMETRIES = [
    # (C, F, H, W, kh, kw, stride, pad, dilate, groups)
    (3, 4, 7, 9, 3, 3, 1, 0, 1, 1),
    (5, 6, 9, 8, 3, 3, 2, 1, 1, 1),
    (64, 8, 8, 8, 1, 1, 2, 0, 1, 1),  # ResNet's strided shortcut
    (17, 5, 11, 10, 3, 5, (2, 3), (1, 2), 1, 1),
    (9, 3, 12, 12, 3, 3, 1, 2, 2, 1),  # dilation
    (8, 4, 13, 11, 3, 2, (1, 2), (2, 1), (3, 2), 1),
    (6, 9, 7, 7, 7, 7, 1, 3, 1, 1),  # 7x7 pad 3: 49 border patterns (> 16)
    (130, 66, 6, 5, 3, 3, 1, 1, 1, 2),  # groups: 65 channels, 33 filters a group
    (12, 12, 6, 6, 3, 3, 1, 1, 1, 12),  # depthwise
    (4, 2, 2, 3, 3, 3, 1, 1, 1, 1),  # every pixel a border pixel
    (70, 130, 5, 5, 3, 3, 1, 1, 1, 1),  # three filter chunks
    (3, 5, 20, 31, 3, 3, 1, 1, 1, 1),  # 620 pixels: three pixel chunks
]


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("pad_value", [0, 1, -1])
@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: "x".join(str(v) for v in g[:6]))
def test_conv_geometry(geom, pad_value: int, isa: str, threads: int, rng) -> None:
    c, f, h, wd, kh, kw, stride, pad, dilate, groups = geom
    x, w = _data(rng, (2, c, h, wd)), _data(rng, (f, c // groups, kh, kw))
    wp = xnor.pack_conv_weights(w, groups=groups)
    kwargs = dict(stride=stride, pad=pad, dilate=dilate, groups=groups, pad_value=pad_value)
    want = _dots(x, w, **kwargs)
    alpha = np.abs(_data(rng, (f,), 0.0))
    bias = _data(rng, (f,), 0.0)
    got = xnor.binary_conv2d(x, wp, alpha=alpha, bias=bias, isa=isa, threads=threads, **kwargs)
    _assert_equal(got, _epilogue(want, alpha, bias), f"{geom} pad_value={pad_value} isa={isa}")


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c", (1, 7, 64, 65, 129))
def test_conv_input_affine_and_residual(c: int, isa: str, threads: int, rng) -> None:
    x, w = _data(rng, (2, c, 6, 7)), _data(rng, (11, c, 3, 3))
    in_scale = _data(rng, (c,), 0.2)  # exact zeros: the affine input is then in_shift alone
    in_shift = _data(rng, (c,), 0.2)
    residual = _data(rng, (2, 11, 6, 7))
    alpha, bias = _data(rng, (11,), 0.0), _data(rng, (11,), 0.0)
    wp = xnor.pack_conv_weights(w)
    got = xnor.binary_conv2d(
        x, wp, pad=1, alpha=alpha, bias=bias, in_scale=in_scale, in_shift=in_shift,
        residual=residual, isa=isa, threads=threads,
    )  # fmt: skip
    want = _dots(x, w, pad=1, in_scale=in_scale, in_shift=in_shift)
    _assert_equal(got, _epilogue(want, alpha, bias, residual), f"c={c} isa={isa}")


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c", (1, 9, 63, 64, 65, 128, 129, 513))
def test_conv_packed_input(c: int, isa: str, threads: int, rng) -> None:
    """Packed activations give the float path's result; bits past C are ignored."""
    x, w = _data(rng, (3, c, 5, 4)), _data(rng, (6, c, 3, 3))
    wp = xnor.pack_conv_weights(w)
    bits = _pack_nhwc(x)
    if c % 64:
        garbage = rng.integers(0, 2**63, size=bits.shape[:3], dtype=np.int64)
        tail = np.int64(-1) << np.int64(c % 64)  # the bits past C in the last word
        bits[..., -1] |= garbage & tail
    snapshot = bits.copy()
    got = xnor.binary_conv2d(bits, wp, channels=c, pad=1, pad_value=-1, isa=isa, threads=threads)
    _assert_equal(got, _dots(x, w, pad=1, pad_value=-1).astype(np.float32), f"c={c} isa={isa}")
    _assert_equal(bits, snapshot, "packed input unchanged")


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("f", (*range(1, 11), 63, 64, 65, 127, 128, 129))
def test_conv_packed_output(f: int, isa: str, threads: int, rng) -> None:
    """Bit f of the packed output = out * out_scale[f] + out_shift[f] < 0, chained."""
    c = 67
    x, w = _data(rng, (2, c, 6, 5)), _data(rng, (f, c, 3, 3))
    alpha, bias = np.abs(_data(rng, (f,), 0.0)), _data(rng, (f,), 0.0)
    out_scale = _data(rng, (f,), 0.2)  # exact zeros: the bit is then out_shift < 0 alone
    out_shift = _data(rng, (f,), 0.2)
    wp = xnor.pack_conv_weights(w)
    kwargs = dict(pad=1, alpha=alpha, bias=bias, isa=isa, threads=threads)
    got = xnor.binary_conv2d(x, wp, out_scale=out_scale, out_shift=out_shift, **kwargs)
    floats = _epilogue(_dots(x, w, pad=1), alpha, bias)
    want = _pack_nhwc(ref.input_affine(floats, out_scale, out_shift, axis=1))
    _assert_equal(got, want, f"f={f} isa={isa} threads={threads}")
    # Chained: packed in, packed out, equal to the float path of the second layer.
    w2 = _data(rng, (5, f, 3, 3))
    got2 = xnor.binary_conv2d(got, xnor.pack_conv_weights(w2), channels=f, pad=1, isa=isa)
    want2 = _dots(floats, w2, pad=1, in_scale=out_scale, in_shift=out_shift)
    _assert_equal(got2, want2.astype(np.float32), f"chained f={f} isa={isa}")


@pytest.mark.parametrize("isa", ISAS)
def test_conv_every_isa_and_thread_count_same_bits(isa: str, rng) -> None:
    """A larger layer (many tasks): all ISAs and thread counts agree bit for bit."""
    x, w = _data(rng, (3, 96, 14, 14)), _data(rng, (80, 96, 3, 3))
    alpha, bias = _data(rng, (80,), 0.0), _data(rng, (80,), 0.0)
    wp = xnor.pack_conv_weights(w)
    want = _epilogue(_dots(x, w, pad=1), alpha, bias)
    for threads in (1, 2, 3, 5):
        got = xnor.binary_conv2d(x, wp, pad=1, alpha=alpha, bias=bias, isa=isa, threads=threads)
        _assert_equal(got, want, f"isa={isa} threads={threads}")


def test_conv_special_values_and_inputs_unchanged(rng) -> None:
    """+-0.0, +-inf, NaN and denormals follow sgn (NaN and -0.0 give +1); inputs untouched."""
    vals = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.0, -2.0], np.float32)
    x = rng.choice(vals, size=(2, 70, 4, 5)).astype(np.float32)
    w = rng.choice(vals, size=(3, 70, 3, 3)).astype(np.float32)
    x0, w0 = x.copy(), w.copy()
    wp = xnor.pack_conv_weights(w)
    for isa in ISAS:
        got = xnor.binary_conv2d(x, wp, pad=1, isa=isa)
        _assert_equal(got, _dots(x, w, pad=1).astype(np.float32), f"special isa={isa}")
    np.testing.assert_array_equal(x.view(np.int32), x0.view(np.int32))
    np.testing.assert_array_equal(w.view(np.int32), w0.view(np.int32))


def test_conv_empty_batch(rng) -> None:
    wp = xnor.pack_conv_weights(_data(rng, (4, 3, 3, 3)))
    got = xnor.binary_conv2d(np.zeros((0, 3, 5, 5), np.float32), wp, pad=1)
    assert got.shape == (0, 4, 5, 5)


# ---- dense -----------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", CHANNELS)
def test_dense_grid(d: int, isa: str, threads: int, rng) -> None:
    for rows, hidden in ((1, 10), (5, 3), (33, 65)):
        x, w = _data(rng, (rows, d)), _data(rng, (hidden, d))
        alpha, bias = _data(rng, (hidden,), 0.0), _data(rng, (hidden,), 0.0)
        in_scale, in_shift = _data(rng, (d,), 0.2), _data(rng, (d,), 0.2)
        wp = ref.pack_bits(w)
        dots = (ref.sgn(x).astype(np.int64) @ ref.sgn(w).astype(np.int64).T).astype(np.float32)
        got = xnor.binary_dense(x, wp, isa=isa, threads=threads)
        _assert_equal(got, dots, f"dense rows={rows} d={d} h={hidden} isa={isa}")
        got = xnor.binary_dense(
            x, wp, alpha=alpha, bias=bias, in_scale=in_scale, in_shift=in_shift, isa=isa,
            threads=threads,
        )  # fmt: skip
        xa = ref.sgn(ref.input_affine(x, in_scale, in_shift, axis=1)).astype(np.int64)
        want = _epilogue(xa @ ref.sgn(w).astype(np.int64).T, alpha, bias)
        _assert_equal(got, want, f"dense affine rows={rows} d={d} h={hidden} isa={isa}")


# ---- errors ----------------------------------------------------------------------------------


def test_conv_errors(rng) -> None:
    x, w = _data(rng, (1, 8, 5, 5)), _data(rng, (4, 8, 3, 3))
    wp = xnor.pack_conv_weights(w)
    v4 = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="dtype float32"):
        xnor.binary_conv2d(x.astype(np.float64), wp)
    with pytest.raises(ValueError, match="rank 4"):
        xnor.binary_conv2d(x[0], wp)
    with pytest.raises(ValueError, match="words"):
        xnor.binary_conv2d(_data(rng, (1, 65, 5, 5)), wp)
    with pytest.raises(ValueError, match="non-empty output"):
        xnor.binary_conv2d(np.ascontiguousarray(x[:, :, :2]), wp)
    with pytest.raises(ValueError, match="pad_value"):
        xnor.binary_conv2d(x, wp, pad_value=2)
    with pytest.raises(ValueError, match="stride"):
        xnor.binary_conv2d(x, wp, stride=0)
    with pytest.raises(ValueError, match="divisible"):
        xnor.binary_conv2d(x, wp, groups=3)
    with pytest.raises(ValueError, match="together"):
        xnor.binary_conv2d(x, wp, in_scale=np.ones(8, np.float32))
    with pytest.raises(ValueError, match="alpha"):
        xnor.binary_conv2d(x, wp, alpha=np.ones(5, np.float32))
    with pytest.raises(ValueError, match="residual"):
        xnor.binary_conv2d(x, wp, residual=np.ones((1, 4, 2, 2), np.float32))
    with pytest.raises(ValueError, match="takes no `residual`"):
        xnor.binary_conv2d(
            x, wp, out_scale=v4, out_shift=v4, residual=np.ones((1, 4, 3, 3), np.float32)
        )
    bits = _pack_nhwc(x)
    with pytest.raises(ValueError, match="channels"):
        xnor.binary_conv2d(bits, wp)
    with pytest.raises(ValueError, match="no `in_scale`"):
        xnor.binary_conv2d(bits, wp, channels=8, in_scale=np.ones(8, np.float32),
                           in_shift=np.ones(8, np.float32))  # fmt: skip
    with pytest.raises(ValueError, match="isa"):
        xnor.binary_conv2d(x, wp, isa="neon")
    with pytest.raises(ValueError, match="threads"):
        xnor.binary_conv2d(x, wp, threads=0)


def test_binding_refuses_bad_arguments_without_crashing(rng) -> None:
    """The pybind11 layer itself (below binmx.xnor's checks) raises, never crashes."""
    from binmx import _xnor

    x, wp = _data(rng, (1, 8, 5, 5)), xnor.pack_conv_weights(_data(rng, (4, 8, 3, 3)))
    with pytest.raises(ValueError, match="exactly one"):
        _xnor.binary_conv2d(wp, [1, 1], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="alpha"):
        _xnor.binary_conv2d(wp, [1, 1], [0, 0], [1, 1], x=x, alpha=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="out_bits needs"):
        _xnor.binary_conv2d(wp, [1, 1], [0, 0], [1, 1], x=x, out_scale=np.ones(4, np.float32))
    with pytest.raises(ValueError, match="stride"):
        _xnor.binary_conv2d(wp, [0, 1], [0, 0], [1, 1], x=x)
    with pytest.raises(ValueError, match="words"):
        _xnor.binary_dense(x[0, 0], np.zeros((3, 2), np.int64))


def test_dense_errors(rng) -> None:
    x, wp = _data(rng, (3, 70)), ref.pack_bits(_data(rng, (4, 70)))
    with pytest.raises(ValueError, match="words per row"):
        xnor.binary_dense(np.ascontiguousarray(x[:, :60]), wp)
    with pytest.raises(ValueError, match="bias"):
        xnor.binary_dense(x, wp, bias=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="together"):
        xnor.binary_dense(x, wp, in_shift=np.ones(70, np.float32))
