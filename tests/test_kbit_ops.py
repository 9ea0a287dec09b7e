"""The integer k-bit path of QConvolution / QFullyConnected (src/xnor_gemm/kbit.h) through MXNet.

The integer path is exact: with la = A * Qa(x) and mw = B * Qw(W) (A = 2^act_bit - 1,
B = 2^weight_bit - 1; both checked to be integers, i.e. the fake quantisation is reproduced),
    D   = conv(la padded with pad_value * A, mw)          (exact, int64 here)
    out = float32(D * (alpha / (A * B)))  then  + bias    (float64 product, float32 rounding)
so the operator output is compared with == on every ISA and with 1 and 2 threads. Against
MXNet's own Convolution on the fake-quant floats the difference is float32 accumulation only.
"""

from __future__ import annotations

import binmx
import mxnet as mx
import numpy as np
import pytest
from binmx import reference as ref
from binmx import xnor

PAIRS = [(2, 1), (2, 2), (3, 4), (4, 1), (4, 3), (5, 3), (8, 8), (2, 8), (8, 1)]


def _acts(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Mostly in [-0.2, 1.2] (both clip sides), with exact 0 / -0 / 1 and NaN mixed in."""
    x = rng.uniform(-0.2, 1.2, shape).astype(np.float32)
    r = rng.random(shape)
    x[r < 0.04] = 0.0
    x[(r >= 0.04) & (r < 0.06)] = -0.0
    x[(r >= 0.06) & (r < 0.08)] = 1.0
    x[(r >= 0.08) & (r < 0.09)] = np.nan
    return x


def _ints(q: np.ndarray, scale: int) -> np.ndarray:
    v = q.astype(np.float64) * scale
    n = np.rint(v)
    assert np.all(np.abs(v - n) < 1e-4), "fake-quant value is not an integer level"
    return n


def _want(d: np.ndarray, alpha: np.ndarray, bias: np.ndarray | None, a: int, b: int, axis: int):
    shape = [1] * d.ndim
    shape[axis] = -1
    out = d.astype(np.float64) * (alpha.astype(np.float64) / (a * b)).reshape(shape)
    out = out.astype(np.float32)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def _assert_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    bad = np.argwhere(~((got == want) | (np.isnan(got) & np.isnan(want))))
    assert bad.size == 0, (
        f"{what}: {len(bad)} mismatches, first at {tuple(bad[0])}: got "
        f"{got[tuple(bad[0])]!r}, want {want[tuple(bad[0])]!r}"
    )


@pytest.mark.parametrize("act_bit,weight_bit", PAIRS)
@pytest.mark.parametrize(
    "geo",
    [
        dict(groups=1, stride=(1, 1), dilate=(1, 1), pad=(1, 1), pad_value=0, scaling=False),
        dict(groups=2, stride=(2, 1), dilate=(1, 2), pad=(2, 1), pad_value=-1, scaling=True),
        dict(groups=1, stride=(1, 2), dilate=(2, 1), pad=(1, 2), pad_value=1, scaling=True),
    ],
)
def test_qconv_integer_path_is_exact(rng, monkeypatch, act_bit, weight_bit, geo):
    groups = geo["groups"]
    chans, filters = 66 * groups, 17 * groups
    x = _acts(rng, (2, chans, 7, 6))
    w = rng.standard_normal((filters, chans // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    a_max, b_max = 2**act_bit - 1, 2**weight_bit - 1
    la = _ints(ref.quantize_act(x, act_bit), a_max)
    mw = _ints(ref.quantize_weight(w, weight_bit), b_max)
    d = ref.conv2d(
        la,
        mw,
        stride=geo["stride"],
        pad=geo["pad"],
        dilate=geo["dilate"],
        groups=groups,
        pad_value=float(geo["pad_value"] * a_max),
    )
    alpha = ref.scaling_alpha(w) if geo["scaling"] else np.ones(filters, np.float32)
    want = _want(d, alpha, b, a_max, b_max, axis=1)
    attrs = dict(
        kernel=(3, 3),
        num_filter=filters,
        num_group=groups,
        stride=geo["stride"],
        dilate=geo["dilate"],
        pad=geo["pad"],
        pad_value=geo["pad_value"],
        scaling_factor=geo["scaling"],
        act_bit=act_bit,
        weight_bit=weight_bit,
    )
    depth = chans // groups * 9
    assert xnor.kbit_path(act_bit, weight_bit, depth) in ("bitserial", "int8")
    for isa in xnor.available_isas():
        for threads in ("1", "2"):
            monkeypatch.setenv("BINMX_ISA", isa)
            monkeypatch.setenv("OMP_NUM_THREADS", threads)
            y = mx.nd.QConvolution(mx.nd.array(x), mx.nd.array(w), mx.nd.array(b), **attrs)
            _assert_equal(y.asnumpy(), want, f"isa={isa} threads={threads}")
    # Against MXNet's float Convolution of the fake-quant values (NaN inputs quantise to 0).
    xq = np.asarray(ref.quantize_act(x, act_bit))
    pad = geo["pad"]
    if geo["pad_value"] != 0:  # MXNet pads with zeros: pad by hand with the +-1 constant
        xq = np.pad(
            xq,
            ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2),
            constant_values=float(geo["pad_value"]),
        )
        pad = (0, 0)
    wq = ref.quantize_weight(w, weight_bit) * alpha[:, None, None, None]
    conv = mx.nd.Convolution(
        mx.nd.array(xq),
        mx.nd.array(wq),
        mx.nd.array(b),
        kernel=(3, 3),
        num_filter=filters,
        num_group=groups,
        stride=geo["stride"],
        dilate=geo["dilate"],
        pad=pad,
    ).asnumpy()
    # float32 sums of depth (<= 1188) products of magnitude <= max alpha: relative 1e-5 of the
    # absolute sum bounds their rounding.
    bound = 1e-5 * (np.abs(d).max() / (a_max * b_max) * alpha.max() + np.abs(b).max()) + 1e-6
    np.testing.assert_allclose(want, conv, rtol=0, atol=bound)


@pytest.mark.parametrize("act_bit,weight_bit", [(8, 8), (5, 3), (8, 1), (7, 8)])
@pytest.mark.parametrize(
    "geo",
    [
        dict(chans=3, kernel=(7, 7), stride=(2, 2), pad=(3, 3), pad_value=0),  # the 8-bit stem
        dict(chans=1, kernel=(5, 3), stride=(1, 2), pad=(2, 0), pad_value=1),
        dict(chans=2, kernel=(1, 1), stride=(1, 1), pad=(0, 0), pad_value=0),
        dict(chans=4, kernel=(3, 4), stride=(2, 1), pad=(1, 3), pad_value=1),
        dict(chans=5, kernel=(6, 6), stride=(3, 2), pad=(2, 5), pad_value=0),
    ],
)
def test_qconv_few_channels_direct_kernel_is_exact(rng, monkeypatch, act_bit, weight_bit, geo):
    """Few input channels (C * kw <= 64, groups 1, pad_value 0 / +1) run the direct int8
    kernel (kbit_direct.cc): the same integers D and outputs as the fake-quant reference."""
    chans, filters = geo["chans"], 67
    x = _acts(rng, (2, chans, 15, 13))
    w = rng.standard_normal((filters, chans, *geo["kernel"])).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    a_max, b_max = 2**act_bit - 1, 2**weight_bit - 1
    la = _ints(ref.quantize_act(x, act_bit), a_max)
    mw = _ints(ref.quantize_weight(w, weight_bit), b_max)
    d = ref.conv2d(
        la, mw, stride=geo["stride"], pad=geo["pad"], pad_value=float(geo["pad_value"] * a_max)
    )
    alpha = ref.scaling_alpha(w)
    want = _want(d, alpha, b, a_max, b_max, axis=1)
    attrs = dict(
        kernel=geo["kernel"],
        num_filter=filters,
        stride=geo["stride"],
        pad=geo["pad"],
        pad_value=geo["pad_value"],
        scaling_factor=True,
        act_bit=act_bit,
        weight_bit=weight_bit,
    )
    assert xnor.kbit_path(act_bit, weight_bit, chans * int(np.prod(geo["kernel"]))) == "int8"
    for isa in xnor.available_isas():
        for threads in ("1", "2"):
            monkeypatch.setenv("BINMX_ISA", isa)
            monkeypatch.setenv("OMP_NUM_THREADS", threads)
            y = mx.nd.QConvolution(mx.nd.array(x), mx.nd.array(w), mx.nd.array(b), **attrs)
            _assert_equal(y.asnumpy(), want, f"isa={isa} threads={threads}")


@pytest.mark.parametrize("act_bit,weight_bit", PAIRS)
@pytest.mark.parametrize("depth", [1, 7, 63, 64, 65, 129, 513])
def test_qfc_integer_path_is_exact(rng, monkeypatch, act_bit, weight_bit, depth):
    rows, hidden = 5, 19
    x = _acts(rng, (rows, depth))
    w = rng.standard_normal((hidden, depth)).astype(np.float32)
    b = rng.standard_normal(hidden).astype(np.float32)
    a_max, b_max = 2**act_bit - 1, 2**weight_bit - 1
    la = _ints(ref.quantize_act(x, act_bit), a_max)
    mw = _ints(ref.quantize_weight(w, weight_bit), b_max)
    d = la @ mw.T
    alpha = ref.scaling_alpha(w)
    want = _want(d, alpha, b, a_max, b_max, axis=1)
    for isa in xnor.available_isas():
        for threads in ("1", "2"):
            monkeypatch.setenv("BINMX_ISA", isa)
            monkeypatch.setenv("OMP_NUM_THREADS", threads)
            y = mx.nd.QFullyConnected(
                mx.nd.array(x),
                mx.nd.array(w),
                mx.nd.array(b),
                num_hidden=hidden,
                act_bit=act_bit,
                weight_bit=weight_bit,
                scaling_factor=True,
            )
            _assert_equal(y.asnumpy(), want, f"isa={isa} threads={threads}")


@pytest.mark.parametrize("act_bit,weight_bit", [(1, 2), (9, 9), (16, 4), (32, 8)])
def test_bit_widths_without_integer_kernel_run_the_float_path(rng, act_bit, weight_bit):
    assert xnor.kbit_path(act_bit, weight_bit, 36) == "float"
    x = _acts(rng, (1, 4, 5, 5))
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    y = mx.nd.QConvolution(
        mx.nd.array(x),
        mx.nd.array(w),
        kernel=(3, 3),
        num_filter=3,
        pad=(1, 1),
        no_bias=True,
        act_bit=act_bit,
        weight_bit=weight_bit,
    )
    want = ref.q_conv2d(
        np.nan_to_num(x, nan=0.0) if act_bit > 1 else x,
        w,
        pad=(1, 1),
        act_bit=act_bit,
        weight_bit=weight_bit,
    )
    # float32 sums of 36 products of magnitude <= 1 (act_bit 32: |x| <= 1.2)
    np.testing.assert_allclose(y.asnumpy(), want, rtol=0, atol=1e-5)


def test_summary_names_the_kernel():
    data = mx.sym.var("data")
    net = mx.sym.QConvolution(
        data, kernel=(3, 3), num_filter=64, act_bit=2, weight_bit=1, name="a2w1"
    )
    net = mx.sym.QConvolution(
        net, kernel=(3, 3), num_filter=64, act_bit=8, weight_bit=8, name="a8w8"
    )
    net = mx.sym.QConvolution(
        net, kernel=(3, 3), num_filter=64, act_bit=12, weight_bit=12, name="a12"
    )
    net = mx.sym.QConvolution(net, kernel=(3, 3), num_filter=64, name="binary")
    s = binmx.summary(net, (1, 64, 12, 12))
    kernels = {layer.name: layer.kernel for layer in s.layers}
    assert kernels == {"a2w1": "bitserial", "a8w8": "int8", "a12": "float", "binary": "xnor"}
    assert "bitserial" in s.table() and "kernel" in s.table()


def _mxnet_forward(sym: mx.sym.Symbol, args: dict, x: np.ndarray) -> np.ndarray:
    ex = sym.simple_bind(mx.cpu(), data=x.shape, grad_req="null")
    for k, v in args.items():
        ex.arg_dict[k][:] = v
    return ex.forward(is_train=False, data=mx.nd.array(x))[0].asnumpy()


@pytest.mark.parametrize(
    "case",
    [
        dict(bits=(8, 8), chans=3, kernel=7, stride=2, pad=3, relu=True, pool="valid"),  # stem
        dict(bits=(2, 1), chans=17, kernel=3, stride=1, pad=1, relu=True, pool="full"),
        dict(bits=(4, 3), chans=64, kernel=3, stride=1, pad=1, relu=True, pool=None),
        dict(bits=(5, 2), chans=9, kernel=3, stride=2, pad=0, relu=False, pool="valid"),
        dict(bits=(8, 8), chans=1, kernel=5, stride=1, pad=2, relu=False, pool="full"),
        dict(bits=(6, 8), chans=4, kernel=3, stride=2, pad=1, relu=True, pool="full"),
        dict(bits=(8, 8), chans=3, kernel=7, stride=2, pad=3, relu=True, pool=None),
    ],
)
def test_runtime_kbit_conv_with_relu_and_pool_equals_mxnet(rng, tmp_path, case):
    """The runtime's integer k-bit conv (relu and max-pool fused, as for the 8-bit stem) gives
    MXNet's bits: the same core kernels, then exact relu / max."""
    runtime = pytest.importorskip("binmx_runtime", reason="needs the binmx-runtime distribution")
    act_bit, weight_bit = case["bits"]
    k = case["kernel"]
    x = _acts(rng, (2, case["chans"], 23, 21))
    x[np.isnan(x)] = 0.5
    w = rng.standard_normal((24, case["chans"], k, k)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    net = mx.sym.QConvolution(
        mx.sym.var("data"),
        kernel=(k, k),
        stride=(case["stride"],) * 2,
        pad=(case["pad"],) * 2,
        num_filter=24,
        act_bit=act_bit,
        weight_bit=weight_bit,
        scaling_factor=True,
        name="q",
    )
    if case["relu"]:
        net = mx.sym.Activation(net, act_type="relu", name="r")
    if case["pool"]:
        net = mx.sym.Pooling(
            net,
            kernel=(3, 3),
            stride=(2, 2),
            pad=(1, 1),
            pool_type="max",
            pooling_convention=case["pool"],
            name="p",
        )
    args = {"q_weight": w, "q_bias": b}
    want = _mxnet_forward(net, args, x)
    prefix = str(tmp_path / "m")
    mx.model.save_checkpoint(prefix, 1, net, {k: mx.nd.array(v) for k, v in args.items()}, {})
    model = runtime.load(prefix, 1, input_shape=x.shape, threads=2)
    got = model.run(x)
    assert len(model.layers()) == 1, "relu / pool not fused into the k-bit convolution"
    _assert_equal(got, want, "runtime vs MXNet")


@pytest.mark.parametrize("net", ["lenet", "resnet"])
def test_int8_stem_models_train_convert_and_run(rng, tmp_path, net):
    """``stem="int8"``: conv0 / conv1 is a QConvolution(8, 8) on the pixel / 255 input (no
    bn_data); a training step runs (its forward on the integer kernel), and the converted,
    folded model gives MXNet's predictions in the runtime."""
    from binmx import models

    if net == "lenet":
        sym, shape, first = models.binary_lenet(stem="int8"), (4, 1, 28, 28), "conv1"
    else:
        sym = models.resnet(
            depth=10, num_classes=10, image_shape=(1, 28, 28), width=16, stem="int8", stem_stride=2
        )
        shape, first = (4, 1, 28, 28), "conv0"
    nodes = {n["name"]: n for n in __import__("json").loads(sym.tojson())["nodes"]}
    assert nodes[first]["op"] == "QConvolution"
    assert nodes[first]["attrs"]["act_bit"] == "8" and nodes[first]["attrs"]["weight_bit"] == "8"
    assert "bn_data" not in nodes
    x = (rng.integers(0, 256, shape) / 255.0).astype(np.float32)
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["softmax_label"])
    mod.bind(data_shapes=[("data", shape)], label_shapes=[("softmax_label", (shape[0],))])
    mod.init_params(mx.init.Xavier(magnitude=2.0))
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.1})
    batch = mx.io.DataBatch([mx.nd.array(x)], [mx.nd.array(rng.integers(0, 10, shape[0]))])
    mod.forward_backward(batch)
    mod.update()
    grads = mod._exec_group.grad_arrays[mod._exec_group.param_names.index(f"{first}_weight")]
    assert float(np.abs(grads[0].asnumpy()).sum()) > 0.0, "no gradient reached the int8 stem"
    args, aux = mod.get_params()
    csym, cargs, caux = binmx.convert(sym, args, aux, fold=True)
    ref = (
        csym.bind(
            mx.cpu(),
            {**cargs, "data": mx.nd.array(x), "softmax_label": mx.nd.zeros(shape[0])},
            aux_states=caux,
        )
        .forward()[0]
        .asnumpy()
    )
    runtime = pytest.importorskip("binmx_runtime", reason="needs the binmx-runtime distribution")
    prefix = str(tmp_path / "m")
    mx.model.save_checkpoint(prefix, 1, csym, cargs, caux)
    got = runtime.load(prefix, 1, input_shape=shape, threads=1).run(x)
    assert (got.argmax(1) == ref.argmax(1)).all()
    s = binmx.summary(sym, shape)
    assert {layer.name: layer.kernel for layer in s.layers}[first] == "int8"


