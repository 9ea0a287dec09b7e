"""binmx_runtime: run binmx's converted binary networks without MXNet.

A model that ``model_converter`` wrote (``PREFIX-symbol.json`` + ``PREFIX-NNNN.params``, folded
or not) is loaded for one fixed input shape and run by the binmx runtime, a C++ engine
(``libbinmx_runtime.so``, called through its C API with :mod:`ctypes`; the GIL is released
while it runs). Binary layers are integer-exact xnor + popcount kernels (AVX-512 / AVX2 /
NEON / portable, chosen at run time, capped by ``BINMX_ISA``); float layers run on the
runtime's own kernels. This module needs NumPy only and never imports MXNet.

>>> import binmx_runtime
>>> model = binmx_runtime.load("binarized_lenet", 5, input_shape=(1, 1, 28, 28))
>>> scores = model.run(x)            # float32 NCHW in, the first output out
>>> model.summary()                  # per-layer table with measured latency
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Sequence

import numpy as np

__all__ = ["Model", "RuntimeLoadError", "RuntimeRunError", "load", "library_path", "version"]
__version__ = "0.1.0"


class RuntimeLoadError(RuntimeError):
    """A model cannot be loaded; the message says which file, node, operator or attribute."""


class RuntimeRunError(RuntimeError):
    """A run failed inside the engine (the message says why)."""


_LIB: ctypes.CDLL | None = None
_LIB_LOCK = threading.Lock()
_I64P = ctypes.POINTER(ctypes.c_int64)
_F32P = ctypes.POINTER(ctypes.c_float)


def library_path() -> str:
    """The engine library: ``$BINMX_RUNTIME_LIBRARY`` if set, else the one in this package."""
    env = os.environ.get("BINMX_RUNTIME_LIBRARY")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "libbinmx_runtime.so")


def _lib() -> ctypes.CDLL:
    global _LIB
    with _LIB_LOCK:
        if _LIB is None:
            path = library_path()
            if not os.path.exists(path):
                raise ImportError(
                    f"binmx runtime library not found at {path!r}; reinstall "
                    "binmx-runtime (pip install ./runtime)"
                )
            lib = ctypes.CDLL(path)
            sig = {
                "binmx_last_error": (ctypes.c_char_p, []),
                "binmx_runtime_version": (ctypes.c_char_p, []),
                "binmx_model_load": (
                    ctypes.c_int,
                    [
                        ctypes.c_char_p,
                        ctypes.c_int,
                        _I64P,
                        ctypes.c_int,
                        ctypes.c_int,
                        ctypes.POINTER(ctypes.c_void_p),
                    ],
                ),
                "binmx_model_free": (None, [ctypes.c_void_p]),
                "binmx_model_input_shape": (ctypes.c_int, [ctypes.c_void_p, _I64P, ctypes.c_int]),
                "binmx_model_output_shape": (ctypes.c_int, [ctypes.c_void_p, _I64P, ctypes.c_int]),
                "binmx_model_input_size": (ctypes.c_int64, [ctypes.c_void_p]),
                "binmx_model_output_size": (ctypes.c_int64, [ctypes.c_void_p]),
                "binmx_model_threads": (ctypes.c_int, [ctypes.c_void_p]),
                "binmx_model_isa": (ctypes.c_char_p, [ctypes.c_void_p]),
                "binmx_model_arena_bytes": (ctypes.c_int64, [ctypes.c_void_p]),
                "binmx_model_weight_bytes": (ctypes.c_int64, [ctypes.c_void_p]),
                # Addresses as plain integers (numpy's __array_interface__): building a ctypes
                # pointer object per call costs microseconds, a LeNet run about 30.
                "binmx_model_run": (
                    ctypes.c_int,
                    [
                        ctypes.c_void_p,
                        ctypes.c_void_p,
                        ctypes.c_int64,
                        ctypes.c_void_p,
                        ctypes.c_int64,
                    ],
                ),
                "binmx_model_num_layers": (ctypes.c_int, [ctypes.c_void_p]),
                "binmx_model_layer": (
                    ctypes.c_int,
                    [
                        ctypes.c_void_p,
                        ctypes.c_int,
                        ctypes.POINTER(ctypes.c_char_p),
                        ctypes.POINTER(ctypes.c_char_p),
                        _I64P,
                        ctypes.c_int,
                        ctypes.POINTER(ctypes.c_int),
                        _I64P,
                        _I64P,
                    ],
                ),
                "binmx_model_profile": (
                    ctypes.c_int,
                    [
                        ctypes.c_void_p,
                        _F32P,
                        ctypes.c_int64,
                        ctypes.c_int,
                        ctypes.POINTER(ctypes.c_double),
                        ctypes.c_int,
                    ],
                ),
            }
            for name, (restype, argtypes) in sig.items():
                fn = getattr(lib, name)
                fn.restype = restype
                fn.argtypes = argtypes
            _LIB = lib
        return _LIB


def _error() -> str:
    return _lib().binmx_last_error().decode("utf-8", "replace")


def version() -> str:
    """The engine's version string."""
    return _lib().binmx_runtime_version().decode()


