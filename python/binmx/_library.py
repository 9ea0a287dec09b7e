"""Loads binmx's operator library (``libbinmx_ops.so``) into MXNet, once per process.

This is the only module that calls :func:`mxnet.library.load`. Loading registers the
extension operators ``QActivation``, ``QConvolution`` and ``QFullyConnected``; MXNet then
regenerates ``mx.nd`` / ``mx.sym``, so :mod:`binmx.ops` installs its call-form wrappers
right after every load.
"""

from __future__ import annotations

import os
import threading

import mxnet as mx

__all__ = ["library_path", "load"]

_LOCK = threading.Lock()
_LOADED: str | None = None


def library_path() -> str:
    """Absolute path of the operator library shipped inside the binmx package.

    The environment variable ``BINMX_OPS_LIBRARY`` names another build of it instead (the
    tests load an AddressSanitizer build this way).
    """
    override = os.environ.get("BINMX_OPS_LIBRARY")
    if override:
        return os.path.abspath(override)
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "libbinmx_ops.so")


def load() -> str:
    """Load the operator library (idempotent) and install the wrappers; return its path."""
    global _LOADED
    with _LOCK:
        if _LOADED is None:
            path = library_path()
            if not os.path.exists(path):
                raise ImportError(
                    f"binmx operator library not found at {path!r}; reinstall binmx "
                    "(`make install`)"
                )
            mx.library.load(path, verbose=False)
            _LOADED = path
        from binmx import ops

        ops.install()
        return _LOADED
