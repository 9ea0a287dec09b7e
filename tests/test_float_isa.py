"""The float math's transposes take their ISA from the core's dispatch (src/float/transpose.cc):
BINMX_ISA caps them like every binary kernel, and an unknown value is an error, not ignored."""

from __future__ import annotations

import os

import binmx  # noqa: F401  (loads the operators)
import mxnet as mx
import numpy as np
import pytest


def test_bad_binmx_isa_is_an_error_in_the_float_transposes() -> None:
    x = mx.nd.array(np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5))
    old = os.environ.get("BINMX_ISA")
    os.environ["BINMX_ISA"] = "avx9000"
    try:
        with pytest.raises(mx.base.MXNetError, match="BINMX_ISA"):
            mx.nd.QNHWCToNCHW(x).wait_to_read()
    finally:
        mx.nd.waitall()
        if old is None:
            os.environ.pop("BINMX_ISA", None)
        else:
            os.environ["BINMX_ISA"] = old
    got = mx.nd.QNHWCToNCHW(x).asnumpy()  # and fine again without it
    np.testing.assert_array_equal(got, x.asnumpy().transpose(0, 3, 1, 2))
