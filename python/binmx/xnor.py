"""Bit packing and xnor GEMM on the CPU (binmx's C++ core, through pybind11).

Bit convention (docs/design.md §2): bit 1 means -1, bit 0 means +1; ``x < 0`` gives bit 1, so
``sign(0) = sign(-0.0) = +1``. Element ``j`` of a row goes to word ``j // 64``, bit ``j % 64``
(LSB first); tail bits of the last word are 0. Words are uint64 bit patterns stored in int64
arrays (MXNet has no uint64 dtype).

The xnor GEMM computes ``C[m, n] = k - 2 * popcount(A[m] XOR B[n])``, the +-1 dot product of
the two sign rows over the true depth ``k``.

``binary_conv2d`` and ``binary_dense`` are the direct binary convolution and dense layer of the
core (``src/xnor_gemm/bconv.h``; the packed layouts are in ``docs/design.md`` §2), the kernels
the QConvolution / QFullyConnected operators run for ``act_bit = weight_bit = 1``, callable here
without MXNet.
"""

from __future__ import annotations

import numpy as np

from binmx import _xnor

__all__ = [
    "available_isas",
    "binary_conv2d",
    "binary_dense",
    "current_isa",
    "default_threads",
    "kbit_path",
    "kbit_weight_levels",
    "pack_bits",
    "pack_conv_weights",
    "pack_kbit_levels",
    "unpack_kbit_levels",
    "xnor_gemm",
    "xnor_gemm_f32",
]


def _check_array(name: str, arr: object, dtype: type, ndim: int) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"Expected `{name}` to be a numpy.ndarray, got {type(arr).__name__}")
    if arr.dtype != np.dtype(dtype):
        raise TypeError(f"Expected `{name}` to have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"Expected `{name}` to have rank {ndim}, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"Expected `{name}` to be C-contiguous")
    return arr


def _check_options(isa: str | None, threads: int | None) -> tuple[str, int]:
    if isa is not None:
        if not isinstance(isa, str):
            raise TypeError(f"Expected `isa` to be a str or None, got {isa!r}")
        if isa not in ("scalar", "avx2", "avx512", "neon"):
            raise ValueError(f"Expected `isa` to be one of scalar, avx2, avx512, neon, got {isa!r}")
        if isa not in available_isas():
            raise ValueError(f"`isa`={isa!r} is not available here (available: {available_isas()})")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
            raise TypeError(f"Expected `threads` to be a positive int or None, got {threads!r}")
        if threads < 1:
            raise ValueError(f"Expected `threads` to be a positive int, got {threads!r}")
    return isa or "", int(threads or 0)


