"""Bad-input suite of the operators: every call in its own fork()ed child (tests/forked.py).

Each case is either a bad call, which must raise one clear error whose last line names the
cause (the attribute, input or size; never ``std::bad_alloc`` or a bare traceback), or a
valid call at an extreme (a stride past the input, a pad larger than the image, packed
weights with stray tail bits, NaN / +-Inf / -0.0 inputs), whose result must equal MXNet's own
Convolution / FullyConnected on sign()ed data (``==``: the binary layer is integer-exact).
No case may crash (a signal, a sanitizer abort) or hang (past the time limit).

The cases cover the attribute parser (out of range, overflowing 64 bits, wrong type, unknown
names), the geometry (products past 2^40, dilated kernels past any input, sizes past 2^31-1,
through ``mx.nd`` and through ``mx.sym`` shape inference), shapes and dtypes of every input,
and the inference-only features' backward passes.

``python tests/test_bad_input_ops.py`` prints the counts (the figures of docs/reliability.md);
the sanitizer test (tests/test_sanitized_ops.py) runs it the same way under ASan/UBSan.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import binmx
import mxnet as mx
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from forked import Tally, classify, run_forked

TIMEOUT = float(os.environ.get("BINMX_BAD_INPUT_TIMEOUT", "60"))
BIG = 2**62
X_SHAPE = (1, 8, 10, 10)


def _sgn(a: np.ndarray) -> np.ndarray:
    """binmx's sign: -1 for v < 0, else +1 (+0, -0.0 and NaN give +1)."""
    return np.where(a < 0, -1.0, 1.0).astype(np.float32)


def _x(shape: tuple[int, ...] = X_SHAPE, seed: int = 0) -> mx.nd.NDArray:
    return mx.nd.array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _qconv(x: Any = None, w: Any = None, *extra: Any, **attrs: Any) -> Any:
    x = _x() if x is None else x
    w = mx.nd.ones((4, 8, 3, 3)) if w is None else w
    attrs.setdefault("kernel", (3, 3))
    attrs.setdefault("num_filter", 4)
    attrs.setdefault("no_bias", True)
    return mx.nd.QConvolution(x, w, *extra, **attrs).asnumpy()


def _qfc(x: Any = None, w: Any = None, *extra: Any, **attrs: Any) -> Any:
    x = _x((2, 3, 4)) if x is None else x
    w = mx.nd.ones((5, 12)) if w is None else w
    attrs.setdefault("num_hidden", 5)
    attrs.setdefault("no_bias", True)
    return mx.nd.QFullyConnected(x, w, *extra, **attrs).asnumpy()


def _sym_infer(op: str, data_shape: tuple[int, ...], **attrs: Any) -> Any:
    data = mx.sym.var("data")
    s = getattr(mx.sym, op)(data, name="q", **attrs)
    return s.infer_shape(data=data_shape)


def _conv_matches(x: np.ndarray, w: np.ndarray, **attrs: Any) -> bool:
    """QConvolution(x, w) == Convolution(sgn x, sgn w) with the same attributes."""
    attrs.setdefault("num_filter", w.shape[0])
    attrs.setdefault("no_bias", True)
    got = mx.nd.QConvolution(mx.nd.array(x), mx.nd.array(w), **attrs).asnumpy()
    want = mx.nd.Convolution(mx.nd.array(_sgn(x)), mx.nd.array(_sgn(w)), **attrs).asnumpy()
    return got.shape == want.shape and bool(np.array_equal(got, want))


def _packed_tail_bits_conv(c: int) -> bool:
    """Packed weights with every bit past C set give the result of the clean packing."""
    rng = np.random.default_rng(c)
    x = rng.standard_normal((2, c, 6, 6)).astype(np.float32)
    w = rng.standard_normal((5, c, 3, 3)).astype(np.float32)
    packed = np.asarray(binmx.pack_weight(w)).view(np.uint64).copy()
    if c % 64:
        packed[..., -1] |= ~np.uint64((1 << (c % 64)) - 1)
    dirty = mx.nd.array(packed.view(np.int64), dtype=np.int64)
    attrs = dict(kernel=(3, 3), num_filter=5, no_bias=True, pad=(1, 1))
    got = mx.nd.QConvolution(mx.nd.array(x), dirty, binarized_weights_only=True, **attrs).asnumpy()
    want = mx.nd.Convolution(mx.nd.array(_sgn(x)), mx.nd.array(_sgn(w)), **attrs).asnumpy()
    return bool(np.array_equal(got, want))


