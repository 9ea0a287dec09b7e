"""Bit packing and xnor GEMM on the CPU (binmx's C++ core, through pybind11).

Bit convention (DESIGN.md §3): bit 1 means -1, bit 0 means +1; ``x < 0`` gives bit 1, so
``sign(0) = sign(-0.0) = +1``. Element ``j`` of a row goes to word ``j // 64``, bit ``j % 64``
(LSB first); tail bits of the last word are 0. Words are uint64 bit patterns stored in int64
arrays (MXNet has no uint64 dtype).

The xnor GEMM computes ``C[m, n] = k - 2 * popcount(A[m] XOR B[n])``, the +-1 dot product of
the two sign rows over the true depth ``k``.
"""

from __future__ import annotations

import numpy as np

from binmx import _xnor

__all__ = [
    "available_isas",
    "current_isa",
    "default_threads",
    "pack_bits",
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
            raise ValueError(
                f"Expected `isa` to be one of scalar, avx2, avx512, neon, got {isa!r}"
            )
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

    ``BINMX_ISA=scalar|avx2|avx512|neon`` caps the path for the process (x86-64 builds have
    scalar, avx2 and avx512; aarch64 builds scalar and neon); naming an unknown or
    unavailable path raises ``ValueError`` here and in every call that uses the default.
    """
    return _xnor.current_isa()


def default_threads() -> int:
    """Threads used when ``threads=None``: ``OMP_NUM_THREADS`` if a positive int, else all."""
    return int(_xnor.default_threads())


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
