#!/usr/bin/env python3
"""Thin command-line wrapper over binmx's converter API (same as the `model_converter` script)."""

from __future__ import annotations

import sys

from binmx.converter_cli import main

if __name__ == "__main__":
    sys.exit(main())
