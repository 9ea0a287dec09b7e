from __future__ import annotations

import numpy as np
from binmx import reference, xnor


def test_pack_and_gemm_match_reference(rng: np.random.Generator) -> None:
    a = rng.standard_normal((5, 130)).astype(np.float32)
    b = rng.standard_normal((7, 130)).astype(np.float32)
    a[0, :3] = [0.0, -0.0, -1.0]
    pa, pb = xnor.pack_bits(a), xnor.pack_bits(b)
    assert np.array_equal(pa, reference.pack_bits(a))
    expected = (reference.sgn(a) @ reference.sgn(b).T).astype(np.int32)
    got = xnor.xnor_gemm(pa, pb, 130)
    assert got.dtype == np.int32
    assert np.array_equal(got, expected)
