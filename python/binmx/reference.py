"""NumPy reference of binmx's kernels and operators, written independently of the C++ code.

Only NumPy is imported here. Conventions (docs/design.md §2): ``sgn(x) = +1 if x >= 0 else -1``
(so ``sgn(0) = sgn(-0.0) = +1``); bit 1 means -1; element ``j`` of a row goes to word
``j // 64``, bit ``j % 64``; words are uint64 patterns viewed as int64.
"""

from __future__ import annotations

import numpy as np


def sgn(x: np.ndarray) -> np.ndarray:
    """-1 where ``x < 0``, +1 elsewhere (``x >= 0`` including -0.0, and NaN), as float32.

    The same rule as the sign bits (bit = ``x < 0``), so a NaN is +1 in the float path and in the
    packed one alike."""
    return np.where(np.asarray(x) < 0, np.float32(-1), np.float32(1)).astype(np.float32)


def pack_bits(x: np.ndarray) -> np.ndarray:
    """Pack rows of ``x[M, K]`` into ``int64[M, ceil(K/64)]`` sign words (bit 1 = negative)."""
    x = np.asarray(x)
    m, k = x.shape
    words = (k + 63) // 64
    bits = np.zeros((m, words * 64), dtype=np.uint64)
    bits[:, :k] = (x < 0).astype(np.uint64)
    shifts = np.arange(64, dtype=np.uint64)
    packed = (bits.reshape(m, words, 64) << shifts).sum(axis=2, dtype=np.uint64)
    return packed.view(np.int64)


def unpack_bits(words: np.ndarray, k: int) -> np.ndarray:
    """Inverse of ``pack_bits``: +-1 float32 ``[M, k]``."""
    w = np.ascontiguousarray(words).view(np.uint64)
    m, n = w.shape
    shifts = np.arange(64, dtype=np.uint64)
    bits = ((w[:, :, None] >> shifts) & np.uint64(1)).reshape(m, n * 64)[:, :k]
    return np.where(bits == 1, np.float32(-1), np.float32(1))


def xnor_gemm(a_words: np.ndarray, b_words: np.ndarray, k: int) -> np.ndarray:
    """``C[m, n] = sum_j sa[m, j] * sb[n, j]`` over the true depth k, as int32 (via +-1 ints)."""
    sa = unpack_bits(a_words, k).astype(np.int64)
    sb = unpack_bits(b_words, k).astype(np.int64)
    return (sa @ sb.T).astype(np.int32)


# ---- operators (QActivation, QConvolution, QFullyConnected) ---------------------------------
#
# Forward (docs/design.md §3):
#   Qa(x) = sgn(x)                       act_bit = 1
#         = q(clip(x, 0, 1), k)          act_bit = k in 2..31, q(a, k) = rint((2^k-1) a) / (2^k-1)
#         = x                            act_bit = 32
#   Qw(W) = sgn(W) | 2 q(tanh(W) / (2 max|tanh W|) + 1/2, k) - 1 | W   (weight_bit 1 | k | 32)
#   out   = alpha_f * conv(Qa(x) padded with pad_value, Qw(W))_f + bias_f,
#   alpha_f = mean_i |W_f,i| with scaling_factor (over C/g * kh * kw weights), else 1.
# Backward (straight-through estimator, the exact chain rule otherwise):
#   dx     = conv_transpose(alpha * dy, Qw(W)) * 1[|x| <= grad_cancel]   (mask iff act_bit < 32)
#   G      = d loss / d Qw(W) without alpha  (= correlation of dy with the padded Qa(x))
#   dW     = G                                             without scaling_factor
#   dW_f,j = alpha_f G_f,j + sgn(W_f,j) / n * dalpha_f     with scaling_factor, where
#   dalpha_f = sum_i G_f,i Qw(W)_f,i is d loss / d alpha_f and n = C/g * kh * kw. This is the
#   XNOR-Net derivative of alpha * sign(W) with the identity STE for sign and d|w|/dw = sgn(w),
#   kept in full (the paper's eq. 7 keeps only the i = j term of the alpha part).
#   dbias  = sum of dy over everything but the channel axis.
# QActivation: y = Qa(x), or x with backward_only; dx = dy * 1[|x| <= grad_cancel] when
# act_bit < 32 or backward_only, else dy.


