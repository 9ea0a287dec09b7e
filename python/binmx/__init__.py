"""binmx: XNOR-Net style binary and k-bit quantized neural networks for Apache MXNet 1.9.1."""

from __future__ import annotations

from binmx import _library, xnor

_library.load()  # registers QActivation / QConvolution / QFullyConnected in mx.nd and mx.sym

from binmx import (  # noqa: E402  (needs the operators loaded)
    gluon,
    models,
    ops,
)
from binmx.converter import ConversionError, convert, convert_checkpoint  # noqa: E402
from binmx.fold import fold  # noqa: E402
from binmx.ops import pack_weight  # noqa: E402
from binmx.summary import summary  # noqa: E402

__all__ = [
    "ConversionError",
    "convert",
    "convert_checkpoint",
    "fold",
    "gluon",
    "models",
    "ops",
    "pack_weight",
    "summary",
    "xnor",
]
__version__ = "0.1.0"
