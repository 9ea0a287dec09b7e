"""Models the binmx runtime is checked on (tests/test_runtime.py, tools/make_runtime_fixtures.py).

Each case is a symbol and an input shape; :func:`build` gives it random weights with BatchNorm
statistics far from the identity (gamma, beta ~ N(0, 1), moving mean ~ N(0, 0.3), moving var
~ U(0.2, 3)) and converts it the way a user would (``binmx.convert``, folded or not, or left
unconverted). :func:`mxnet_output` is MXNet + binmx's forward of the same files.
"""

from __future__ import annotations

import json
import os

import binmx  # noqa: F401  (loads the operators and the mx.sym wrappers)
import mxnet as mx
import numpy as np
from binmx import models
from binmx.converter import convert, run_model


def _with_label(sym: mx.sym.Symbol) -> bool:
    return "softmax_label" in sym.list_arguments()


def random_params(sym: mx.sym.Symbol, data_shape: tuple[int, ...], seed: int):
    rng = np.random.default_rng(seed)
    label = _with_label(sym)
    mod = mx.mod.Module(sym, context=mx.cpu(), label_names=["softmax_label"] if label else None)
    mod.bind(
        data_shapes=[("data", data_shape)],
        label_shapes=[("softmax_label", (data_shape[0],))] if label else None,
        for_training=False,
    )
    mx.random.seed(seed)
    mod.init_params(mx.init.Xavier())
    args, aux = mod.get_params()
    for k, v in args.items():
        if k.endswith(("_gamma", "_beta")):
            args[k] = mx.nd.array(rng.standard_normal(v.shape).astype(np.float32))
        elif k.endswith(("_alpha_prelu", "prelu_gamma")):
            args[k] = mx.nd.array(rng.uniform(0.05, 0.5, v.shape).astype(np.float32))
    for k, v in aux.items():
        if k.endswith("_moving_mean"):
            aux[k] = mx.nd.array(rng.standard_normal(v.shape).astype(np.float32) * 0.3)
        elif k.endswith("_moving_var"):
            aux[k] = mx.nd.array(rng.uniform(0.2, 3.0, v.shape).astype(np.float32))
    return args, aux


def bmxnet_ops_net() -> mx.sym.Symbol:
    """The float operators of BMXNet-era symbol files, each attribute form the runtime takes."""
    data = mx.sym.var("data")  # (N, 4, 9, 9)
    c1 = mx.sym.Convolution(
        data, kernel=(3, 3), pad=(2, 2), dilate=(2, 2), num_filter=8, num_group=2, name="c1"
    )
    b1 = mx.sym.BatchNorm(c1, fix_gamma=False, use_global_stats=True, eps=1e-3, name="b1")
    a1 = mx.sym.Activation(b1, act_type="sigmoid", name="a1")
    a2 = mx.sym.Activation(b1, act_type="tanh", name="a2")
    a3 = mx.sym.Activation(b1, act_type="softrelu", name="a3")
    a4 = mx.sym.Activation(b1, act_type="softsign", name="a4")
    s1 = mx.sym.elemwise_add(a1, a2, name="s1")
    s2 = mx.sym._internal._Plus(a3, a4, name="s2")
    l1 = mx.sym.LeakyReLU(s1, act_type="leaky", slope=0.1, name="l1")
    l2 = mx.sym.LeakyReLU(s2 - 1.0, act_type="prelu", name="l2")
    l3 = mx.sym.LeakyReLU(b1, act_type="elu", slope=0.3, name="l3")
    cat = mx.sym.Concat(l1, l2, l3, dim=1, name="cat")  # 24 channels
    p1 = mx.sym.Pooling(
        cat,
        kernel=(3, 3),
        stride=(2, 2),
        pad=(1, 1),
        pool_type="max",
        pooling_convention="full",
        name="p1",
    )
    p2 = mx.sym.Pooling(
        cat,
        kernel=(3, 3),
        stride=(2, 2),
        pad=(1, 1),
        pool_type="avg",
        count_include_pad=False,
        name="p2",
    )
    p3 = mx.sym.Pooling(cat, kernel=(2, 2), stride=(2, 2), pool_type="sum", name="p3")
    p4 = mx.sym.Pooling(cat, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="avg", name="p4")
    g = mx.sym.Pooling(cat, global_pool=True, kernel=(1, 1), pool_type="avg", name="g")
    bsum = mx.sym.broadcast_add(p4, g, name="bsum")
    r = mx.sym.relu(mx.sym.Activation(bsum, act_type="relu", name="r0"), name="r1")
    t = mx.sym.transpose(mx.sym.Dropout(r, p=0.5, name="drop"), axes=(0, 2, 3, 1), name="t")
    seq = mx.sym.Reshape(t, shape=(0, -1, 24), name="seq")  # (N, 25, 24)
    fc_seq = mx.sym.FullyConnected(seq, num_hidden=6, flatten=False, name="fc_seq")
    sm = mx.sym.softmax(fc_seq, axis=-1, name="sm")
    flat = mx.sym.Concat(
        mx.sym.Flatten(p1),
        mx.sym.Flatten(p2),
        mx.sym.Flatten(p3),
        mx.sym.Flatten(sm),
        dim=1,
        name="flat",
    )
    cl = mx.sym.clip(flat, a_min=-0.5, a_max=2.0, name="cl")
    fc = mx.sym.FullyConnected(cl, num_hidden=12, name="fc")
    sa = mx.sym.SoftmaxActivation(
        mx.sym.Reshape(fc, shape=(0, 3, 4), name="r3"), mode="channel", name="sa"
    )
    fc2 = mx.sym.FullyConnected(sa, num_hidden=7, name="fc2")
    return mx.sym.SoftmaxOutput(fc2, name="softmax")