def quantize_act(x: np.ndarray, bits: int) -> np.ndarray:
    """``Qa`` above, as float32 (k-bit maths in float64, rint = round half to even)."""
    x = np.asarray(x, dtype=np.float32)
    if bits == 1:
        return sgn(x)
    if bits >= 32:
        return x.copy()
    levels = float(2**bits - 1)
    # clip to [0, 1]; -0.0 and NaN give +0.0 (as the operators' max(0, x) does)
    a = np.where(x.astype(np.float64) > 0.0, np.minimum(x.astype(np.float64), 1.0), 0.0)
    return (np.rint(levels * a) / levels).astype(np.float32)


def quantize_weight(w: np.ndarray, bits: int) -> np.ndarray:
    """``Qw`` above, as float32 (max over the whole tensor; an all-zero tensor maps to 0 + 1/2)."""
    w = np.asarray(w, dtype=np.float32)
    if bits == 1:
        return sgn(w)
    if bits >= 32:
        return w.copy()
    levels = float(2**bits - 1)
    t = np.tanh(w.astype(np.float64))
    m = np.abs(t).max() if t.size else 0.0
    u = t / (2.0 * m) if m > 0 else np.zeros_like(t)
    return (2.0 * (np.rint(levels * (u + 0.5)) / levels) - 1.0).astype(np.float32)


def input_affine(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, axis: int) -> np.ndarray:
    """``x * scale + shift`` in float32 (product and sum rounded separately), ``scale``/``shift``
    broadcast along ``axis`` (the channel axis 1 of a conv input, the last axis of a dense
    one). ``sgn`` of it is the activation of a layer with ``input_affine=True``."""
    x = np.asarray(x, np.float32)
    shape = [1] * x.ndim
    shape[axis] = -1
    s = np.asarray(scale, np.float32).reshape(shape)
    t = np.asarray(shift, np.float32).reshape(shape)
    prod = (x * s).astype(np.float32)
    return (prod + t).astype(np.float32)


def scaling_alpha(w: np.ndarray) -> np.ndarray:
    """``alpha_f = mean |W_f|`` over all axes but the first, float32."""
    w = np.asarray(w, dtype=np.float64)
    return np.abs(w.reshape(w.shape[0], -1)).mean(axis=1).astype(np.float32)


def _pad(x: np.ndarray, pad: tuple[int, int], value: float) -> np.ndarray:
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * pad[0], w + 2 * pad[1]), value, dtype=np.float64)
    xp[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + w] = x
    return xp


def _conv_geometry(x_shape, w_shape, stride, pad, dilate):
    n, c, h, w = x_shape
    f, cg, kh, kw = w_shape
    oh = (h + 2 * pad[0] - dilate[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * pad[1] - dilate[1] * (kw - 1) - 1) // stride[1] + 1
    return oh, ow


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    *,
    stride: tuple[int, int] = (1, 1),
    pad: tuple[int, int] = (0, 0),
    dilate: tuple[int, int] = (1, 1),
    groups: int = 1,
    pad_value: float = 0.0,
) -> np.ndarray:
    """Plain grouped 2-D cross-correlation (NCHW, OIHW) in float64, padding with pad_value."""
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    fg = f // groups
    oh, ow = _conv_geometry(x.shape, w.shape, stride, pad, dilate)
    xp = _pad(np.asarray(x, np.float64), pad, pad_value)
    w64 = np.asarray(w, np.float64)
    out = np.zeros((n, f, oh, ow))
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dilate[0], j * dilate[1]
                patch = xp[
                    :,
                    g * cg : (g + 1) * cg,
                    y0 : y0 + stride[0] * (oh - 1) + 1 : stride[0],
                    x0 : x0 + stride[1] * (ow - 1) + 1 : stride[1],
                ]
                out[:, g * fg : (g + 1) * fg] += np.einsum(
                    "nchw,fc->nfhw", patch, w64[g * fg : (g + 1) * fg, :, i, j]
                )
    return out


