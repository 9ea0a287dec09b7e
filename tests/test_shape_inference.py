"""Shape inference of the ``mx.sym`` operators, in MXNet's legacy and NumPy shape modes.

- Known shapes: QConvolution / QFullyConnected infer exactly what MXNet's own Convolution /
  FullyConnected infer for the same attributes, over a grid of kernels, strides, pads,
  dilations and groups, in both shape modes (``mx.util.set_np_shape``).
- Unknown stays unknown: a data dim MXNet does not know yet gives unknown (-1) in every
  shape derived from it and nothing else; unknown data gives the attribute-only shapes.
- Never truncated: an output dim past 2^31-1 (MXNet's shape range) is an error naming it,
  never a wrapped value (a pad of 2^31 used to give a height of 4, an unknown height -3).
- The ``mx.sym`` wrappers mark unknown parameter dims -1, which both modes read as unknown
  (0 is a known zero size in NumPy shape mode: it used to fail with "Provided = [4,0,3,3]").
"""

from __future__ import annotations

import re

import binmx  # noqa: F401  (loads the operators)
import mxnet as mx
import pytest

MODES = [False, True]  # mx.util.set_np_shape: legacy, NumPy


def _infer(sym: mx.sym.Symbol, np_mode: bool, partial: bool = False, **shapes):
    with mx.util.np_shape(np_mode):
        f = sym.infer_shape_partial if partial else sym.infer_shape
        args, outs, _ = f(**shapes)
    return dict(zip(sym.list_arguments(), args, strict=True)), outs


def _geometries():
    for kernel in [(1, 1), (3, 3), (1, 3), (5, 2)]:
        for stride in [(1, 1), (2, 3), (7, 7)]:
            for pad in [(0, 0), (1, 2), (4, 4)]:
                for dilate in [(1, 1), (2, 1)]:
                    yield kernel, stride, pad, dilate


GEOMETRIES = list(_geometries())


@pytest.mark.parametrize("np_mode", MODES)
def test_conv_shapes_equal_convolution(np_mode: bool) -> None:
    data = mx.sym.var("data")
    checked = 0
    for kernel, stride, pad, dilate in GEOMETRIES:
        for groups, channels in [(1, 6), (2, 6), (3, 9)]:
            shape = (2, channels, 11, 9)
            attrs = dict(
                kernel=kernel, stride=stride, pad=pad, dilate=dilate, num_filter=6, num_group=groups
            )
            ref = mx.sym.Convolution(data, name="c", **attrs)
            got = mx.sym.QConvolution(data, name="c", **attrs)
            try:
                want_args, want_out = _infer(ref, np_mode, data=shape)
            except mx.base.MXNetError:
                with pytest.raises(mx.base.MXNetError, match="dilated kernel"):
                    _infer(got, np_mode, data=shape)
                continue
            got_args, got_out = _infer(got, np_mode, data=shape)
            assert got_out == want_out, (attrs, got_out, want_out)
            assert got_args == want_args, (attrs, got_args, want_args)
            checked += 1
    assert checked > 150


@pytest.mark.parametrize("np_mode", MODES)
@pytest.mark.parametrize("flatten", [True, False])
def test_fc_shapes_equal_fully_connected(np_mode: bool, flatten: bool) -> None:
    data = mx.sym.var("data")
    for shape in [(4, 7), (2, 3, 5), (2, 1, 3, 65), (1, 64)]:
        ref = mx.sym.FullyConnected(data, num_hidden=9, flatten=flatten, name="f")
        got = mx.sym.QFullyConnected(data, num_hidden=9, flatten=flatten, name="f")
        assert _infer(got, np_mode, data=shape) == _infer(ref, np_mode, data=shape), shape


@pytest.mark.parametrize("np_mode", MODES)
def test_packed_and_fused_input_shapes(np_mode: bool) -> None:
    data = mx.sym.var("data")
    s = mx.sym.QConvolution(
        data,
        kernel=(3, 3),
        num_filter=70,
        binarized_weights_only=True,
        scaling_factor=True,
        input_affine=True,
        name="c",
    )
    args, outs = _infer(s, np_mode, data=(2, 130, 8, 8))
    assert args["c_weight"] == (70, 3, 3, 3)  # ceil(130 / 64) words per tap
    assert args["c_alpha"] == (70,) and args["c_in_scale"] == (130,)
    assert outs == [(2, 70, 6, 6)]
    s = mx.sym.QConvolution(
        data,
        kernel=(3, 3),
        num_filter=70,
        binarized_weights_only=True,
        out_packed=True,
        no_bias=True,
        name="c",
    )
    _, outs = _infer(s, np_mode, data=(2, 64, 8, 8))
    assert outs == [(2, 6, 6, 2)]  # (N, OH, OW, ceil(70 / 64)) words
    s = mx.sym.QConvolution(
        data,
        kernel=(1, 1),
        num_filter=8,
        binarized_weights_only=True,
        in_packed=True,
        in_channels=65,
        no_bias=True,
        name="c",
    )
    args, outs = _infer(s, np_mode, data=(2, 5, 5, 2))
    assert args["c_weight"] == (8, 1, 1, 2) and outs == [(2, 8, 5, 5)]