def more_ops_net() -> mx.sym.Symbol:
    """Reshape codes, the other LeakyReLU forms, scalar and broadcast arithmetic, global max
    pooling, softmax with a temperature, default transpose axes."""
    data = mx.sym.var("data")  # (N, 6, 5, 4)
    x = mx.sym.Convolution(data, kernel=(1, 1), num_filter=6, name="c0")
    r1 = mx.sym.Reshape(x, shape=(0, -3, 4), name="r1")  # (N, 30, 4)
    r2 = mx.sym.Reshape(r1, shape=(0, -4, 3, -1, -2), name="r2")  # (N, 3, 10, 4)
    r3 = mx.sym.Reshape(r2, shape=(-1, 0), reverse=True, name="r3")  # (N*3*10, 4) -> reverse
    g = mx.sym.LeakyReLU(r3, act_type="gelu", name="gelu")
    se = mx.sym.LeakyReLU(r3, act_type="selu", name="selu")
    rr = mx.sym.LeakyReLU(r3, act_type="rrelu", lower_bound=0.1, upper_bound=0.3, name="rrelu")
    a = mx.sym.elemwise_sub(g, se, name="sub") * 0.5 + 1.0
    b = mx.sym.elemwise_mul(rr[0], a, name="mul") / 2.0 - 0.25
    c = 3.0 - b
    back = mx.sym.Reshape(c, shape=(-1, 6, 5, 4), name="back")
    gm = mx.sym.Pooling(back, global_pool=True, kernel=(1, 1), pool_type="max", name="gmax")
    bm = mx.sym.broadcast_mul(back, gm, name="bmul")
    bs = mx.sym.broadcast_sub(
        bm, mx.sym.Pooling(back, kernel=(5, 4), pool_type="avg", name="pa"), name="bsub"
    )
    t = mx.sym.transpose(bs, name="tdef")  # (4, 5, 6, N): default axes reverse
    t = mx.sym.transpose(t, name="tback")
    sm = mx.sym.softmax(t, axis=1, temperature=2.5, name="smt")
    return mx.sym.SoftmaxOutput(mx.sym.Flatten(sm * 4.0), name="softmax")


