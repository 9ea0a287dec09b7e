"""Bit packing, xnor GEMM and binary convolution on NVIDIA GPUs (ctypes over libbinmx_cuda.so).

Standalone: this module imports only the standard library and NumPy (CuPy lazily, when a CuPy
array is passed), never MXNet, so it also works as a single file on a GPU machine without the
rest of binmx (load it with ``importlib``; point ``BINMX_CUDA_LIB`` at the library).

Bit convention (docs/design.md §2), identical to ``binmx.xnor``: ``x < 0`` gives bit 1 (-1), every
other value (+0.0, -0.0, NaN) bit 0 (+1); element ``j`` of a row goes to word ``j // 64``, bit
``j % 64``; tail bits are 0; words are uint64 patterns in int64 arrays. The xnor GEMM computes
``C[m, n] = k - 2 * popcount(A[m] XOR B[n])``, the +-1 dot product over the true depth ``k``;
float outputs are ``float32(dot) * scale`` rounded, then ``+ bias`` rounded (no fused
multiply-add), so results are bit-identical to the CPU paths.

Arrays: pass NumPy arrays (copied to the device and back, synchronously) or CuPy arrays (device
pointers, work enqueued on CuPy's current stream, result returned as a CuPy array without
synchronizing). All array arguments of one call must be of the same kind.

``algo``: ``"auto"`` (``BINMX_CUDA_ALGO`` if set, else the library default for the device),
``"simt"`` (``__popcll`` tiles, any GPU) or ``"tensor"`` (1-bit tensor cores, AND form, sm_80+).

Library lookup: ``$BINMX_CUDA_LIB``, else ``libbinmx_cuda.so`` next to this file (installed by
``pip install . -Ccmake.define.BINMX_WITH_CUDA=ON``). When the library or a device is missing,
``device_count()`` is 0, ``unavailable_reason()`` says why, and every kernel call raises
``CudaUnavailableError``.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "CudaError",
    "CudaUnavailableError",
    "affine_sign",
    "available",
    "bias_grad",
    "binary_conv2d",
    "binary_conv2d_packed",
    "conv2d_out_shape",
    "device_capability",
    "device_count",
    "finish_weight_grad",
    "float_conv2d",
    "float_conv2d_backward",
    "float_dense",
    "float_dense_backward",
    "fully_connected",
    "fully_connected_packed",
    "library_path",
    "mean_abs_rows",
    "pack_bits",
    "pack_bits_affine",
    "pack_nchw",
    "pack_nchw_affine",
    "pack_weight",
    "quantize_act",
    "quantize_weight",
    "scale_rows",
    "ste_mask",
    "unavailable_reason",
    "unpack_weight",
    "xnor_gemm",
    "xnor_gemm_f32",
]

API_VERSION = 3
_ALGOS = {"auto": 0, "simt": 1, "tensor": 2}
_ERR_NO_DEVICE = 3


class CudaUnavailableError(RuntimeError):
    """No CUDA library, driver or device: the GPU path cannot run here."""


class CudaError(RuntimeError):
    """A call into libbinmx_cuda failed (message from ``binmx_cuda_last_error``)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class Conv2dParams(ctypes.Structure):
    """Mirror of ``binmx_cuda_conv2d_params`` (all int64)."""

    _fields_ = [
        (name, ctypes.c_int64)
        for name in (
            "batch", "channels", "height", "width", "num_filter", "kernel_h", "kernel_w",
            "stride_h", "stride_w", "pad_h", "pad_w", "dilate_h", "dilate_w", "num_group",
            "pad_value",
        )
    ]  # fmt: skip


_lib: ctypes.CDLL | None = None
_lib_error: str | None = None


def library_path() -> str:
    """Where the library is looked for: ``$BINMX_CUDA_LIB`` or next to this module."""
    env = os.environ.get("BINMX_CUDA_LIB")
    if env:
        return os.path.abspath(env)
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "libbinmx_cuda.so")