@pytest.mark.parametrize("np_mode", MODES)
@pytest.mark.parametrize(
    "data_shape, out_shape, weight_shape",
    [
        ((-1, 8, 10, 10), (-1, 4, 8, 8), (4, 8, 3, 3)),
        ((1, 8, -1, 10), (1, 4, -1, 8), (4, 8, 3, 3)),
        ((1, 8, 10, -1), (1, 4, 8, -1), (4, 8, 3, 3)),
        ((1, -1, 10, 10), (1, 4, 8, 8), (4, -1, 3, 3)),
        ((-1, -1, -1, -1), (-1, 4, -1, -1), (4, -1, 3, 3)),
    ],
)
def test_conv_unknown_dims_stay_unknown(np_mode, data_shape, out_shape, weight_shape) -> None:
    s = mx.sym.QConvolution(mx.sym.var("data"), kernel=(3, 3), num_filter=4, name="c")
    given = tuple(d if d >= 0 else (-1 if np_mode else 0) for d in data_shape)
    args, outs = _infer(s, np_mode, partial=True, data=given)
    unknown = {-1, 0} if not np_mode else {-1}  # what MXNet reports for "unknown"

    def same(got, want):
        return len(got) == len(want) and all(
            (w < 0 and g in unknown) or g == w for g, w in zip(got, want, strict=True)
        )

    assert same(outs[0], out_shape), (outs, out_shape)
    assert same(args["c_weight"], weight_shape), (args, weight_shape)
    assert args["c_bias"] == (4,)


@pytest.mark.parametrize("np_mode", MODES)
def test_unknown_data_gives_attribute_shapes(np_mode: bool) -> None:
    s = mx.sym.QConvolution(mx.sym.var("data"), kernel=(3, 5), num_filter=4, name="c")
    args, outs = _infer(s, np_mode, partial=True)
    assert args["c_weight"][0] == 4 and args["c_weight"][2:] == (3, 5)
    assert outs[0][1] == 4 and len(outs[0]) == 4
    s = mx.sym.QFullyConnected(mx.sym.var("data"), num_hidden=6, name="f")
    args, outs = _infer(s, np_mode, partial=True, data=(2, -1 if np_mode else 0, 4))
    assert args["f_weight"][0] == 6 and args["f_weight"][1] in (-1, 0)
    assert outs == [(2, 6)]


@pytest.mark.parametrize("np_mode", MODES)
@pytest.mark.parametrize(
    "attrs, data_shape, needle",
    [
        (dict(kernel=(1, 1), pad=(2**31, 0)), (1, 1, 1, 1), "pad_h"),
        (dict(kernel=(1, 1), pad=(2**30, 0)), (1, 1, 1, 1), "output height 2147483649"),
        (dict(kernel=(1, 1), pad=(0, 2**31 - 1)), (1, 1, 1, 1), "output width 4294967295"),
        (dict(kernel=(3, 3), dilate=(2**62, 1)), (1, 1, 9, 9), "dilated kernel"),
        (dict(kernel=(2**58 + 1, 3), dilate=(64, 1)), (1, 1, 9, 9), "kernel_h"),
        (dict(kernel=(3, 3), pad=(2**20, 2**20)), (1, 1, 9, 9), "exceeds 2^40"),
        (dict(kernel=(3, 3)), (1, 1, 2, 9), "dilated kernel"),
    ],
)
def test_conv_never_truncates(np_mode: bool, attrs, data_shape, needle) -> None:
    s = mx.sym.QConvolution(mx.sym.var("data"), num_filter=1, no_bias=True, name="c", **attrs)
    with pytest.raises(mx.base.MXNetError, match=re.escape(needle)):
        _infer(s, np_mode, data=data_shape)


@pytest.mark.parametrize("np_mode", MODES)
def test_huge_stride_gives_one_row(np_mode: bool) -> None:
    s = mx.sym.QConvolution(
        mx.sym.var("data"), kernel=(3, 3), stride=(2**31, 2**62), num_filter=2, name="c"
    )
    _, outs = _infer(s, np_mode, data=(1, 3, 10, 10))
    assert outs == [(1, 2, 1, 1)]


@pytest.mark.parametrize("np_mode", MODES)
def test_fc_depth_never_truncates(np_mode: bool) -> None:
    s = mx.sym.QFullyConnected(mx.sym.var("data"), num_hidden=3, name="f")
    with pytest.raises(mx.base.MXNetError, match="features per row"):
        _infer(s, np_mode, data=(1, 2**16, 2**16, 2))


@pytest.mark.parametrize("np_mode", MODES)
def test_wrappers_under_numpy_shape_mode(np_mode: bool) -> None:
    """The reported case: under set_np_shape(True) the wrappers' partial parameter shapes must
    read as unknown, not as a zero size."""
    data = mx.sym.var("data")
    net = mx.sym.QConvolution(data, kernel=(3, 3), num_filter=4, name="c1")
    net = mx.sym.QConvolution(
        net,
        kernel=(1, 1),
        num_filter=8,
        binarized_weights_only=True,
        scaling_factor=True,
        input_affine=True,
        name="c2",
    )
    net = mx.sym.QFullyConnected(net, num_hidden=5, name="f")
    args, outs = _infer(net, np_mode, data=(2, 3, 9, 9))
    assert args["c1_weight"] == (4, 3, 3, 3)
    assert args["c2_weight"] == (8, 1, 1, 1) and args["c2_in_scale"] == (4,)
    assert args["f_weight"] == (5, 8 * 7 * 7)
    assert outs == [(2, 5)]
    wrapped_attr = mx.sym.QConvolution(data, kernel=(3, 3), num_filter=4, name="c")
    weight_attrs = wrapped_attr.get_internals()["c_weight"].list_attr()
    assert weight_attrs["__shape__"] == "(4, -1, 3, 3)"
