"""binmx: XNOR-Net style binary and k-bit quantized neural networks for Apache MXNet 1.9.1."""

from __future__ import annotations

from binmx import xnor

__all__ = ["xnor"]
__version__ = "0.1.0"
