"""NumPy reference of binmx's kernels and operators, written independently of the C++ code.

Only NumPy is imported here. Conventions (DESIGN.md §3): ``sgn(x) = +1 if x >= 0 else -1``
(so ``sgn(0) = sgn(-0.0) = +1``); bit 1 means -1; element ``j`` of a row goes to word
``j // 64``, bit ``j % 64``; words are uint64 patterns viewed as int64.
"""

from __future__ import annotations

import numpy as np


def sgn(x: np.ndarray) -> np.ndarray:
    """+1 where ``x >= 0`` (including -0.0), -1 elsewhere, as float32."""
    return np.where(np.asarray(x) >= 0, np.float32(1), np.float32(-1)).astype(np.float32)


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