def _packed_tail_bits_fc(d: int) -> bool:
    rng = np.random.default_rng(d)
    x = rng.standard_normal((3, d)).astype(np.float32)
    w = rng.standard_normal((7, d)).astype(np.float32)
    packed = np.asarray(binmx.pack_weight(w)).view(np.uint64).copy()
    if d % 64:
        packed[..., -1] |= ~np.uint64((1 << (d % 64)) - 1)
    dirty = mx.nd.array(packed.view(np.int64), dtype=np.int64)
    got = mx.nd.QFullyConnected(
        mx.nd.array(x), dirty, num_hidden=7, no_bias=True, binarized_weights_only=True
    ).asnumpy()
    want = mx.nd.FullyConnected(
        mx.nd.array(_sgn(x)), mx.nd.array(_sgn(w)), num_hidden=7, no_bias=True
    ).asnumpy()
    return bool(np.array_equal(got, want))


def _special_values(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    idx = rng.permutation(flat.size)
    for i, v in enumerate((np.nan, np.inf, -np.inf, -0.0, 0.0)):
        flat[idx[i::8][: max(1, flat.size // 10)]] = v
    return x


def _backward(**attrs: Any) -> Any:
    x = _x()
    x.attach_grad()
    n_extra = 2 if attrs.get("input_affine") else 0
    extra = [mx.nd.ones((8,)) for _ in range(n_extra)]
    if attrs.get("residual"):
        extra.append(mx.nd.ones((1, 4, 8, 8)))
    with mx.autograd.record():
        y = mx.nd.QConvolution(
            x,
            mx.nd.ones((4, 8, 3, 3)),
            *extra,
            kernel=(3, 3),
            num_filter=4,
            no_bias=True,
            **attrs,
        )
    y.backward()
    return x.grad.asnumpy()


Case = tuple[str, Callable[[], Any], "tuple[str, ...] | None"]


def _cases() -> list[Case]:
    cases: list[Case] = []

    def bad(name: str, fn: Callable[[], Any], *needles: str) -> None:
        cases.append((name, fn, needles))

    def good(name: str, fn: Callable[[], bool]) -> None:
        cases.append((name, fn, None))

    # ---- QConvolution attributes through mx.nd (parser and geometry) -------------------
    tuple_bad = {
        "kernel": [
            (0, 3),
            (-1, 3),
            (3,),
            (3, 3, 3),
            "abc",
            (2**31, 3),
            (2**58 + 1, 3),
            (2**63 - 1, 1),
            (11, 11),
            (3, 2**40),
        ],
        "stride": [(0, 1), (-1, 1), (1,), (1, 1, 1), "x", (2**63, 1)],
        "dilate": [(0, 1), (-2, 1), (1,), (BIG, 1), (2**40, 1), (1, 2**33), (6, 1)],
        "pad": [
            (-1, 0),
            (2**31, 0),
            (2**30, 2**30),
            (2**20, 2**20),
            (2**63, 0),
            (0, -5),
            (1, 2, 3),
        ],
    }
    for key, values in tuple_bad.items():
        for v in values:
            bad(f"qconv nd {key}={v!r}", lambda k=key, v=v: _qconv(**{k: v}), key)
            if not isinstance(v, str):
                bad(
                    f"qconv sym {key}={v!r}",
                    lambda k=key, v=v: _sym_infer(
                        "QConvolution",
                        X_SHAPE,
                        kernel=(3, 3),
                        num_filter=4,
                        no_bias=True,
                        **{k: v},
                    ),
                    key,
                )
    issue_cases = [
        (
            "issue: kernel 2^58+1 dilate 64",
            dict(kernel=(2**58 + 1, 3), dilate=(64, 1)),
            (64, 8, 1, 3),
            "kernel_h",
        ),
        (
            "issue: dilate 2^62 kernel 3",
            dict(kernel=(3, 3), dilate=(2**62, 1)),
            (64, 8, 3, 3),
            "dilated kernel",
        ),
        ("issue: pad 2^31", dict(kernel=(3, 3), pad=(2**31, 0)), (64, 8, 3, 3), "pad_h"),
        (
            "issue: huge pad (no bad_alloc)",
            dict(kernel=(3, 3), pad=(2**25, 2**25)),
            (64, 8, 3, 3),
            "exceeds 2^40",
        ),
    ]
    for name, attrs, wshape, needle in issue_cases:
        bad(name, lambda a=attrs, s=wshape: _qconv(None, mx.nd.ones(s), num_filter=64, **a), needle)
    scalar_bad = {
        "num_filter": [0, -1, 2**24 + 1, "x", 2**40, 1.5],
        "num_group": [0, 3, 2**40, -1, "two"],
        "act_bit": [0, 33, -1, "x"],
        "weight_bit": [0, 33, "y"],
        "pad_value": [2, -2, "zero"],
        "no_bias": ["maybe", "2", 5],
        "scaling_factor": ["perhaps"],
        "binarized_weights_only": ["sometimes"],
        "layout": ["NHWC", "NCW"],
        "grad_cancel": [-1.0, "nan", "inf", "x"],
        "in_channels": [0, -3],
        "foo": [1],
    }
    for key, values in scalar_bad.items():
        for v in values:
            bad(f"qconv nd {key}={v!r}", lambda k=key, v=v: _qconv(**{k: v}), key)
    bad(
        "qconv packed with act_bit 9",
        lambda: _qconv(binarized_weights_only=True, act_bit=9),
        "binarized_weights_only",
    )
    # Packed k-bit weights: 4 * 8 * 9 levels at 3 bits are 14 words, 32 bits in the last.
    k3 = dict(binarized_weights_only=True, act_bit=3)
    bad(
        "qconv packed k-bit float weight",
        lambda: _qconv(None, mx.nd.ones((14,)), **k3),
        "int64",
    )
    bad(
        "qconv packed k-bit word count",
        lambda: _qconv(None, mx.nd.ones((13,), dtype=np.int64), **k3),
        "(14,)",
    )
    bad(
        "qconv packed k-bit bits past the last level",
        lambda: _qconv(None, mx.nd.array(np.full(14, -1), dtype=np.int64), **k3),
        "bits past the last level",
    )
    bad(
        "qfc packed k-bit bits past the last level",  # 5 * 12 levels at 3 bits: 3 words
        lambda: _qfc(None, mx.nd.array(np.full(3, -1), dtype=np.int64), **k3),
        "bits past the last level",
    )
    bad(
        "qconv in_packed without in_channels",
        lambda: _qconv(in_packed=True, binarized_weights_only=True),
        "in_channels",
    )
    bad(
        "qconv in_packed with num_group 2",
        lambda: _qconv(in_packed=True, in_channels=8, binarized_weights_only=True, num_group=2),
        "in_packed",
    )
    bad(
        "qconv out_packed with residual",
        lambda: _qconv(
            None,
            mx.nd.ones((4, 3, 3, 1), dtype=np.int64),
            mx.nd.ones((4,)),
            mx.nd.ones((4,)),
            mx.nd.ones((1, 4, 8, 8)),
            out_packed=True,
            residual=True,
            binarized_weights_only=True,
        ),
        "out_packed",
    )
    bad(
        "qconv input_affine with act_bit 2",
        lambda: _qconv(
            None, None, mx.nd.ones((8,)), mx.nd.ones((8,)), input_affine=True, act_bit=2
        ),
        "input_affine",
    )
    bad("qconv residual with weight_bit 2", lambda: _qconv(residual=True, weight_bit=2), "residual")
    bad(
        "qconv missing kernel",
        lambda: mx.nd.QConvolution(
            _x(), mx.nd.ones((4, 8, 3, 3)), num_filter=4, no_bias=True
        ).asnumpy(),
        "kernel",
    )
    bad(
        "qconv missing num_filter",
        lambda: mx.nd.QConvolution(
            _x(), mx.nd.ones((4, 8, 3, 3)), kernel=(3, 3), no_bias=True
        ).asnumpy(),
        "num_filter",
    )

    # ---- QConvolution inputs: shapes and dtypes ----------------------------------------
    ones = mx.nd.ones
    shape_bad = [
        ("data rank 3", lambda: _qconv(ones((8, 10, 10))), "rank 4"),
        ("data rank 5", lambda: _qconv(ones((1, 8, 10, 10, 1))), "rank 4"),
        (
            "data zero height (NumPy shape mode)",
            lambda: _np_shape(lambda: _qconv(ones((1, 8, 0, 10)))),
            "in_h",
        ),
        (
            "data zero width (NumPy shape mode)",
            lambda: _np_shape(lambda: _qconv(ones((1, 8, 10, 0)))),
            "in_w",
        ),
        (
            "data zero channels (NumPy shape mode)",
            lambda: _np_shape(lambda: _qconv(ones((1, 0, 10, 10)), ones((4, 0, 3, 3)))),
            "channels",
        ),
        ("data smaller than kernel", lambda: _qconv(ones((1, 8, 2, 2))), "dilated kernel"),
        ("weight channels mismatch", lambda: _qconv(None, ones((4, 7, 3, 3))), "weight"),
        ("weight filters mismatch", lambda: _qconv(None, ones((5, 8, 3, 3))), "weight"),
        ("weight kernel mismatch", lambda: _qconv(None, ones((4, 8, 2, 3))), "weight"),
        ("weight rank 2", lambda: _qconv(None, ones((4, 72))), "weight"),
        ("data float64", lambda: _qconv(ones(X_SHAPE, dtype=np.float64)), "float32"),
        ("data int32", lambda: _qconv(ones(X_SHAPE, dtype=np.int32)), "float32"),
        ("weight float16", lambda: _qconv(None, ones((4, 8, 3, 3), dtype=np.float16)), "float32"),
        ("weight uint8", lambda: _qconv(None, ones((4, 8, 3, 3), dtype=np.uint8)), "float32"),
    ]
    for name, fn, needle in shape_bad:
        bad(f"qconv {name}", fn, needle)
    bad(
        "qconv bias wrong shape",
        lambda: _qconv(None, None, mx.nd.ones((3,)), no_bias=False),
        "bias",
    )
    bad("qconv bias rank 2", lambda: _qconv(None, None, mx.nd.ones((4, 1)), no_bias=False), "bias")
    bad(
        "qconv packed weight float32",
        lambda: _qconv(None, mx.nd.ones((4, 3, 3, 1)), binarized_weights_only=True),
        "int64",
    )
    bad(
        "qconv packed weight too many words",
        lambda: _qconv(None, mx.nd.ones((4, 3, 3, 2), dtype=np.int64), binarized_weights_only=True),
        "weight",
    )
    bad(
        "qconv packed weight wrong taps",
        lambda: _qconv(None, mx.nd.ones((4, 3, 2, 1), dtype=np.int64), binarized_weights_only=True),
        "weight",
    )
    bad(
        "qconv packed alpha wrong shape",
        lambda: _qconv(
            None,
            mx.nd.ones((4, 3, 3, 1), dtype=np.int64),
            mx.nd.ones((5,)),
            binarized_weights_only=True,
            scaling_factor=True,
        ),
        "alpha",
    )
    bad(
        "qconv in_scale wrong shape",
        lambda: _qconv(None, None, mx.nd.ones((7,)), mx.nd.ones((8,)), input_affine=True),
        "in_scale",
    )
    bad(
        "qconv in_shift wrong shape",
        lambda: _qconv(None, None, mx.nd.ones((8,)), mx.nd.ones((9,)), input_affine=True),
        "in_shift",
    )
    bad(
        "qconv in_scale float64",
        lambda: _qconv(
            None, None, mx.nd.ones((8,), dtype=np.float64), mx.nd.ones((8,)), input_affine=True
        ),
        "in_scale",
    )
    bad(
        "qconv residual wrong shape",
        lambda: _qconv(None, None, mx.nd.ones((1, 4, 8, 7)), residual=True),
        "residual",
    )
    bad(
        "qconv residual int32",
        lambda: _qconv(None, None, mx.nd.ones((1, 4, 8, 8), dtype=np.int32), residual=True),
        "residual",
    )
    bad(
        "qconv in_packed data wrong words",
        lambda: _qconv(
            mx.nd.ones((1, 10, 10, 2), dtype=np.int64),
            mx.nd.ones((4, 3, 3, 1), dtype=np.int64),
            in_packed=True,
            in_channels=8,
            binarized_weights_only=True,
        ),
        "in_packed",
    )
    bad(
        "qconv in_packed data float32",
        lambda: _qconv(
            mx.nd.ones((1, 10, 10, 1)),
            mx.nd.ones((4, 3, 3, 1), dtype=np.int64),
            in_packed=True,
            in_channels=8,
            binarized_weights_only=True,
        ),
        "int64",
    )
    bad(
        "qconv out_scale wrong shape",
        lambda: _qconv(
            None,
            mx.nd.ones((4, 3, 3, 1), dtype=np.int64),
            mx.nd.ones((3,)),
            mx.nd.ones((4,)),
            out_packed=True,
            binarized_weights_only=True,
        ),
        "out_scale",
    )
    bad("qconv too many inputs", lambda: _qconv(None, None, mx.nd.ones((4,))), "QConvolution")
    bad("qconv input not an NDArray", lambda: _qconv(np.ones(X_SHAPE, np.float32)), "NDArray")
    for attrs, needle in [
        (dict(input_affine=True), "input_affine"),
        (dict(residual=True), "residual"),
    ]:
        bad(f"qconv backward {needle}", lambda a=attrs: _backward(**a), needle)
    bad("qconv backward in_packed", lambda: _backward_packed(), "in_packed")

    # ---- geometry through mx.sym shape inference (sizes that cannot be allocated) ------
    sym_geom = [
        # MXNet 1.9.1 (int32 tensor sizes) refuses a data argument of 2^31 elements itself.
        ((1, 8, 2**31, 10), {}, "larger than 2^31"),
        ((1, 8, 10, 2**31), {}, "larger than 2^31"),
        ((2**31, 8, 10, 10), {}, "larger than 2^31"),
        ((1, 2**31, 10, 10), {}, "larger than 2^31"),
        ((2**20, 2**10, 2**10, 2**10), {}, "exceeds 2^40"),
        ((1, 8, 2**31 - 1, 2**31 - 1), {}, "exceeds 2^40"),
        ((1, 2**30, 3, 3), dict(num_filter=2**14), "exceeds 2^40"),
        ((1, 8, 2**31 - 1, 10), dict(pad=(2**31 - 1, 0)), "exceeds 2^40"),
        ((1, 8, 10, 10), dict(pad=(2**31 - 1, 0)), "exceeds 2^40"),
        ((1, 8, 10, 10), dict(kernel=(2**31 - 1, 1)), "dilated kernel"),
        ((1, 8, 10, 10), dict(num_group=3), "num_group"),
        ((1, 8, 10), {}, "rank 4"),
    ]
    for shape, attrs, needle in sym_geom:
        full = dict(kernel=(3, 3), num_filter=4, no_bias=True)
        full.update(attrs)
        bad(
            f"qconv sym data {shape} {attrs}",
            lambda s=shape, a=full: _sym_infer("QConvolution", s, **a),
            needle,
        )

    # ---- QFullyConnected ---------------------------------------------------------------
    fc_scalar = {
        "num_hidden": [0, -1, 2**31, "x", 2**40],
        "flatten": ["maybe"],
        "no_bias": ["maybe", 3],
        "act_bit": [0, 33],
        "weight_bit": [0, 40],
        "grad_cancel": [-0.5, "inf"],
        "bar": [2],
    }
    for key, values in fc_scalar.items():
        for v in values:
            bad(f"qfc nd {key}={v!r}", lambda k=key, v=v: _qfc(**{k: v}), key)
    fc_inputs = [
        ("data rank 1 with flatten", lambda: _qfc(ones((12,))), "rank"),
        ("weight depth mismatch", lambda: _qfc(None, ones((5, 11))), "weight"),
        ("weight hidden mismatch", lambda: _qfc(None, ones((6, 12))), "weight"),
        ("weight rank 3", lambda: _qfc(None, ones((5, 3, 4))), "weight"),
        ("data float64", lambda: _qfc(ones((2, 12), dtype=np.float64)), "float32"),
        (
            "weight int64 without packing",
            lambda: _qfc(None, ones((5, 12), dtype=np.int64)),
            "float32",
        ),
        (
            "data zero features (NumPy shape mode)",
            lambda: _np_shape(lambda: _qfc(ones((2, 0)))),
            "features",
        ),
    ]
    for name, fn, needle in fc_inputs:
        bad(f"qfc {name}", fn, needle)
    bad("qfc bias wrong shape", lambda: _qfc(None, None, mx.nd.ones((4,)), no_bias=False), "bias")
    bad(
        "qfc packed weight wrong words",
        lambda: _qfc(None, mx.nd.ones((5, 2), dtype=np.int64), binarized_weights_only=True),
        "weight",
    )
    bad(
        "qfc packed weight float32",
        lambda: _qfc(None, mx.nd.ones((5, 1)), binarized_weights_only=True),
        "int64",
    )
    bad(
        "qfc in_scale wrong shape",
        lambda: _qfc(None, None, mx.nd.ones((11,)), mx.nd.ones((12,)), input_affine=True),
        "in_scale",
    )
    bad(
        "qfc flatten=False weight mismatch",
        lambda: _qfc(mx.nd.ones((2, 3, 4)), mx.nd.ones((5, 12)), flatten=False),
        "weight",
    )
    for shape, needle in [
        ((1, 2**20, 2**20, 2**10), "features"),
        ((2**31, 2**10), "larger than 2^31"),
        ((2**30, 2**30), "exceeds 2^40"),
    ]:
        bad(
            f"qfc sym data {shape}",
            lambda s=shape: _sym_infer("QFullyConnected", s, num_hidden=5, no_bias=True),
            needle,
        )

    # ---- QActivation -------------------------------------------------------------------
    for key, values in {
        "act_bit": [0, 33, "x"],
        "backward_only": ["maybe"],
        "grad_cancel": [-1.0, "nan"],
        "baz": [1],
    }.items():
        for v in values:
            bad(
                f"qact {key}={v!r}",
                lambda k=key, v=v: mx.nd.QActivation(_x(), **{k: v}).asnumpy(),
                key,
            )
    bad(
        "qact data float64",
        lambda: mx.nd.QActivation(mx.nd.ones((2, 3), dtype=np.float64)).asnumpy(),
        "float32",
    )

    # ---- valid calls at the extremes: exact against MXNet's Convolution ----------------
    rng = np.random.default_rng(7)
    xv = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    wv = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    wv1 = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    good(
        "stride 2^31 x 5 (one output row)",
        lambda: _conv_matches_as(
            xv, wv, dict(kernel=(3, 3), stride=(2**31, 5)), dict(kernel=(3, 3), stride=(100, 5))
        ),
    )
    good(
        "stride 2^62 both axes",
        lambda: _conv_matches_as(
            xv,
            wv,
            dict(kernel=(3, 3), stride=(2**62, 2**62)),
            dict(kernel=(3, 3), stride=(100, 100)),
        ),
    )
    good(
        "stride larger than the padded input, pad 1",
        lambda: _conv_matches(xv, wv, kernel=(3, 3), stride=(13, 11), pad=(1, 1)),
    )
    good(
        "dilate 2^40 with kernel 1",
        lambda: _conv_matches_as(
            xv, wv1, dict(kernel=(1, 1), dilate=(2**40, 2**40)), dict(kernel=(1, 1))
        ),
    )
    good(
        "pad 40 (output mostly padding)", lambda: _conv_matches(xv, wv, kernel=(3, 3), pad=(40, 3))
    )
    wv2 = rng.standard_normal((4, 8, 2, 2)).astype(np.float32)
    good(
        "dilated kernel exactly the padded input",
        lambda: _conv_matches(xv, wv2, kernel=(2, 2), dilate=(11, 9), pad=(1, 0)),
    )
    good(
        "batch 0 (NumPy shape mode)",
        lambda: _np_shape(lambda: _qconv(mx.nd.ones((0, 8, 10, 10))).shape == (0, 4, 8, 8)),
    )
    for c in (1, 5, 63, 64, 65, 100, 129):
        good(
            f"packed conv weights with tail bits set, C={c}", lambda c=c: _packed_tail_bits_conv(c)
        )
    for d in (1, 7, 63, 65, 130):
        good(f"packed dense weights with tail bits set, D={d}", lambda d=d: _packed_tail_bits_fc(d))
    for seed, shape in enumerate([(2, 8, 9, 9), (1, 65, 6, 6), (1, 3, 5, 5)]):
        good(
            f"NaN/Inf/-0.0 in data and weight {shape}",
            lambda s=shape, seed=seed: _conv_matches(
                _special_values(s, seed),
                _special_values((4, s[1], 3, 3), seed + 10),
                kernel=(3, 3),
                pad=(1, 1),
            ),
        )
    return cases


def _conv_matches_as(
    x: np.ndarray, w: np.ndarray, attrs: dict[str, Any], ref_attrs: dict[str, Any]
) -> bool:
    """QConvolution with ``attrs`` == Convolution(sgn) with the equivalent ``ref_attrs``
    (MXNet's own op cannot take the extreme value; the output is the same)."""
    got = mx.nd.QConvolution(
        mx.nd.array(x), mx.nd.array(w), num_filter=w.shape[0], no_bias=True, **attrs
    ).asnumpy()
    want = mx.nd.Convolution(
        mx.nd.array(_sgn(x)),
        mx.nd.array(_sgn(w)),
        num_filter=w.shape[0],
        no_bias=True,
        **ref_attrs,
    ).asnumpy()
    return got.shape == want.shape and bool(np.array_equal(got, want))


def _np_shape(fn: Callable[[], Any]) -> Any:
    """``fn()`` under ``mx.util.set_np_shape(True)`` (zero-size arrays exist only there)."""
    with mx.util.np_shape(True):
        return fn()


def _backward_packed() -> Any:
    x = mx.nd.ones((1, 10, 10, 1), dtype=np.int64)
    w = mx.nd.ones((4, 3, 3, 1), dtype=np.int64)
    w.attach_grad()
    with mx.autograd.record():
        y = mx.nd.QConvolution(
            x,
            w,
            kernel=(3, 3),
            num_filter=4,
            no_bias=True,
            in_packed=True,
            in_channels=8,
            binarized_weights_only=True,
        )
    y.backward()
    return w.grad.asnumpy()


CASES = _cases()


def run_all() -> tuple[Tally, list[tuple[str, str, str]]]:
    tally = Tally()
    bad_cases = []
    for name, fn, needles in CASES:
        out = run_forked(fn, TIMEOUT)
        verdict = classify(out, needles)
        tally.add(verdict)
        if verdict not in ("clear", "ok"):
            bad_cases.append((name, verdict, out.detail[-400:]))
    return tally, bad_cases


def test_suite_size() -> None:
    assert len(CASES) >= 150, len(CASES)
    assert len({name for name, _, _ in CASES}) == len(CASES), "case names must be unique"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case: Case) -> None:
    name, fn, needles = case
    out = run_forked(fn, TIMEOUT)
    verdict = classify(out, needles)
    wanted = f"an error naming {needles!r}" if needles else "an exact result"
    assert verdict in ("clear", "ok"), (
        f"{name}: {verdict} (wanted {wanted}); got {out.kind}: {out.detail[-600:]}"
    )


if __name__ == "__main__":
    tally, failures = run_all()
    for name, verdict, detail in failures:
        print(f"{verdict}: {name}: {detail}")
    print(tally.line("operators"))
    sys.exit(0 if not failures else 1)