def _check_gemm(a_words: np.ndarray, b_words: np.ndarray, k: int) -> None:
    _check_array("a_words", a_words, np.int64, 2)
    _check_array("b_words", b_words, np.int64, 2)
    if a_words.shape[1] != b_words.shape[1]:
        raise ValueError(
            f"`a_words` and `b_words` must have the same number of words per row, got "
            f"{a_words.shape[1]} and {b_words.shape[1]}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"Expected `k` to be an int, got {k!r}")
    if k < 0 or k > 64 * a_words.shape[1]:
        raise ValueError(f"Expected `k` in [0, 64 * words = {64 * a_words.shape[1]}], got {k}")


def _check_out(
    out: np.ndarray | None, dtype: type, m: int, n: int, inputs: tuple[object, ...]
) -> None:
    if out is None:
        return
    _check_array("out", out, dtype, 2)
    if out.shape != (m, n):
        raise ValueError(f"Expected `out` to have shape {(m, n)}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError("Expected `out` to be writeable")
    if any(v is not None and np.may_share_memory(out, v) for v in inputs):
        raise ValueError("Expected `out` not to overlap the inputs")


def available_isas() -> list[str]:
    """Kernel paths built into the library AND supported by this CPU, slowest first."""
    return list(_xnor.available_isas())


def current_isa() -> str:
    """The path used when none is asked for: the best available, capped by ``BINMX_ISA``.

    ``BINMX_ISA=scalar|avx2|avx512|neon`` caps the path (x86-64 builds have scalar, avx2 and
    avx512; aarch64 builds scalar and neon); it is read on every call, and naming an unknown or
    unavailable path raises ``ValueError`` here and in every call that uses the default
    (docs/design.md §6).
    """
    return _xnor.current_isa()


def default_threads() -> int:
    """Threads used when ``threads=None``: ``OMP_NUM_THREADS`` if a positive int, else all."""
    return int(_xnor.default_threads())


def kbit_path(act_bit: int, weight_bit: int, depth: int) -> str:
    """The kernel a k-bit QConvolution / QFullyConnected forward runs (kbit.h).

    ``"bitserial"`` (act_bit 2..4, weight_bit 1..4: AND + popcount over bit planes),
    ``"int8"`` (act_bit 2..8, weight_bit 1..8 otherwise: u8 x s8 dot products, VNNI where the
    CPU has it) or ``"float"`` (no integer kernel: im2col + GEMM on the fake-quantised floats).
    ``depth`` is kh * kw * C / groups (or the dense depth); above 65536 the path is float.
    """
    return str(_xnor.kbit_path(int(act_bit), int(weight_bit), int(depth)))


def _check_bits(name: str, bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"Expected `{name}` to be an int in 1..8, got {bits!r}")
    return int(bits)


def kbit_weight_levels(w: np.ndarray, weight_bit: int) -> np.ndarray:
    """The weight levels ``lw`` of float32 ``w`` (any shape, quantised as one tensor), uint8.

    ``lw = rint(B * (tanh(W) / (2 max|tanh W|) + 1/2))``, ``B = 2^weight_bit - 1``, in double
    (``W >= 0`` for 1 bit): the core's ``KbitWeightLevels``, the integers the operators' k-bit
    kernels run on (``Qw(W) = 2 lw / B - 1``). ``weight_bit`` in 1..8; NaN is a ValueError.
    """
    if not isinstance(w, np.ndarray):
        raise TypeError(f"Expected `w` to be a numpy.ndarray, got {type(w).__name__}")
    if w.dtype != np.float32:
        raise TypeError(f"Expected `w` to have dtype float32, got {w.dtype}")
    return _xnor.kbit_weight_levels(np.ascontiguousarray(w), _check_bits("weight_bit", weight_bit))


def pack_kbit_levels(levels: np.ndarray, bits: int) -> np.ndarray:
    """Pack uint8 ``levels[n]`` (each below ``2^bits``) into the k-bit weight stream.

    Level ``i`` is bits ``[i * bits, (i + 1) * bits)`` of the stream, least significant first;
    stream bit ``b`` is bit ``b % 64`` of word ``b // 64`` (docs/design.md §2). Returns
    ``int64[ceil(n * bits / 64)]`` (uint64 patterns), the bits past ``n * bits`` 0.
    """
    _check_array("levels", levels, np.uint8, 1)
    return _xnor.pack_kbit_levels(levels, _check_bits("bits", bits))


def unpack_kbit_levels(words: np.ndarray, n: int, bits: int) -> np.ndarray:
    """The ``n`` uint8 levels of a k-bit weight stream (:func:`pack_kbit_levels`); ValueError
    when ``words`` is not ``ceil(n * bits / 64)`` long or a bit past the last level is set."""
    _check_array("words", words, np.int64, 1)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"Expected `n` to be a non-negative int, got {n!r}")
    return _xnor.unpack_kbit_levels(words, int(n), _check_bits("bits", bits))


def pack_bits(x: np.ndarray, *, isa: str | None = None) -> np.ndarray:
    """Pack float32 ``x[M, K]`` into sign words ``int64[M, ceil(K / 64)]`` (bit 1 = negative).

    Bit ``j % 64`` of word ``j // 64`` is ``x[:, j] < 0``, so +0.0, -0.0 (and NaN) give 0
    (+1); tail bits are 0. Every ``isa`` gives the same bits.
    """
    _check_array("x", x, np.float32, 2)
    isa_s, _ = _check_options(isa, None)
    return _xnor.pack_bits(x, isa_s)


def xnor_gemm(
    a_words: np.ndarray,
    b_words: np.ndarray,
    k: int,
    *,
    isa: str | None = None,
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``C[m, n] = k - 2 * popcount(a_words[m] XOR b_words[n])`` as int32[M, N].

    Both operands are packed along K (``pack_bits``); ``k`` is the true depth, at most
    ``64 * words``; tail bits beyond ``k`` must be 0 (as ``pack_bits`` makes them). ``isa``
    picks a kernel path (default: ``current_isa()``); ``threads`` defaults to
    ``OMP_NUM_THREADS`` or the number of hardware threads. The result is the same for every
    ``isa`` and every thread count. ``out``: optional C-contiguous int32[M, N] to write into
    (returned).
    """
    _check_gemm(a_words, b_words, k)
    _check_out(out, np.int32, a_words.shape[0], b_words.shape[0], (a_words, b_words))
    isa_s, threads_i = _check_options(isa, threads)
    return _xnor.xnor_gemm(a_words, b_words, int(k), isa_s, threads_i, out)


def xnor_gemm_f32(
    a_words: np.ndarray,
    b_words: np.ndarray,
    k: int,
    *,
    scale: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    isa: str | None = None,
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Float output with the fused epilogue ``dot * scale[m] + bias[m]`` (float32[M, N]).

    Computed as ``float32(dot) * scale[m]`` rounded, then ``+ bias[m]`` rounded (no fused
    multiply-add), so every ``isa`` and thread count gives the same bits. ``scale``/``bias``
    are float32[M] or None (1 and 0). ``out``: optional float32[M, N] to write into.
    """
    _check_gemm(a_words, b_words, k)
    m = a_words.shape[0]
    for name, v in (("scale", scale), ("bias", bias)):
        if v is not None:
            _check_array(name, v, np.float32, 1)
            if v.shape[0] != m:
                raise ValueError(f"Expected `{name}` to have shape ({m},), got {v.shape}")
    _check_out(out, np.float32, m, b_words.shape[0], (a_words, b_words, scale, bias))
    isa_s, threads_i = _check_options(isa, threads)
    return _xnor.xnor_gemm_f32(a_words, b_words, int(k), scale, bias, isa_s, threads_i, out)


def _pair(name: str, v: int | tuple[int, int], minimum: int) -> tuple[int, int]:
    t = (v, v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v
    ok = isinstance(t, (tuple, list)) and len(t) == 2
    ok = ok and all(isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in t)
    if not ok or min(t) < minimum:
        raise ValueError(
            f"Expected `{name}` to be an int or a pair of ints >= {minimum}, got {v!r}"
        )
    return int(t[0]), int(t[1])


def _check_vector(name: str, v: np.ndarray | None, n: int) -> None:
    if v is None:
        return
    _check_array(name, v, np.float32, 1)
    if v.shape[0] != n:
        raise ValueError(f"Expected `{name}` to have shape ({n},), got {v.shape}")


def pack_conv_weights(w: np.ndarray, *, groups: int = 1, fast: bool = True) -> np.ndarray:
    """Pack OIHW float32 weights ``w[F, C/groups, kh, kw]`` for ``binary_conv2d``.

    Returns ``int64[F, kh, kw, ceil(C/groups / 64)]``: channel ``c`` of tap ``(i, j)`` is bit
    ``c % 64`` of word ``c // 64``, set iff ``w[f, c, i, j] < 0`` (tail bits 0). ``fast=True``
    runs the operators' vectorised packer (``PackConvWeightsFast``), ``fast=False`` the plain
    loop (``PackConvWeights``, its reference); both give the same bits.
    """
    _check_array("w", w, np.float32, 4)
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"Expected `groups` to be a positive int, got {groups!r}")
    if w.shape[0] % groups != 0:
        raise ValueError(f"Expected F={w.shape[0]} to be divisible by `groups`={groups}")
    if min(w.shape) < 1:
        raise ValueError(f"Expected `w` to have no empty axis, got shape {w.shape}")
    return _xnor.pack_conv_weights(w, int(groups), bool(fast))


def binary_conv2d(
    x: np.ndarray,
    w_packed: np.ndarray,
    *,
    channels: int | None = None,
    stride: int | tuple[int, int] = 1,
    pad: int | tuple[int, int] = 0,
    dilate: int | tuple[int, int] = 1,
    groups: int = 1,
    pad_value: int = 0,
    alpha: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    in_scale: np.ndarray | None = None,
    in_shift: np.ndarray | None = None,
    residual: np.ndarray | None = None,
    out_scale: np.ndarray | None = None,
    out_shift: np.ndarray | None = None,
    isa: str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Direct binary 2-D convolution (XNOR-Net forward, ``act_bit = weight_bit = 1``).

    ``x`` is float32 ``[N, C, H, W]``, or the packed activations ``int64[N, H, W,
    ceil(C / 64)]`` (bit ``c % 64`` of word ``c // 64`` set means -1; bits past ``C`` are
    ignored) together with ``channels=C``. ``w_packed`` is ``int64[F, kh, kw, ceil(C/groups /
    64)]`` from ``pack_conv_weights``. With ``a = sgn(x * in_scale[c] + in_shift[c])`` (product
    and sum rounded separately; ``sgn(x)`` without the affine; sgn(v) = -1 iff v < 0)::

        dot[n, f, oy, ox] = sum_{c', i, j} apad[n, g*C/groups + c', oy*sh - ph + i*dh,
                                                 ox*sw - pw + j*dw] * sgn(W[f, c', i, j])
        out = float32(dot) * alpha[f] + bias[f] (+ residual[n, f, oy, ox])

    where ``apad`` is ``a`` extended by ``pad_value`` (0: zero padding as Convolution; +1 or
    -1: a constant border), ``g = f // (F / groups)``, alpha 1 and bias 0 when None; a
    multiply then an add, rounded each (never fused), so every ``isa`` and thread count gives
    the same bits. Returns float32 ``[N, F, OH, OW]``, or, with ``out_scale`` and ``out_shift``
    (float32 ``[F]``), the packed output ``int64[N, OH, OW, ceil(F / 64)]`` whose bit ``f`` is
    ``out * out_scale[f] + out_shift[f] < 0`` (the next layer's input bits; ``groups=1``, no
    residual). Packed input takes no ``in_scale`` / ``in_shift`` and needs ``groups=1``.
    """
    _check_array("w_packed", w_packed, np.int64, 4)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"Expected `x` to be a numpy.ndarray, got {type(x).__name__}")
    packed_in = x.dtype == np.int64
    if packed_in:
        _check_array("x", x, np.int64, 4)
        if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)):
            raise ValueError(
                f"Expected `channels` (a positive int) with packed `x`, got {channels!r}"
            )
        if channels < 1 or x.shape[3] != (channels + 63) // 64:
            raise ValueError(
                f"Expected packed `x` to have ceil(channels / 64) = {(max(channels, 1) + 63) // 64}"
                f" words per pixel, got shape {x.shape}"
            )
        c = int(channels)
        if in_scale is not None or in_shift is not None:
            raise ValueError("Packed `x` takes no `in_scale` / `in_shift` (its signs are final)")
    else:
        _check_array("x", x, np.float32, 4)
        if channels is not None and channels != x.shape[1]:
            raise ValueError(f"`channels`={channels!r} disagrees with x.shape[1]={x.shape[1]}")
        c = x.shape[1]
    stride_t = _pair("stride", stride, 1)
    pad_t = _pair("pad", pad, 0)
    dilate_t = _pair("dilate", dilate, 1)
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"Expected `groups` to be a positive int, got {groups!r}")
    if pad_value not in (0, 1, -1) or isinstance(pad_value, bool):
        raise ValueError(f"Expected `pad_value` to be 0, 1 or -1, got {pad_value!r}")
    f = w_packed.shape[0]
    if c % groups or f % groups:
        raise ValueError(f"Expected C={c} and F={f} to be divisible by `groups`={groups}")
    if w_packed.shape[3] != (c // groups + 63) // 64:
        raise ValueError(
            f"Expected `w_packed` to have ceil(C/groups / 64) = {(c // groups + 63) // 64} words"
            f" per tap, got shape {w_packed.shape}"
        )
    if (in_scale is None) != (in_shift is None):
        raise ValueError("Expected `in_scale` and `in_shift` together (or neither)")
    if (out_scale is None) != (out_shift is None):
        raise ValueError("Expected `out_scale` and `out_shift` together (or neither)")
    packed_out = out_scale is not None
    if (packed_in or packed_out) and groups != 1:
        raise ValueError("Packed input or output needs `groups`=1")
    if packed_out and residual is not None:
        raise ValueError("Packed output (`out_scale` / `out_shift`) takes no `residual`")
    for name, v, n in (
        ("alpha", alpha, f),
        ("bias", bias, f),
        ("in_scale", in_scale, c),
        ("in_shift", in_shift, c),
        ("out_scale", out_scale, f),
        ("out_shift", out_shift, f),
    ):
        _check_vector(name, v, n)
    n_img, h, w = (x.shape[0], x.shape[1], x.shape[2]) if packed_in else (x.shape[0], *x.shape[2:])
    kh, kw = w_packed.shape[1:3]
    oh = (h + 2 * pad_t[0] - dilate_t[0] * (kh - 1) - 1) // stride_t[0] + 1
    ow = (w + 2 * pad_t[1] - dilate_t[1] * (kw - 1) - 1) // stride_t[1] + 1
    if min(n_img, h, w, kh, kw) < 0 or oh < 1 or ow < 1 or min(h, w) < 1:
        raise ValueError(
            f"Expected a non-empty output: input {h}x{w}, kernel {kh}x{kw}, stride {stride_t},"
            f" pad {pad_t}, dilate {dilate_t} give {oh}x{ow}"
        )
    if residual is not None:
        _check_array("residual", residual, np.float32, 4)
        if residual.shape != (n_img, f, oh, ow):
            raise ValueError(
                f"Expected `residual` to have shape {(n_img, f, oh, ow)}, got {residual.shape}"
            )
    isa_s, threads_i = _check_options(isa, threads)
    return _xnor.binary_conv2d(
        w_packed,
        list(stride_t),
        list(pad_t),
        list(dilate_t),
        x=None if packed_in else x,
        x_bits=x if packed_in else None,
        channels=c,
        groups=int(groups),
        pad_value=int(pad_value),
        alpha=alpha,
        bias=bias,
        in_scale=in_scale,
        in_shift=in_shift,
        residual=residual,
        out_scale=out_scale,
        out_shift=out_shift,
        isa=isa_s,
        threads=threads_i,
    )


def binary_dense(
    x: np.ndarray,
    w_packed: np.ndarray,
    *,
    alpha: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    in_scale: np.ndarray | None = None,
    in_shift: np.ndarray | None = None,
    isa: str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Binary dense layer: ``out[m, h] = float32(dot) * alpha[h] + bias[h]`` (float32[M, H]).

    ``dot = sum_d sgn(x[m, d] * in_scale[d] + in_shift[d]) * sgn(W[h, d])`` (``sgn(x)``
    without the affine); ``x`` is float32 ``[M, D]``, ``w_packed`` is ``int64[H, ceil(D /
    64)]`` (``pack_bits`` of the float weight). Multiply, then add, rounded each: every ``isa``
    and thread count gives the same bits.
    """
    _check_array("x", x, np.float32, 2)
    _check_array("w_packed", w_packed, np.int64, 2)
    d, hidden = x.shape[1], w_packed.shape[0]
    if d < 1 or hidden < 1:
        raise ValueError(f"Expected depth and hidden >= 1, got x {x.shape}, w {w_packed.shape}")
    if w_packed.shape[1] != (d + 63) // 64:
        raise ValueError(
            f"Expected `w_packed` to have ceil(D / 64) = {(d + 63) // 64} words per row, got"
            f" shape {w_packed.shape}"
        )
    if (in_scale is None) != (in_shift is None):
        raise ValueError("Expected `in_scale` and `in_shift` together (or neither)")
    for name, v, n in (("alpha", alpha, hidden), ("bias", bias, hidden)):
        _check_vector(name, v, n)
    for name, v in (("in_scale", in_scale), ("in_shift", in_shift)):
        _check_vector(name, v, d)
    isa_s, threads_i = _check_options(isa, threads)
    return _xnor.binary_dense(
        x,
        w_packed,
        alpha=alpha,
        bias=bias,
        in_scale=in_scale,
        in_shift=in_shift,
        isa=isa_s,
        threads=threads_i,
    )