def conv2d_grads(
    x: np.ndarray,
    w: np.ndarray,
    dy: np.ndarray,
    *,
    stride: tuple[int, int] = (1, 1),
    pad: tuple[int, int] = (0, 0),
    dilate: tuple[int, int] = (1, 1),
    groups: int = 1,
    pad_value: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(dx, dw)`` of ``conv2d`` for the output gradient dy (float64; padded cells dropped)."""
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    fg = f // groups
    oh, ow = dy.shape[2:]
    xp = _pad(np.asarray(x, np.float64), pad, pad_value)
    dxp = np.zeros_like(xp)
    w64 = np.asarray(w, np.float64)
    dy64 = np.asarray(dy, np.float64)
    dw = np.zeros(w.shape)
    for g in range(groups):
        dyg = dy64[:, g * fg : (g + 1) * fg]
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dilate[0], j * dilate[1]
                sl = (
                    slice(None),
                    slice(g * cg, (g + 1) * cg),
                    slice(y0, y0 + stride[0] * (oh - 1) + 1, stride[0]),
                    slice(x0, x0 + stride[1] * (ow - 1) + 1, stride[1]),
                )
                dw[g * fg : (g + 1) * fg, :, i, j] = np.einsum("nfhw,nchw->fc", dyg, xp[sl])
                dxp[sl] += np.einsum("nfhw,fc->nchw", dyg, w64[g * fg : (g + 1) * fg, :, i, j])
    dx = dxp[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + wd]
    return dx, dw


def _finish_weight_grad(g, w, wq, alpha):
    """dW (and dalpha) from G per the formula at the top of this section."""
    if alpha is None:
        return g, None
    rows = g.shape[0]
    g2, wq2 = g.reshape(rows, -1), np.asarray(wq, np.float64).reshape(rows, -1)
    dalpha = (g2 * wq2).sum(axis=1)
    if w is None:
        return None, dalpha
    n = g2.shape[1]
    sw = sgn(w).reshape(rows, -1).astype(np.float64)
    a = np.asarray(alpha, np.float64)[:, None]
    dw = a * g2 + sw * (dalpha / n)[:, None]
    return dw.reshape(g.shape), dalpha


def q_conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    stride=(1, 1),
    pad=(0, 0),
    dilate=(1, 1),
    groups: int = 1,
    act_bit: int = 1,
    weight_bit: int | None = None,
    scaling_factor: bool = False,
    pad_value: int = 0,
    in_scale: np.ndarray | None = None,
    in_shift: np.ndarray | None = None,
    residual: np.ndarray | None = None,
) -> np.ndarray:
    """QConvolution forward with a float weight (float64 result). ``in_scale``/``in_shift``
    (``input_affine=True``, act_bit 1): the input is ``x * in_scale[c] + in_shift[c]``
    (:func:`input_affine`) before the sign. ``residual`` (``residual=True``): added last,
    ``out = (alpha * conv + bias) + residual`` (the operator rounds ``alpha * conv + bias``
    to float32 before the add)."""
    weight_bit = act_bit if weight_bit is None else weight_bit
    if in_scale is not None:
        x = input_affine(x, in_scale, in_shift, axis=1)
    out = conv2d(
        quantize_act(x, act_bit),
        quantize_weight(w, weight_bit),
        stride=stride,
        pad=pad,
        dilate=dilate,
        groups=groups,
        pad_value=float(pad_value),
    )
    if scaling_factor:
        out = out * scaling_alpha(w).astype(np.float64)[None, :, None, None]
    if bias is not None:
        out = out + np.asarray(bias, np.float64)[None, :, None, None]
    if residual is not None:
        out = out + np.asarray(residual, np.float64)
    return out


def q_conv2d_grads(
    x: np.ndarray,
    w: np.ndarray,
    dy: np.ndarray,
    *,
    stride=(1, 1),
    pad=(0, 0),
    dilate=(1, 1),
    groups: int = 1,
    act_bit: int = 1,
    weight_bit: int | None = None,
    scaling_factor: bool = False,
    pad_value: int = 0,
    grad_cancel: float = 1.0,
) -> dict[str, np.ndarray]:
    """STE gradients of QConvolution: ``{"data", "weight", "bias", "alpha"}`` (float64)."""
    weight_bit = act_bit if weight_bit is None else weight_bit
    xq, wq = quantize_act(x, act_bit), quantize_weight(w, weight_bit)
    alpha = scaling_alpha(w) if scaling_factor else None
    dy64 = np.asarray(dy, np.float64)
    dy_s = dy64 * alpha.astype(np.float64)[None, :, None, None] if alpha is not None else dy64
    kw = dict(stride=stride, pad=pad, dilate=dilate, groups=groups, pad_value=float(pad_value))
    dx, _ = conv2d_grads(xq, wq, dy_s, **kw)
    _, g = conv2d_grads(xq, wq, dy64, **kw)
    if act_bit < 32:
        dx = np.where(
            np.abs(np.asarray(x, np.float32)) <= np.float32(grad_cancel), dx, np.float32(0)
        )
    dw, dalpha = _finish_weight_grad(g, w, wq, alpha)
    out = {"data": dx, "weight": dw, "bias": dy64.sum(axis=(0, 2, 3))}
    if dalpha is not None:
        out["alpha"] = dalpha
    return out


def q_dense(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    act_bit: int = 1,
    weight_bit: int | None = None,
    scaling_factor: bool = False,
    flatten: bool = True,
    in_scale: np.ndarray | None = None,
    in_shift: np.ndarray | None = None,
) -> np.ndarray:
    """QFullyConnected forward with a float weight (float64 result). ``in_scale``/``in_shift``
    (``input_affine=True``, act_bit 1) have one entry per feature ``d`` of the ``rows x D``
    view (the flattened index with ``flatten``); the input is ``x * in_scale[d] +
    in_shift[d]`` before the sign."""
    weight_bit = act_bit if weight_bit is None else weight_bit
    x = np.asarray(x, np.float32)
    lead = (x.shape[0],) if flatten else x.shape[:-1]
    x2 = x.reshape(int(np.prod(lead)), -1)
    if in_scale is not None:
        x2 = input_affine(x2, in_scale, in_shift, axis=1)
    out = quantize_act(x2, act_bit).astype(np.float64) @ quantize_weight(w, weight_bit).T.astype(
        np.float64
    )
    if scaling_factor:
        out = out * scaling_alpha(w).astype(np.float64)[None, :]
    if bias is not None:
        out = out + np.asarray(bias, np.float64)[None, :]
    return out.reshape(*lead, w.shape[0])


def q_dense_grads(
    x: np.ndarray,
    w: np.ndarray,
    dy: np.ndarray,
    *,
    act_bit: int = 1,
    weight_bit: int | None = None,
    scaling_factor: bool = False,
    flatten: bool = True,
    grad_cancel: float = 1.0,
) -> dict[str, np.ndarray]:
    """STE gradients of QFullyConnected: ``{"data", "weight", "bias", "alpha"}`` (float64)."""
    weight_bit = act_bit if weight_bit is None else weight_bit
    x = np.asarray(x, np.float32)
    lead = (x.shape[0],) if flatten else x.shape[:-1]
    x2 = x.reshape(int(np.prod(lead)), -1)
    dy2 = np.asarray(dy, np.float64).reshape(x2.shape[0], -1)
    xq = quantize_act(x2, act_bit).astype(np.float64)
    wq = quantize_weight(w, weight_bit).astype(np.float64)
    alpha = scaling_alpha(w) if scaling_factor else None
    dy_s = dy2 * alpha.astype(np.float64)[None, :] if alpha is not None else dy2
    dx = dy_s @ wq
    if act_bit < 32:
        dx = np.where(np.abs(x2) <= np.float32(grad_cancel), dx, np.float32(0))
    g = dy2.T @ xq
    dw, dalpha = _finish_weight_grad(g, w, wq, alpha)
    out = {"data": dx.reshape(x.shape), "weight": dw, "bias": dy2.sum(axis=0)}
    if dalpha is not None:
        out["alpha"] = dalpha
    return out


def q_activation(x: np.ndarray, *, act_bit: int = 1, backward_only: bool = False) -> np.ndarray:
    """QActivation forward."""
    x = np.asarray(x, np.float32)
    return x.copy() if backward_only else quantize_act(x, act_bit)


def q_activation_grad(
    x: np.ndarray,
    dy: np.ndarray,
    *,
    act_bit: int = 1,
    backward_only: bool = False,
    grad_cancel: float = 1.0,
) -> np.ndarray:
    """QActivation backward: ``dy * 1[|x| <= grad_cancel]`` (unless a plain act_bit=32 layer)."""
    dy = np.asarray(dy, np.float32)
    if act_bit < 32 or backward_only:
        return np.where(
            np.abs(np.asarray(x, np.float32)) <= np.float32(grad_cancel), dy, np.float32(0)
        )
    return dy.copy()


def pack_weight(w: np.ndarray) -> np.ndarray:
    """Packed weight format: rank 4 ``(F, C, kh, kw)`` -> ``(F, kh, kw, ceil(C/64))`` (channel c
    of tap (i, j) in word c // 64, bit c % 64); rank 2 ``(H, D)`` -> ``(H, ceil(D/64))``."""
    w = np.asarray(w)
    if w.ndim == 2:
        return pack_bits(w)
    f, c, kh, kw = w.shape
    return pack_bits(w.transpose(0, 2, 3, 1).reshape(f * kh * kw, c)).reshape(f, kh, kw, -1)


# ---- packed k-bit weights (docs/design.md §2) ------------------------------------------------


def weight_levels(w: np.ndarray, bits: int) -> np.ndarray:
    """The integer weight levels ``lw`` (uint8) with ``quantize_weight(w, bits) = 2 lw / B - 1``,
    ``B = 2^bits - 1``, bits in 1..8: ``w >= 0`` for 1 bit, else
    ``rint(B (tanh(w) / (2 max|tanh w|) + 1/2))`` over the whole tensor, in float64."""
    w = np.asarray(w, dtype=np.float32)
    if bits == 1:
        return (w >= 0).astype(np.uint8)
    levels = float(2**bits - 1)
    t = np.tanh(w.astype(np.float64))
    m = np.abs(t).max() if t.size else 0.0
    u = t / (2.0 * m) if m > 0 else np.zeros_like(t)
    return np.rint(levels * (u + 0.5)).astype(np.uint8)


def pack_levels(levels: np.ndarray, bits: int) -> np.ndarray:
    """The k-bit weight stream of ``levels`` (flattened in C order): level ``i`` is bits
    ``i * bits .. i * bits + bits - 1`` of the stream, least significant first, stream bit ``b``
    is bit ``b % 64`` of word ``b // 64``; ``int64[ceil(n * bits / 64)]``, tail bits 0."""
    lv = np.asarray(levels, dtype=np.uint8).reshape(-1)
    if lv.size and int(lv.max()) >> bits:
        raise ValueError(f"a level does not fit {bits} bits")
    stream = ((lv[:, None] >> np.arange(bits, dtype=np.uint8)) & 1).reshape(-1)  # LSB first
    words = (stream.size + 63) // 64
    padded = np.zeros(words * 64, dtype=np.uint8)
    padded[: stream.size] = stream
    as_bytes = np.packbits(padded, bitorder="little")  # bit b of the stream -> byte b // 8
    return as_bytes.view("<u8").astype(np.uint64).view(np.int64)


def unpack_levels(words: np.ndarray, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_levels`: the first ``n`` levels of the stream, uint8."""
    raw = np.ascontiguousarray(np.asarray(words, dtype=np.int64)).astype("<i8").view(np.uint8)
    stream = np.unpackbits(raw, bitorder="little")[: n * bits].reshape(n, bits)
    return (
        (stream.astype(np.uint16) << np.arange(bits, dtype=np.uint16)).sum(axis=1).astype(np.uint8)
    )