def qops_net() -> mx.sym.Symbol:
    """binmx's operators with every attribute: k-bit layers (packed when converted), pad_value,
    scaling_factor, groups, dilation and stride on 1-bit layers, QActivation forms."""
    data = mx.sym.var("data")  # (N, 6, 11, 11)
    x = mx.sym.BatchNorm(data, fix_gamma=False, name="bn0")
    q2 = mx.sym.QActivation(x, act_bit=2, name="qa2")
    k1 = mx.sym.QConvolution(
        q2,
        kernel=(3, 3),
        pad=(1, 1),
        num_filter=8,
        act_bit=2,
        weight_bit=2,
        scaling_factor=True,
        name="k1",
    )
    k2 = mx.sym.QConvolution(
        k1,
        kernel=(3, 3),
        pad=(1, 1),
        num_filter=8,
        act_bit=4,
        weight_bit=3,
        pad_value=1,
        no_bias=True,
        name="k2",
    )
    b = mx.sym.BatchNorm(k2, fix_gamma=False, name="bn1")
    s = mx.sym.QActivation(b, act_bit=1, name="qa1")
    c1 = mx.sym.QConvolution(
        s,
        kernel=(3, 3),
        pad=(2, 2),
        dilate=(2, 2),
        stride=(2, 2),
        num_filter=10,
        num_group=2,
        pad_value=1,
        scaling_factor=True,
        name="c1",
    )
    c2 = mx.sym.QConvolution(
        mx.sym.QActivation(c1, backward_only=True, name="qb"),
        kernel=(3, 3),
        pad=(1, 1),
        num_filter=70,
        pad_value=-1,
        no_bias=True,
        name="c2",
    )
    c3 = mx.sym.QConvolution(c2, kernel=(1, 1), num_filter=65, act_bit=32, weight_bit=1, name="c3")
    f1 = mx.sym.QFullyConnected(
        mx.sym.Flatten(c3), num_hidden=33, act_bit=4, weight_bit=3, scaling_factor=True, name="f1"
    )
    f2 = mx.sym.QFullyConnected(f1, num_hidden=17, scaling_factor=True, name="f2")
    f3 = mx.sym.QFullyConnected(f2, num_hidden=5, act_bit=8, weight_bit=8, no_bias=True, name="f3")
    return mx.sym.SoftmaxOutput(f3, name="softmax")


def kbit_net() -> mx.sym.Symbol:
    """k-bit layers the converter packs (docs/design.md §2), one per (act_bit, weight_bit) pair
    of the integer kernels -- (2, 1), (2, 2), (3, 3), (4, 2), (8, 8) -- with groups, stride,
    dilation, pad_value +-1 and scaling_factor, dense layers, and two float-path layers
    (act_bit 1 with 3-bit weights, act_bit 32 with 1-bit weights)."""
    data = mx.sym.var("data")  # (N, 8, 12, 12)
    x = mx.sym.BatchNorm(data, fix_gamma=False, name="bn0")
    x = mx.sym.QConvolution(
        x,
        kernel=(3, 3),
        pad=(1, 1),
        num_filter=16,
        num_group=2,
        act_bit=2,
        weight_bit=1,
        pad_value=-1,
        scaling_factor=True,
        name="q21",
    )
    x = mx.sym.QConvolution(
        x,
        kernel=(3, 3),
        pad=(1, 1),
        stride=(2, 2),
        num_filter=24,
        act_bit=2,
        weight_bit=2,
        pad_value=1,
        no_bias=True,
        name="q22",
    )
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn1")
    x = mx.sym.QConvolution(
        x,
        kernel=(3, 3),
        pad=(2, 2),
        dilate=(2, 2),
        num_filter=20,
        act_bit=3,
        weight_bit=3,
        scaling_factor=True,
        name="q33",
    )
    x = mx.sym.QConvolution(
        x,
        kernel=(1, 3),
        pad=(0, 1),
        num_filter=12,
        num_group=4,
        act_bit=4,
        weight_bit=2,
        name="q42",
    )
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn2")
    x = mx.sym.QConvolution(
        x,
        kernel=(3, 3),
        pad=(1, 1),
        num_filter=10,
        act_bit=8,
        weight_bit=8,
        scaling_factor=True,
        pad_value=1,
        name="q88",
    )
    x = mx.sym.QConvolution(
        x, kernel=(3, 3), pad=(1, 1), num_filter=9, act_bit=1, weight_bit=3, name="q13"
    )
    x = mx.sym.QConvolution(x, kernel=(1, 1), num_filter=7, act_bit=32, weight_bit=1, name="qf1")
    x = mx.sym.Flatten(x)
    x = mx.sym.QFullyConnected(
        x, num_hidden=33, act_bit=8, weight_bit=8, scaling_factor=True, name="d88"
    )
    x = mx.sym.QFullyConnected(x, num_hidden=19, act_bit=2, weight_bit=2, name="d22")
    x = mx.sym.QFullyConnected(
        x, num_hidden=5, act_bit=4, weight_bit=1, no_bias=True, scaling_factor=True, name="d41"
    )
    return mx.sym.SoftmaxOutput(x, name="softmax")