def _shape(get, handle) -> tuple[int, ...]:
    buf = (ctypes.c_int64 * 16)()
    rank = get(handle, buf, 16)
    return tuple(int(buf[i]) for i in range(rank))


class Model:
    """A model loaded for one input shape. ``run`` may be called from several threads at once."""

    def __init__(self, handle: ctypes.c_void_p, prefix: str, epoch: int) -> None:
        lib = _lib()
        self._handle = handle
        self.prefix = prefix
        self.epoch = epoch
        self.input_shape = _shape(lib.binmx_model_input_shape, handle)
        self.output_shape = _shape(lib.binmx_model_output_shape, handle)
        self.threads = int(lib.binmx_model_threads(handle))
        self.isa = lib.binmx_model_isa(handle).decode()
        self.arena_bytes = int(lib.binmx_model_arena_bytes(handle))
        self.weight_bytes = int(lib.binmx_model_weight_bytes(handle))

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle and _LIB is not None:
            _LIB.binmx_model_free(handle)
            self._handle = None

    def __repr__(self) -> str:
        return (
            f"binmx_runtime.Model({self.prefix!r}, {self.epoch}, input_shape="
            f"{self.input_shape}, output_shape={self.output_shape}, threads={self.threads}, "
            f"isa={self.isa!r})"
        )

    def _input(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"Expected `x` to be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise TypeError(f"Expected `x` to have dtype float32, got {x.dtype}")
        if tuple(x.shape) != self.input_shape:
            raise ValueError(
                f"Expected `x` of shape {self.input_shape} (the shape the model was "
                f"loaded for), got {tuple(x.shape)}"
            )
        return np.ascontiguousarray(x)

    def run(self, x: np.ndarray) -> np.ndarray:
        """The model's first output for the float32 NCHW input ``x`` (a new array)."""
        x = self._input(x)
        y = np.empty(self.output_shape, np.float32)
        rc = _lib().binmx_model_run(
            self._handle,
            x.__array_interface__["data"][0],
            x.size,
            y.__array_interface__["data"][0],
            y.size,
        )
        if rc != 0:
            raise RuntimeRunError(_error())
        return y

    def layers(self) -> list[dict]:
        """The plan's layers (after fusion): name, op, output_shape, binary_macs, float_macs."""
        lib = _lib()
        out = []
        for i in range(lib.binmx_model_num_layers(self._handle)):
            name, op = ctypes.c_char_p(), ctypes.c_char_p()
            shape = (ctypes.c_int64 * 16)()
            rank = ctypes.c_int()
            bm, fm = ctypes.c_int64(), ctypes.c_int64()
            if (
                lib.binmx_model_layer(
                    self._handle,
                    i,
                    ctypes.byref(name),
                    ctypes.byref(op),
                    shape,
                    16,
                    ctypes.byref(rank),
                    ctypes.byref(bm),
                    ctypes.byref(fm),
                )
                != 0
            ):
                raise RuntimeRunError(_error())
            out.append(
                {
                    "name": name.value.decode(),
                    "op": op.value.decode(),
                    "output_shape": tuple(int(shape[k]) for k in range(rank.value)),
                    "binary_macs": int(bm.value),
                    "float_macs": int(fm.value),
                }
            )
        return out

    def profile(self, x: np.ndarray, repeat: int = 20) -> list[dict]:
        """Per-layer median latency over ``repeat`` runs (after one untimed run).

        Each dict has ``name``, ``op``, ``output_shape``, ``binary_macs``, ``float_macs`` and
        ``ms`` (the median).
        """
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"Expected `repeat` to be a positive int, got {repeat!r}")
        x = self._input(x)
        layers = self.layers()
        ms = (ctypes.c_double * len(layers))()
        rc = _lib().binmx_model_profile(
            self._handle, x.ctypes.data_as(_F32P), x.size, repeat, ms, len(layers)
        )
        if rc != 0:
            raise RuntimeRunError(_error())
        for i, layer in enumerate(layers):
            layer["ms"] = float(ms[i])
        return layers

    def summary(self, x: np.ndarray | None = None, repeat: int = 20) -> str:
        """Print (and return) the per-layer table of :meth:`profile`.

        Without ``x`` a standard-normal input (seed 0) is used.
        """
        if x is None:
            x = np.random.default_rng(0).standard_normal(self.input_shape).astype(np.float32)
        rows = self.profile(x, repeat=repeat)
        total = sum(r["ms"] for r in rows) or 1.0
        head = (
            f"{'layer':<36} {'op':<16} {'output':<20} {'binary MACs':>14} {'float MACs':>14} "
            f"{'ms':>9} {'share':>7} {'Gop/s':>8}"
        )
        lines = [head, "-" * len(head)]
        for r in rows:
            macs = r["binary_macs"] + r["float_macs"]
            gops = 2.0 * macs / (r["ms"] * 1e6) if r["ms"] > 0 else 0.0
            lines.append(
                f"{r['name'][:36]:<36} {r['op'][:16]:<16} {r['output_shape']!s:<20} "
                f"{r['binary_macs']:>14,} {r['float_macs']:>14,} {r['ms']:>9.4f} "
                f"{100.0 * r['ms'] / total:>6.1f}% {gops:>8.1f}"
            )
        lines.append(
            f"total {sum(r['ms'] for r in rows):.4f} ms (sum of medians), "
            f"{self.threads} thread(s), isa {self.isa}"
        )
        text = "\n".join(lines)
        print(text)
        return text