def _declare(lib: ctypes.CDLL) -> None:
    i64, i32, p, sz = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t
    sigs: dict[str, tuple[Any, list[Any]]] = {
        "binmx_cuda_api_version": (i32, []),
        "binmx_cuda_device_count": (i32, []),
        "binmx_cuda_last_error": (ctypes.c_char_p, []),
        "binmx_cuda_device_capability": (i32, []),
        "binmx_cuda_resolve_algo": (i32, [i32, i64]),
        "binmx_cuda_malloc": (i32, [ctypes.POINTER(p), sz]),
        "binmx_cuda_free": (i32, [p]),
        "binmx_cuda_memcpy_htod": (i32, [p, p, sz]),
        "binmx_cuda_memcpy_dtoh": (i32, [p, p, sz]),
        "binmx_cuda_stream_synchronize": (i32, [p]),
        "binmx_cuda_pack_rows": (i32, [p, i64, i64, i64, p, p]),
        "binmx_cuda_pack_nchw": (i32, [p, i64, i64, i64, i64, i64, p, p]),
        "binmx_cuda_xnor_gemm": (i32, [p, p, i64, i64, i64, i64, p, i64, i32, p]),
        "binmx_cuda_xnor_gemm_f32": (i32, [p, p, i64, i64, i64, i64, p, p, p, i64, i32, p]),
        "binmx_cuda_fully_connected_workspace": (sz, [i64, i64]),
        "binmx_cuda_fully_connected": (i32, [p, i64, i64, p, i64, p, p, p, p, sz, i32, p]),
        "binmx_cuda_conv2d_out_shape": (
            i32,
            [ctypes.POINTER(Conv2dParams), ctypes.POINTER(i64), ctypes.POINTER(i64)],
        ),
        "binmx_cuda_binary_conv2d_workspace": (sz, [ctypes.POINTER(Conv2dParams)]),
        "binmx_cuda_binary_conv2d": (
            i32,
            [ctypes.POINTER(Conv2dParams), p, p, p, p, p, p, sz, i32, p],
        ),
        "binmx_cuda_binary_conv2d_packed": (
            i32,
            [ctypes.POINTER(Conv2dParams), p, p, p, p, p, i32, p],
        ),
        # API version 3: the packed-input convolution with caller-provided scratch.
        "binmx_cuda_binary_conv2d_packed_workspace": (sz, [ctypes.POINTER(Conv2dParams)]),
        "binmx_cuda_binary_conv2d_packed_ws": (
            i32,
            [ctypes.POINTER(Conv2dParams), p, p, p, p, p, p, sz, i32, p],
        ),
        # API version 2: what the MXNet "gpu" operators use (train.cu).
        "binmx_cuda_fill_zero": (i32, [p, sz, p]),
        "binmx_cuda_mean_abs_rows": (i32, [p, i64, i64, p, p]),
        "binmx_cuda_quantize_act": (i32, [p, i64, i32, p, p]),
        "binmx_cuda_quantize_weight_workspace": (sz, []),
        "binmx_cuda_quantize_weight": (i32, [p, i64, i32, p, p, sz, p]),
        "binmx_cuda_affine_sign": (i32, [p, i64, i64, i64, p, p, p, p]),
        "binmx_cuda_ste_mask": (i32, [p, p, i64, ctypes.c_float, p, p]),
        "binmx_cuda_pack_rows_affine": (i32, [p, i64, i64, i64, p, p, p, p]),
        "binmx_cuda_pack_nchw_affine": (i32, [p, i64, i64, i64, i64, i64, p, p, p, p]),
        "binmx_cuda_unpack_conv_weight": (i32, [p, i64, i64, i64, i64, p, p]),
        "binmx_cuda_fully_connected_packed": (i32, [p, i64, i64, p, i64, p, p, p, i32, p]),
        "binmx_cuda_scale_rows": (i32, [p, p, i64, i64, p, p]),
        "binmx_cuda_bias_grad": (i32, [p, i64, i64, i64, p, p]),
        "binmx_cuda_finish_weight_grad": (i32, [p, p, p, p, i64, i64, p, p, p]),
        "binmx_cuda_float_conv2d_workspace": (sz, [ctypes.POINTER(Conv2dParams)]),
        "binmx_cuda_float_conv2d_forward": (
            i32,
            [ctypes.POINTER(Conv2dParams), p, i32, p, p, p, p, p, sz, p],
        ),
        "binmx_cuda_float_conv2d_backward": (
            i32,
            [ctypes.POINTER(Conv2dParams), p, i32, p, p, p, ctypes.c_float, p, p, p, sz, p],
        ),
        "binmx_cuda_float_dense_forward": (i32, [p, i32, p, p, p, p, i64, i64, i64, p]),
        "binmx_cuda_float_dense_backward": (
            i32,
            [p, i32, p, p, p, ctypes.c_float, p, p, i64, i64, i64, p],
        ),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def _load() -> ctypes.CDLL | None:
    """Loads the library once; on failure remembers why and returns None."""
    global _lib, _lib_error
    if _lib is not None or _lib_error is not None:
        return _lib
    path = library_path()
    if not os.path.exists(path):
        _lib_error = (
            f"{path} not found: build it with `pip install . -Ccmake.define.BINMX_WITH_CUDA=ON`"
            " (or tools/gpu_check.sh) or set BINMX_CUDA_LIB"
        )
        return None
    try:
        lib = ctypes.CDLL(path)
        _declare(lib)
    except (OSError, AttributeError) as exc:
        _lib_error = f"cannot load {path}: {exc}"
        return None
    version = lib.binmx_cuda_api_version()
    if version != API_VERSION:
        _lib_error = f"{path} has C API version {version}, this module needs {API_VERSION}"
        return None
    _lib = lib
    return _lib


def unavailable_reason() -> str | None:
    """Why the GPU path cannot run here (no library, driver or device), or None if it can."""
    lib = _load()
    if lib is None:
        return _lib_error
    if lib.binmx_cuda_device_count() > 0:
        return None
    return f"no CUDA device: {lib.binmx_cuda_last_error().decode(errors='replace')}"


def device_count() -> int:
    """Number of usable CUDA devices; 0 when the library, the driver or a device is missing."""
    lib = _load()
    return 0 if lib is None else int(lib.binmx_cuda_device_count())


def available() -> bool:
    """True when the library loads and at least one CUDA device is usable."""
    return device_count() > 0


def _require() -> ctypes.CDLL:
    reason = unavailable_reason()
    if reason is not None:
        raise CudaUnavailableError(f"binmx.cuda cannot run: {reason}")
    assert _lib is not None
    return _lib


def _check(rc: int) -> None:
    if rc != 0:
        assert _lib is not None
        msg = _lib.binmx_cuda_last_error().decode(errors="replace")
        if rc == _ERR_NO_DEVICE:
            raise CudaUnavailableError(f"binmx.cuda: {msg}")
        raise CudaError(f"binmx.cuda: {msg}", rc)


def device_capability() -> int:
    """Compute capability of the current device as ``10 * major + minor`` (e.g. 90)."""
    lib = _require()
    cap = int(lib.binmx_cuda_device_capability())
    if cap < 0:
        _check(2)
    return cap


def resolve_algo(algo: str = "auto", words: int = 0) -> str:
    """The kernel family ``algo`` runs on the current device ("simt" or "tensor")."""
    lib = _require()
    code = int(lib.binmx_cuda_resolve_algo(_algo_code(algo), int(words)))
    if code < 0:
        _check(2)
    return {1: "simt", 2: "tensor"}[code]


# ---- argument handling ---------------------------------------------------------------------


def _is_cupy(arr: object) -> bool:
    return type(arr).__module__.split(".")[0] == "cupy"


def _algo_code(algo: str) -> int:
    if not isinstance(algo, str) or algo not in _ALGOS:
        raise ValueError(f"Expected `algo` to be one of auto, simt, tensor, got {algo!r}")
    return _ALGOS[algo]


def _check_array(name: str, arr: object, dtypes: Sequence[type], ndim: int | None) -> None:
    if not isinstance(arr, np.ndarray) and not _is_cupy(arr):
        raise TypeError(
            f"Expected `{name}` to be a numpy.ndarray or cupy.ndarray, got {type(arr).__name__}"
        )
    a: Any = arr
    if a.dtype not in [np.dtype(d) for d in dtypes]:
        want = " or ".join(str(np.dtype(d)) for d in dtypes)
        raise TypeError(f"Expected `{name}` to have dtype {want}, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"Expected `{name}` to have rank {ndim}, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"Expected `{name}` to be C-contiguous")


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"Expected `{name}` to be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"Expected `{name}` >= {minimum}, got {value}")
    return int(value)


def _pair(name: str, value: object, minimum: int) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"Expected `{name}` to be an int or a pair of ints, got {value!r}")
    a = _check_int(name, value[0], minimum)
    b = _check_int(name, value[1], minimum)
    return a, b