def test_runtime_kbit_conv_folds_a_batchnorm(rng, tmp_path):
    """QConvolution(8, 8) -> BatchNorm -> relu -> max-pool (the int8 ResNet stem) is one runtime
    layer; the BatchNorm goes into alpha and bias."""
    runtime = pytest.importorskip("binmx_runtime", reason="needs the binmx-runtime distribution")
    x = rng.uniform(0.0, 1.0, (1, 3, 30, 30)).astype(np.float32)
    w = rng.standard_normal((16, 3, 7, 7)).astype(np.float32)
    net = mx.sym.QConvolution(
        mx.sym.var("data"),
        kernel=(7, 7),
        stride=(2, 2),
        pad=(3, 3),
        num_filter=16,
        act_bit=8,
        weight_bit=8,
        no_bias=True,
        name="q",
    )
    net = mx.sym.BatchNorm(net, fix_gamma=False, name="bn")
    net = mx.sym.Activation(net, act_type="relu", name="r")
    net = mx.sym.Pooling(net, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max", name="p")
    args = {
        "q_weight": w,
        "bn_gamma": rng.uniform(-2, 2, 16).astype(np.float32),
        "bn_beta": rng.standard_normal(16).astype(np.float32),
    }
    aux = {
        "bn_moving_mean": rng.standard_normal(16).astype(np.float32),
        "bn_moving_var": rng.uniform(0.5, 2.0, 16).astype(np.float32),
    }
    ex = net.simple_bind(mx.cpu(), data=x.shape, grad_req="null")
    for k, v in {**args, **aux}.items():
        (ex.arg_dict if k in ex.arg_dict else ex.aux_dict)[k][:] = v
    want = ex.forward(is_train=False, data=mx.nd.array(x))[0].asnumpy()
    prefix = str(tmp_path / "m")
    mx.model.save_checkpoint(
        prefix,
        1,
        net,
        {k: mx.nd.array(v) for k, v in args.items()},
        {k: mx.nd.array(v) for k, v in aux.items()},
    )
    model = runtime.load(prefix, 1, input_shape=x.shape, threads=1)
    got = model.run(x)
    assert len(model.layers()) == 1, "BatchNorm / relu / pool not fused"
    # Folding rounds alpha * s once and skips the float rounding of the conv output before the
    # BatchNorm: a few float32 ulps of the largest output.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))