def load(
    prefix: str | os.PathLike, epoch: int, *, input_shape: Sequence[int], threads: int | None = None
) -> Model:
    """Load ``PREFIX-symbol.json`` and ``PREFIX-%04d.params`` for a fixed input shape.

    Args:
        prefix: path prefix of the converted checkpoint (``runs/mnist/binarized_lenet``).
        epoch: the checkpoint's epoch number.
        input_shape: the input's shape, e.g. ``(1, 3, 224, 224)``.
        threads: worker threads (>= 1); None uses ``OMP_NUM_THREADS`` if set, else all
            hardware threads.

    Raises:
        RuntimeLoadError: a missing, malformed or unsupported model (the message names the
            file, node, operator or attribute).
        ValueError / TypeError: bad arguments.
    """
    prefix = os.fspath(prefix)
    if (
        isinstance(epoch, bool)
        or not isinstance(epoch, (int, np.integer))
        or not 0 <= epoch <= 9999
    ):
        raise ValueError(f"Expected `epoch` to be an int in [0, 9999], got {epoch!r}")
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Expected `input_shape` to be a sequence of ints, got {input_shape!r}"
        ) from exc
    if not 1 <= len(shape) <= 8 or any(d <= 0 for d in shape):
        raise ValueError(f"Expected `input_shape` to be 1 to 8 positive ints, got {input_shape!r}")
    if threads is None:
        nthreads = 0
    else:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
            raise TypeError(f"Expected `threads` to be an int or None, got {threads!r}")
        if threads <= 0:
            raise ValueError(f"Expected `threads` to be >= 1 (or None), got {threads}")
        nthreads = int(threads)
    lib = _lib()
    handle = ctypes.c_void_p()
    arr = (ctypes.c_int64 * len(shape))(*shape)
    rc = lib.binmx_model_load(
        prefix.encode(), int(epoch), arr, len(shape), nthreads, ctypes.byref(handle)
    )
    if rc != 0:
        raise RuntimeLoadError(_error())
    return Model(handle, prefix, int(epoch))