def _check_vector(name: str, v: object, length: int) -> None:
    if v is None:
        return
    _check_array(name, v, (np.float32,), 1)
    shape = v.shape  # type: ignore[attr-defined]
    if shape[0] != length:
        raise ValueError(f"Expected `{name}` to have shape ({length},), got {shape}")


class _Call:
    """Runs one library call on numpy (copy in/out) or CuPy (device pointers) arrays."""

    def __init__(self, inputs: Sequence[object]) -> None:
        present = [a for a in inputs if a is not None]
        kinds = {_is_cupy(a) for a in present}
        if len(kinds) > 1:
            raise TypeError("Expected all array arguments to be numpy arrays or all CuPy arrays")
        self.cupy = bool(kinds) and kinds.pop()
        self.lib = _require()
        self._owned: list[int] = []
        self._copy_back: list[tuple[np.ndarray, int]] = []
        if self.cupy:
            import cupy

            self._cp = cupy
            self.stream = ctypes.c_void_p(cupy.cuda.get_current_stream().ptr)
        else:
            self.stream = ctypes.c_void_p(None)

    def __enter__(self) -> _Call:
        return self

    def __exit__(self, *exc: object) -> None:
        for ptr in self._owned:
            self.lib.binmx_cuda_free(ctypes.c_void_p(ptr))
        self._owned.clear()

    def _alloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        _check(self.lib.binmx_cuda_malloc(ctypes.byref(ptr), max(int(nbytes), 0)))
        if ptr.value:
            self._owned.append(ptr.value)
        return ptr.value or 0

    def ptr(self, arr: object) -> ctypes.c_void_p:
        """Device pointer of an input (None -> NULL)."""
        if arr is None:
            return ctypes.c_void_p(None)
        if self.cupy:
            return ctypes.c_void_p(arr.data.ptr)  # type: ignore[attr-defined]
        host = np.ascontiguousarray(arr)
        dev = self._alloc(host.nbytes)
        if host.nbytes:
            _check(
                self.lib.binmx_cuda_memcpy_htod(ctypes.c_void_p(dev), host.ctypes.data, host.nbytes)
            )
        return ctypes.c_void_p(dev)

    def output(self, shape: tuple[int, ...], dtype: type) -> tuple[object, ctypes.c_void_p]:
        if self.cupy:
            out = self._cp.empty(shape, dtype=dtype)
            return out, ctypes.c_void_p(out.data.ptr)
        out = np.empty(shape, dtype=dtype)
        dev = self._alloc(out.nbytes)
        self._copy_back.append((out, dev))
        return out, ctypes.c_void_p(dev)

    def scratch(self, nbytes: int) -> ctypes.c_void_p:
        if self.cupy:
            buf = self._cp.empty((max(int(nbytes), 1),), dtype=self._cp.uint8)
            self._keep = buf  # alive until the call object goes
            return ctypes.c_void_p(buf.data.ptr)
        return ctypes.c_void_p(self._alloc(nbytes))

    def finish(self) -> None:
        """NumPy: wait for the work and copy the outputs back."""
        if self.cupy:
            return
        _check(self.lib.binmx_cuda_stream_synchronize(self.stream))
        for out, dev in self._copy_back:
            if out.nbytes:
                _check(
                    self.lib.binmx_cuda_memcpy_dtoh(
                        out.ctypes.data, ctypes.c_void_p(dev), out.nbytes
                    )
                )


# ---- public API ----------------------------------------------------------------------------


def pack_bits(x: Any) -> Any:
    """Pack float32 ``x[M, K]`` into sign words ``int64[M, ceil(K / 64)]`` (bit 1 = ``x < 0``).

    Same bits as ``binmx.xnor.pack_bits`` and ``binmx.reference.pack_bits``.
    """
    _check_array("x", x, (np.float32,), 2)
    rows, k = x.shape
    words = (k + 63) // 64
    with _Call([x]) as call:
        xp = call.ptr(x)
        out, op = call.output((rows, words), np.int64)
        _check(call.lib.binmx_cuda_pack_rows(xp, rows, k, k, op, call.stream))
        call.finish()
    return out