def gluon_net(tmpdir: str) -> mx.sym.Symbol:
    """A hybridized binmx.gluon network, exported and read back as a symbol."""
    from binmx.gluon import QActivation, QConv2D, QDense
    from mxnet.gluon import nn

    net = nn.HybridSequential(prefix="g_")
    with net.name_scope():
        net.add(nn.Conv2D(16, 3, padding=1, in_channels=3))
        net.add(nn.BatchNorm())
        net.add(QActivation())
        net.add(QConv2D(32, 3, padding=1, in_channels=16, scaling_factor=True))
        net.add(nn.BatchNorm())
        net.add(QActivation())
        net.add(QConv2D(32, 3, strides=2, padding=1, in_channels=32))
        net.add(nn.BatchNorm())
        net.add(nn.Activation("relu"))
        net.add(nn.GlobalAvgPool2D())
        net.add(QDense(10, in_units=32))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 3, 16, 16)))
    path = os.path.join(tmpdir, "gluon_export")
    net.export(path, epoch=0)
    return mx.sym.load(path + "-symbol.json")


# name -> (symbol factory, input shape, conversion: "fold" | "convert" | "none")
CASES = {
    "lenet_fold": (lambda d: models.binary_lenet(), (2, 1, 28, 28), "fold"),
    "lenet_convert": (lambda d: models.binary_lenet(), (2, 1, 28, 28), "convert"),
    "lenet_float_weights": (lambda d: models.binary_lenet(), (1, 1, 28, 28), "none"),
    "resnet_cifar_fold": (
        lambda d: models.resnet(depth=18, num_classes=10, image_shape=(3, 32, 32), width=16),
        (2, 3, 32, 32),
        "fold",
    ),
    "resnet_imagenet_fold": (
        lambda d: models.resnet(depth=18, num_classes=10, image_shape=(3, 64, 64), width=16),
        (1, 3, 64, 64),
        "fold",
    ),
    "resnet_imagenet_convert": (
        lambda d: models.resnet(depth=10, num_classes=10, image_shape=(3, 64, 64), width=16),
        (2, 3, 64, 64),
        "convert",
    ),
    "bmxnet_ops": (lambda d: bmxnet_ops_net(), (2, 4, 9, 9), "none"),
    "more_ops": (lambda d: more_ops_net(), (2, 6, 5, 4), "none"),
    "qops_fold": (lambda d: qops_net(), (2, 6, 11, 11), "fold"),
    "qops_none": (lambda d: qops_net(), (2, 6, 11, 11), "none"),
    "gluon_fold": (gluon_net, (2, 3, 16, 16), "fold"),
    "kbit_convert": (lambda d: kbit_net(), (2, 8, 12, 12), "convert"),
}


def build(name: str, tmpdir: str, seed: int = 0):
    """(sym, args, aux, data_shape) of a case, converted as the case says."""
    factory, shape, mode = CASES[name]
    sym = factory(tmpdir)
    args, aux = random_params(sym, shape, seed)
    if mode != "none":
        sym, args, aux = convert(sym, args, aux, fold=(mode == "fold"))
    return sym, args, aux, shape


def save(prefix: str, sym, args, aux, epoch: int = 1) -> None:
    mx.model.save_checkpoint(prefix, epoch, sym, args, aux)


def mxnet_output(sym, args, aux, x: np.ndarray) -> np.ndarray:
    inputs = {"data": x}
    if _with_label(sym):
        inputs["softmax_label"] = np.zeros(x.shape[0], np.float32)
    return run_model(sym, args, aux, inputs)[0]


def ops_of(sym) -> list[str]:
    return [n["op"] for n in json.loads(sym.tojson())["nodes"] if n["op"] != "null"]