def pack_nchw(x: Any, *, num_group: int = 1) -> Any:
    """Per-pixel channel words of float32 NCHW ``x``: int64 ``(N, H, W, num_group, cw)``.

    ``cw = ceil(C / num_group / 64)``; word ``c // 64`` of group ``g`` at pixel ``(y, x)`` has
    bit ``c % 64`` set when ``x[n, g * C/num_group + c, y, x] < 0``; tail bits 0.
    """
    _check_array("x", x, (np.float32,), 4)
    groups = _check_int("num_group", num_group, 1)
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"Expected channels ({c}) divisible by `num_group` ({groups})")
    cw = (c // groups + 63) // 64
    with _Call([x]) as call:
        xp = call.ptr(x)
        out, op = call.output((n, h, w, groups, cw), np.int64)
        _check(call.lib.binmx_cuda_pack_nchw(xp, n, c, h, w, groups, op, call.stream))
        call.finish()
    return out


def pack_weight(w: Any) -> Any:
    """Pack a float32 conv weight ``(F, C/g, kh, kw)`` into ``int64 (F, kh, kw, ceil(C/g/64))``.

    Channel ``c`` of tap ``(i, j)`` goes to word ``c // 64``, bit ``c % 64`` (the converter's
    packed-weight format, docs/design.md §2).
    """
    _check_array("w", w, (np.float32,), 4)
    packed = pack_nchw(w, num_group=1)
    f, kh, kw, _, cw = packed.shape
    return packed.reshape(f, kh, kw, cw)


def _check_gemm(a_words: Any, b_words: Any, k: int) -> int:
    _check_array("a_words", a_words, (np.int64, np.uint64), 2)
    _check_array("b_words", b_words, (np.int64, np.uint64), 2)
    if a_words.shape[1] != b_words.shape[1]:
        raise ValueError(
            "`a_words` and `b_words` must have the same number of words per row, got "
            f"{a_words.shape[1]} and {b_words.shape[1]}"
        )
    k = _check_int("k", k, 0)
    if k > 64 * a_words.shape[1]:
        raise ValueError(f"Expected `k` in [0, 64 * words = {64 * a_words.shape[1]}], got {k}")
    return k


def xnor_gemm(a_words: Any, b_words: Any, k: int, *, algo: str = "auto") -> Any:
    """``C[m, n] = k - 2 * popcount(a_words[m] XOR b_words[n])`` as int32 ``[M, N]``.

    Operands are packed rows (``pack_bits``) with zero tail bits beyond the true depth ``k``.
    """
    k = _check_gemm(a_words, b_words, k)
    code = _algo_code(algo)
    m, words = a_words.shape
    n = b_words.shape[0]
    with _Call([a_words, b_words]) as call:
        ap, bp = call.ptr(a_words), call.ptr(b_words)
        out, op = call.output((m, n), np.int32)
        _check(call.lib.binmx_cuda_xnor_gemm(ap, bp, m, n, words, k, op, n, code, call.stream))
        call.finish()
    return out


def xnor_gemm_f32(
    a_words: Any,
    b_words: Any,
    k: int,
    *,
    scale: Any = None,
    bias: Any = None,
    algo: str = "auto",
) -> Any:
    """``C[m, n] = float32(dot) * scale[m] + bias[m]`` (each step rounded, no FMA), float32."""
    k = _check_gemm(a_words, b_words, k)
    code = _algo_code(algo)
    m, words = a_words.shape
    n = b_words.shape[0]
    _check_vector("scale", scale, m)
    _check_vector("bias", bias, m)
    with _Call([a_words, b_words, scale, bias]) as call:
        ap, bp = call.ptr(a_words), call.ptr(b_words)
        sp, cp = call.ptr(scale), call.ptr(bias)
        out, op = call.output((m, n), np.float32)
        _check(
            call.lib.binmx_cuda_xnor_gemm_f32(
                ap, bp, m, n, words, k, sp, cp, op, n, code, call.stream
            )
        )
        call.finish()
    return out


def fully_connected(
    x: Any, w_packed: Any, *, alpha: Any = None, bias: Any = None, algo: str = "auto"
) -> Any:
    """Binary fully connected layer: ``out[b, h] = (sgn x[b] . sgn W[h]) * alpha[h] + bias[h]``.

    ``x``: float32 ``(batch, D)``; ``w_packed``: int64 ``(num_hidden, ceil(D / 64))``;
    ``alpha``, ``bias``: float32 ``(num_hidden,)`` or None. Output float32 ``(batch, num_hidden)``.
    """
    _check_array("x", x, (np.float32,), 2)
    _check_array("w_packed", w_packed, (np.int64, np.uint64), 2)
    batch, d = x.shape
    hidden, words = w_packed.shape
    if words != (d + 63) // 64:
        raise ValueError(
            f"Expected `w_packed` to have ceil(D/64) = {(d + 63) // 64} words per row for "
            f"D = {d}, got {words}"
        )
    _check_vector("alpha", alpha, hidden)
    _check_vector("bias", bias, hidden)
    code = _algo_code(algo)
    with _Call([x, w_packed, alpha, bias]) as call:
        xp, wp = call.ptr(x), call.ptr(w_packed)
        ap, bp = call.ptr(alpha), call.ptr(bias)
        out, op = call.output((batch, hidden), np.float32)
        need = call.lib.binmx_cuda_fully_connected_workspace(batch, d)
        ws = call.scratch(need)
        _check(
            call.lib.binmx_cuda_fully_connected(
                xp, batch, d, wp, hidden, ap, bp, op, ws, need, code, call.stream
            )
        )
        call.finish()
    return out


def _conv_params(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: object,
    pad: object,
    dilate: object,
    num_group: object,
    pad_value: object,
) -> Conv2dParams:
    n, c, h, w = x_shape
    f, kh, kw, cw = w_shape
    groups = _check_int("num_group", num_group, 1)
    if c % groups or f % groups:
        raise ValueError(
            f"Expected channels ({c}) and num_filter ({f}) divisible by `num_group` ({groups})"
        )
    if cw != (c // groups + 63) // 64:
        raise ValueError(
            f"Expected `w_packed` shape (num_filter, kh, kw, ceil(C/num_group/64) = "
            f"{(c // groups + 63) // 64}), got {tuple(w_shape)}"
        )
    return _geometry((n, c, h, w, f, kh, kw), groups, stride, pad, dilate, pad_value)


def _geometry(
    dims: tuple[int, ...], groups: int, stride: object, pad: object, dilate: object,
    pad_value: object,
) -> Conv2dParams:  # fmt: skip
    """Conv2dParams from (N, C, H, W, F, kh, kw) and the checked strides, pads and pad value."""
    if isinstance(pad_value, bool) or pad_value not in (0, 1, -1):
        raise ValueError(f"Expected `pad_value` to be 0, 1 or -1, got {pad_value!r}")
    sh, sw = _pair("stride", stride, 1)
    ph, pw = _pair("pad", pad, 0)
    dh, dw = _pair("dilate", dilate, 1)
    return Conv2dParams(*dims, sh, sw, ph, pw, dh, dw, groups, int(pad_value))


def conv2d_out_shape(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    stride: object = 1,
    pad: object = 0,
    dilate: object = 1,
    num_group: int = 1,
    pad_value: int = 0,
) -> tuple[int, int, int, int]:
    """Output shape (N, F, OH, OW) of ``binary_conv2d`` (checks the geometry; no device needed
    beyond a loadable library)."""
    params = _conv_params(tuple(x_shape), tuple(w_shape), stride, pad, dilate, num_group, pad_value)
    lib = _load()
    if lib is None:
        raise CudaUnavailableError(f"binmx.cuda cannot run: {_lib_error}")
    oh, ow = _out_hw(lib, params)
    return int(params.batch), int(params.num_filter), oh, ow


def _out_hw(lib: ctypes.CDLL, params: Conv2dParams) -> tuple[int, int]:
    """(OH, OW) of a checked conv geometry, from the library (which validates it again)."""
    oh, ow = ctypes.c_int64(), ctypes.c_int64()
    _check(
        lib.binmx_cuda_conv2d_out_shape(ctypes.byref(params), ctypes.byref(oh), ctypes.byref(ow))
    )
    return oh.value, ow.value


def binary_conv2d(
    x: Any,
    w_packed: Any,
    *,
    stride: object = 1,
    pad: object = 0,
    dilate: object = 1,
    num_group: int = 1,
    pad_value: int = 0,
    alpha: Any = None,
    bias: Any = None,
    algo: str = "auto",
) -> Any:
    """``Convolution(sgn x, sgn W) * alpha[f] + bias[f]`` on float32 NCHW ``x``.

    ``w_packed``: int64 ``(num_filter, kh, kw, ceil(C/num_group/64))`` (``pack_weight``).
    ``pad_value`` 0 is ordinary zero padding (exact, through a border correction); +1 / -1 pad
    with that value. ``alpha``, ``bias``: float32 ``(num_filter,)`` or None. Output float32
    ``(N, num_filter, OH, OW)``; bit-identical to the CPU operator's forward.
    """
    _check_array("x", x, (np.float32,), 4)
    _check_array("w_packed", w_packed, (np.int64, np.uint64), 4)
    params = _conv_params(x.shape, w_packed.shape, stride, pad, dilate, num_group, pad_value)
    f = w_packed.shape[0]
    _check_vector("alpha", alpha, f)
    _check_vector("bias", bias, f)
    code = _algo_code(algo)
    with _Call([x, w_packed, alpha, bias]) as call:
        oh, ow = _out_hw(call.lib, params)
        xp, wp = call.ptr(x), call.ptr(w_packed)
        ap, bp = call.ptr(alpha), call.ptr(bias)
        out, op = call.output((x.shape[0], f, oh, ow), np.float32)
        need = call.lib.binmx_cuda_binary_conv2d_workspace(ctypes.byref(params))
        ws = call.scratch(need)
        _check(
            call.lib.binmx_cuda_binary_conv2d(
                ctypes.byref(params), xp, wp, ap, bp, op, ws, need, code, call.stream
            )
        )
        call.finish()
    return out


def binary_conv2d_packed(
    x_packed: Any,
    w_packed: Any,
    *,
    channels: int,
    stride: object = 1,
    pad: object = 0,
    dilate: object = 1,
    num_group: int = 1,
    pad_value: int = 0,
    alpha: Any = None,
    bias: Any = None,
    algo: str = "auto",
    workspace: bool = True,
) -> Any:
    """``binary_conv2d`` of an input already packed by ``pack_nchw`` (int64
    ``(N, H, W, num_group, ceil(channels/num_group/64))``); ``channels`` is the true channel
    count C. ``workspace=False`` lets the library allocate its scratch stream-ordered
    (``binmx_cuda_binary_conv2d_packed``) instead of taking it from the caller
    (``binmx_cuda_binary_conv2d_packed_ws``). Same result, bit for bit, as ``binary_conv2d``.
    """
    _check_array("x_packed", x_packed, (np.int64, np.uint64), 5)
    _check_array("w_packed", w_packed, (np.int64, np.uint64), 4)
    c = _check_int("channels", channels, 1)
    n, h, w, groups, cw = x_packed.shape
    params = _conv_params((n, c, h, w), w_packed.shape, stride, pad, dilate, num_group, pad_value)
    if groups != params.num_group or cw != (c // groups + 63) // 64:
        raise ValueError(
            f"Expected `x_packed` shape (N, H, W, num_group = {params.num_group}, "
            f"ceil(C/num_group/64) = {(c // params.num_group + 63) // 64}), got "
            f"{tuple(x_packed.shape)}"
        )
    f = w_packed.shape[0]
    _check_vector("alpha", alpha, f)
    _check_vector("bias", bias, f)
    code = _algo_code(algo)
    with _Call([x_packed, w_packed, alpha, bias]) as call:
        oh, ow = _out_hw(call.lib, params)
        xp, wp = call.ptr(x_packed), call.ptr(w_packed)
        ap, bp = call.ptr(alpha), call.ptr(bias)
        out, op = call.output((n, f, oh, ow), np.float32)
        if workspace:
            need = call.lib.binmx_cuda_binary_conv2d_packed_workspace(ctypes.byref(params))
            ws = call.scratch(need)
            rc = call.lib.binmx_cuda_binary_conv2d_packed_ws(
                ctypes.byref(params), xp, wp, ap, bp, op, ws, need, code, call.stream
            )
        else:
            rc = call.lib.binmx_cuda_binary_conv2d_packed(
                ctypes.byref(params), xp, wp, ap, bp, op, code, call.stream
            )
        _check(rc)
        call.finish()
    return out


# ---- API version 2: the pieces of the MXNet "gpu" operators (train.cu) -----------------------
# Quantisers, STE and gradient formulas are those of binmx.reference (docs/design.md §3). Exact:
# quantize_act, quantize_weight(bits 1 / 32), mean_abs_rows, affine_sign, ste_mask, the affine
# packers, unpack_weight, scale_rows. quantize_weight (k-bit) may differ where CUDA's double tanh
# differs from the host's by an ulp. Float products (float_conv2d*, float_dense*) and the
# reductions (bias_grad, finish_weight_grad) sum in another order than the CPU.

_QUANT = {"none": 0, "sign": 1}


def _quant_code(quant: str) -> int:
    if quant not in _QUANT:
        raise ValueError(f"Expected `quant` to be 'none' or 'sign', got {quant!r}")
    return _QUANT[quant]


def _check_bits(bits: object) -> int:
    b = _check_int("bits", bits, 1)
    if b > 32:
        raise ValueError(f"Expected `bits` in [1, 32], got {b}")
    return b


def _check_same_shape(name: str, arr: Any, shape: tuple[int, ...]) -> None:
    _check_array(name, arr, (np.float32,), None)
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"Expected `{name}` of shape {tuple(shape)}, got {tuple(arr.shape)}")


def mean_abs_rows(w: Any) -> Any:
    """``alpha[f] = mean |w[f]|`` over all axes but the first (float32; sums in float64 in the
    CPU operator's order, so bit-identical to it and to ``reference.scaling_alpha`` up to the
    summation order NumPy uses)."""
    _check_array("w", w, (np.float32,), None)
    if w.ndim < 2 or w.shape[0] == 0 or w.size == 0:
        raise ValueError(f"Expected `w` of rank >= 2 with rows of size >= 1, got {w.shape}")
    rows = w.shape[0]
    size = w.size // rows
    with _Call([w]) as call:
        wp = call.ptr(w)
        out, op = call.output((rows,), np.float32)
        _check(call.lib.binmx_cuda_mean_abs_rows(wp, rows, size, op, call.stream))
        call.finish()
    return out


def quantize_act(x: Any, bits: int) -> Any:
    """``Qa(x)``: bits 1 sgn, 2..31 DoReFa ``q(clip(x, 0, 1))``, 32 identity (float32)."""
    _check_array("x", x, (np.float32,), None)
    bits = _check_bits(bits)
    with _Call([x]) as call:
        xp = call.ptr(x)
        out, op = call.output(tuple(x.shape), np.float32)
        _check(call.lib.binmx_cuda_quantize_act(xp, x.size, bits, op, call.stream))
        call.finish()
    return out


def quantize_weight(w: Any, bits: int) -> Any:
    """``Qw(w)``: bits 1 sgn, 2..31 DoReFa ``2 q(tanh w / (2 max|tanh w|) + 1/2) - 1``,
    32 identity."""
    _check_array("w", w, (np.float32,), None)
    bits = _check_bits(bits)
    with _Call([w]) as call:
        wp = call.ptr(w)
        out, op = call.output(tuple(w.shape), np.float32)
        need = call.lib.binmx_cuda_quantize_weight_workspace()
        ws = call.scratch(need)
        _check(call.lib.binmx_cuda_quantize_weight(wp, w.size, bits, op, ws, need, call.stream))
        call.finish()
    return out


def _affine_dims(x: Any, scale: Any, shift: Any, axis: int) -> tuple[int, int]:
    _check_array("x", x, (np.float32,), None)
    if not isinstance(axis, int) or not 0 <= axis < x.ndim:
        raise ValueError(f"Expected `axis` in [0, {x.ndim}), got {axis!r}")
    channels = x.shape[axis]
    _check_vector("scale", scale, channels)
    _check_vector("shift", shift, channels)
    if scale is None or shift is None:
        raise ValueError("Expected `scale` and `shift` arrays, got None")
    return channels, int(np.prod(x.shape[axis + 1 :], dtype=np.int64))


def affine_sign(x: Any, scale: Any, shift: Any, *, axis: int = 1) -> Any:
    """``sgn(x * scale + shift)`` as +-1 float32 (product and sum rounded separately), ``scale``
    and ``shift`` indexed along ``axis`` (``reference.input_affine`` then ``reference.sgn``)."""
    channels, inner = _affine_dims(x, scale, shift, axis)
    with _Call([x, scale, shift]) as call:
        xp, sp, tp = call.ptr(x), call.ptr(scale), call.ptr(shift)
        out, op = call.output(tuple(x.shape), np.float32)
        _check(
            call.lib.binmx_cuda_affine_sign(
                xp, x.size, channels, max(inner, 1), sp, tp, op, call.stream
            )
        )
        call.finish()
    return out


def ste_mask(x: Any, dy: Any, grad_cancel: float = 1.0) -> Any:
    """``dy * 1[|x| <= grad_cancel]`` (the straight-through estimator of the quantisers)."""
    _check_array("x", x, (np.float32,), None)
    _check_same_shape("dy", dy, tuple(x.shape))
    with _Call([x, dy]) as call:
        xp, dp = call.ptr(x), call.ptr(dy)
        out, op = call.output(tuple(x.shape), np.float32)
        _check(call.lib.binmx_cuda_ste_mask(xp, dp, x.size, float(grad_cancel), op, call.stream))
        call.finish()
    return out


def pack_bits_affine(x: Any, scale: Any, shift: Any) -> Any:
    """``pack_bits(x * scale + shift)`` for float32 ``x[M, K]``, ``scale``/``shift`` ``(K,)``."""
    _check_array("x", x, (np.float32,), 2)
    rows, k = x.shape
    _affine_dims(x, scale, shift, 1)
    with _Call([x, scale, shift]) as call:
        xp, sp, tp = call.ptr(x), call.ptr(scale), call.ptr(shift)
        out, op = call.output((rows, (k + 63) // 64), np.int64)
        _check(call.lib.binmx_cuda_pack_rows_affine(xp, rows, k, k, sp, tp, op, call.stream))
        call.finish()
    return out


def pack_nchw_affine(x: Any, scale: Any, shift: Any, *, num_group: int = 1) -> Any:
    """``pack_nchw(x * scale[c] + shift[c])`` (per channel ``c``), int64 ``(N, H, W, G, cw)``."""
    _check_array("x", x, (np.float32,), 4)
    groups = _check_int("num_group", num_group, 1)
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"Expected channels ({c}) divisible by `num_group` ({groups})")
    _affine_dims(x, scale, shift, 1)
    cw = (c // groups + 63) // 64
    with _Call([x, scale, shift]) as call:
        xp, sp, tp = call.ptr(x), call.ptr(scale), call.ptr(shift)
        out, op = call.output((n, h, w, groups, cw), np.int64)
        _check(
            call.lib.binmx_cuda_pack_nchw_affine(xp, n, c, h, w, groups, sp, tp, op, call.stream)
        )
        call.finish()
    return out


def unpack_weight(w_packed: Any, depth: int) -> Any:
    """Packed weight -> +-1 float32: ``(F, kh, kw, cw)`` -> ``(F, depth, kh, kw)`` (``depth`` =
    C/num_group), or a dense ``(H, words)`` -> ``(H, depth)``."""
    _check_array("w_packed", w_packed, (np.int64, np.uint64), None)
    depth = _check_int("depth", depth, 1)
    if w_packed.ndim == 2:
        f, words = w_packed.shape
        kh = kw = 1
        shape: tuple[int, ...] = (f, depth)
    elif w_packed.ndim == 4:
        f, kh, kw, words = w_packed.shape
        shape = (f, depth, kh, kw)
    else:
        raise ValueError(f"Expected `w_packed` of rank 2 or 4, got shape {w_packed.shape}")
    if words != (depth + 63) // 64:
        raise ValueError(f"Expected ceil(depth/64) = {(depth + 63) // 64} words, got {words}")
    with _Call([w_packed]) as call:
        wp = call.ptr(w_packed)
        out, op = call.output(shape, np.float32)
        _check(call.lib.binmx_cuda_unpack_conv_weight(wp, f, depth, kh, kw, op, call.stream))
        call.finish()
    return out


def fully_connected_packed(
    x_words: Any, d: int, w_packed: Any, *, alpha: Any = None, bias: Any = None,
    algo: str = "auto",
) -> Any:  # fmt: skip
    """``fully_connected`` from an input already packed (``pack_bits`` / ``pack_bits_affine``)."""
    _check_array("x_words", x_words, (np.int64, np.uint64), 2)
    _check_array("w_packed", w_packed, (np.int64, np.uint64), 2)
    d = _check_int("d", d, 0)
    if x_words.shape[1] != (d + 63) // 64 or w_packed.shape[1] != x_words.shape[1]:
        raise ValueError(
            f"Expected ceil(d/64) = {(d + 63) // 64} words per row, got {x_words.shape[1]} "
            f"and {w_packed.shape[1]}"
        )
    batch, hidden = x_words.shape[0], w_packed.shape[0]
    _check_vector("alpha", alpha, hidden)
    _check_vector("bias", bias, hidden)
    code = _algo_code(algo)
    with _Call([x_words, w_packed, alpha, bias]) as call:
        xp, wp = call.ptr(x_words), call.ptr(w_packed)
        ap, bp = call.ptr(alpha), call.ptr(bias)
        out, op = call.output((batch, hidden), np.float32)
        _check(
            call.lib.binmx_cuda_fully_connected_packed(
                xp, batch, d, wp, hidden, ap, bp, op, code, call.stream
            )
        )
        call.finish()
    return out


def scale_rows(w: Any, alpha: Any) -> Any:
    """``w[f] * alpha[f]`` (float32, one rounding)."""
    _check_array("w", w, (np.float32,), None)
    if w.ndim < 1:
        raise ValueError("Expected `w` of rank >= 1")
    _check_vector("alpha", alpha, w.shape[0])
    rows = w.shape[0]
    size = w.size // rows if rows else 0
    with _Call([w, alpha]) as call:
        wp, ap = call.ptr(w), call.ptr(alpha)
        out, op = call.output(tuple(w.shape), np.float32)
        _check(call.lib.binmx_cuda_scale_rows(wp, ap, rows, size, op, call.stream))
        call.finish()
    return out


def bias_grad(dy: Any) -> Any:
    """``dy`` summed over every axis but axis 1 (NCHW or rows x hidden), float32 ``(C,)``."""
    _check_array("dy", dy, (np.float32,), None)
    if dy.ndim < 2:
        raise ValueError(f"Expected `dy` of rank >= 2, got shape {dy.shape}")
    batch, channels = dy.shape[0], dy.shape[1]
    inner = int(np.prod(dy.shape[2:], dtype=np.int64))
    with _Call([dy]) as call:
        dp = call.ptr(dy)
        out, op = call.output((channels,), np.float32)
        _check(call.lib.binmx_cuda_bias_grad(dp, batch, channels, inner, op, call.stream))
        call.finish()
    return out


def finish_weight_grad(g: Any, w: Any, wq: Any, alpha: Any) -> tuple[Any, Any]:
    """``(dW, dalpha)`` from ``G = dloss/dQw(W)``: ``dalpha_f = sum_i G_fi wq_fi``,
    ``dW = alpha_f G + sgn(W) dalpha_f / n`` (the scaling-factor chain rule of the operators)."""
    _check_array("g", g, (np.float32,), None)
    for name, arr in (("w", w), ("wq", wq)):
        _check_same_shape(name, arr, tuple(g.shape))
    rows = g.shape[0]
    size = g.size // rows
    _check_vector("alpha", alpha, rows)
    with _Call([g, w, wq, alpha]) as call:
        gp, wp, qp, ap = call.ptr(g), call.ptr(w), call.ptr(wq), call.ptr(alpha)
        dw, dwp = call.output(tuple(g.shape), np.float32)
        da, dap = call.output((rows,), np.float32)
        _check(
            call.lib.binmx_cuda_finish_weight_grad(
                gp, wp, qp, ap, rows, size, dwp, dap, call.stream
            )
        )
        call.finish()
    return dw, da


def _float_conv_params(x: Any, w: Any, stride, pad, dilate, num_group, pad_value) -> Conv2dParams:
    _check_array("x", x, (np.float32,), 4)
    _check_array("w", w, (np.float32,), 4)
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    groups = _check_int("num_group", num_group, 1)
    if c % groups or f % groups or c // groups != cg:
        raise ValueError(
            f"Expected `w` of shape (F, C/num_group, kh, kw) with F divisible by num_group; "
            f"got x {x.shape}, w {w.shape}, num_group {groups}"
        )
    return _geometry((n, c, h, wd, f, kh, kw), groups, stride, pad, dilate, pad_value)


def float_conv2d(
    x: Any, w: Any, *, quant: str = "none", stride: object = 1, pad: object = 0,
    dilate: object = 1, num_group: int = 1, pad_value: int = 0, alpha: Any = None,
    bias: Any = None,
) -> Any:  # fmt: skip
    """``Convolution(Q(x), w) * alpha[f] + bias[f]`` in float32 (Q = identity or sgn), padding
    with ``pad_value``; im2col + the library's tiled GEMM."""
    params = _float_conv_params(x, w, stride, pad, dilate, num_group, pad_value)
    f = w.shape[0]
    _check_vector("alpha", alpha, f)
    _check_vector("bias", bias, f)
    q = _quant_code(quant)
    with _Call([x, w, alpha, bias]) as call:
        oh, ow = _out_hw(call.lib, params)
        xp, wp, ap, bp = call.ptr(x), call.ptr(w), call.ptr(alpha), call.ptr(bias)
        out, op = call.output((x.shape[0], f, oh, ow), np.float32)
        need = call.lib.binmx_cuda_float_conv2d_workspace(ctypes.byref(params))
        ws = call.scratch(need)
        _check(
            call.lib.binmx_cuda_float_conv2d_forward(
                ctypes.byref(params), xp, q, wp, ap, bp, op, ws, need, call.stream
            )
        )
        call.finish()
    return out


def float_conv2d_backward(
    x: Any, w: Any, dy: Any, *, quant: str = "none", x_mask: Any = None,
    grad_cancel: float = 1.0, stride: object = 1, pad: object = 0, dilate: object = 1,
    num_group: int = 1, pad_value: int = 0,
) -> tuple[Any, Any]:  # fmt: skip
    """``(dx, dw)`` of ``float_conv2d`` (no alpha/bias) for ``dy``; ``dx`` masked by
    ``1[|x_mask| <= grad_cancel]`` when ``x_mask`` is given."""
    params = _float_conv_params(x, w, stride, pad, dilate, num_group, pad_value)
    q = _quant_code(quant)
    if x_mask is not None:
        _check_same_shape("x_mask", x_mask, tuple(x.shape))
    with _Call([x, w, dy, x_mask]) as call:
        oh, ow = _out_hw(call.lib, params)
        _check_same_shape("dy", dy, (x.shape[0], w.shape[0], oh, ow))
        xp, wp, dp, mp = call.ptr(x), call.ptr(w), call.ptr(dy), call.ptr(x_mask)
        dx, dxp = call.output(tuple(x.shape), np.float32)
        dw, dwp = call.output(tuple(w.shape), np.float32)
        need = call.lib.binmx_cuda_float_conv2d_workspace(ctypes.byref(params))
        ws = call.scratch(need)
        _check(
            call.lib.binmx_cuda_float_conv2d_backward(
                ctypes.byref(params),
                xp,
                q,
                wp,
                dp,
                mp,
                float(grad_cancel),
                dxp,
                dwp,
                ws,
                need,
                call.stream,
            )
        )
        call.finish()
    return dx, dw


def float_dense(x: Any, w: Any, *, quant: str = "none", alpha: Any = None, bias: Any = None) -> Any:
    """``Q(x) . w^T * alpha[h] + bias[h]`` for ``x (rows, D)``, ``w (H, D)`` (float32)."""
    _check_array("x", x, (np.float32,), 2)
    _check_array("w", w, (np.float32,), 2)
    rows, depth = x.shape
    hidden = w.shape[0]
    if w.shape[1] != depth:
        raise ValueError(f"Expected `w` of shape (H, {depth}), got {w.shape}")
    _check_vector("alpha", alpha, hidden)
    _check_vector("bias", bias, hidden)
    q = _quant_code(quant)
    with _Call([x, w, alpha, bias]) as call:
        xp, wp, ap, bp = call.ptr(x), call.ptr(w), call.ptr(alpha), call.ptr(bias)
        out, op = call.output((rows, hidden), np.float32)
        _check(
            call.lib.binmx_cuda_float_dense_forward(
                xp, q, wp, ap, bp, op, rows, depth, hidden, call.stream
            )
        )
        call.finish()
    return out


def float_dense_backward(
    x: Any, w: Any, dy: Any, *, quant: str = "none", x_mask: Any = None,
    grad_cancel: float = 1.0,
) -> tuple[Any, Any]:  # fmt: skip
    """``(dx, dw) = (dy . w * 1[|x_mask| <= grad_cancel], dy^T . Q(x))``."""
    _check_array("x", x, (np.float32,), 2)
    _check_array("w", w, (np.float32,), 2)
    rows, depth = x.shape
    hidden = w.shape[0]
    _check_same_shape("dy", dy, (rows, hidden))
    if x_mask is not None:
        _check_same_shape("x_mask", x_mask, (rows, depth))
    q = _quant_code(quant)
    with _Call([x, w, dy, x_mask]) as call:
        xp, wp, dp, mp = call.ptr(x), call.ptr(w), call.ptr(dy), call.ptr(x_mask)
        dx, dxp = call.output((rows, depth), np.float32)
        dw, dwp = call.output((hidden, depth), np.float32)
        _check(
            call.lib.binmx_cuda_float_dense_backward(
                xp,
                q,
                wp,
                dp,
                mp,
                float(grad_cancel),
                dxp,
                dwp,
                rows,
                depth,
                hidden,
                call.stream,
            )
        )
        call.finish()
    return dx, dw
