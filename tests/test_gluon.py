"""Call forms of the Q ops: mx.sym wrappers, Module, autograd, Gluon blocks, export/import."""

from __future__ import annotations

import binmx
import mxnet as mx
import numpy as np
import pytest
from binmx import reference as ref
from binmx.gluon import QActivation, QConv2D, QDense


def _sgn(a: np.ndarray) -> np.ndarray:
    return np.where(a >= 0, np.float32(1), np.float32(-1))


def test_sym_call_forms_create_variables_like_convolution():
    data = mx.sym.var("data")
    a = mx.sym.QConvolution(data=data, kernel=(3, 3), num_filter=8, name="c1")
    assert a.list_arguments() == ["data", "c1_weight", "c1_bias"]
    b = mx.sym.QConvolution(data, kernel=(3, 3), num_filter=8, no_bias=True)
    assert b.name.startswith("qconvolution") and b.list_arguments()[1].endswith("_weight")
    c = mx.sym.QConvolution(
        data,
        kernel=(1, 1),
        num_filter=4,
        binarized_weights_only=True,
        scaling_factor=True,
        name="p",
    )
    assert c.list_arguments() == ["data", "p_weight", "p_bias", "p_alpha"]
    args, outs, _ = c.infer_shape(data=(2, 70, 5, 5))
    assert args[1] == (4, 1, 1, 2) and outs[0] == (2, 4, 5, 5)
    _, types, _ = c.infer_type(data=np.float32)
    assert types == [np.float32]
    w = mx.sym.var("w")
    d = mx.sym.QFullyConnected(data=data, weight=w, num_hidden=3, no_bias=True, name="fc")
    assert d.list_arguments() == ["data", "w"]
    with mx.name.Prefix("net_"):
        e = mx.sym.QActivation(data=data, act_bit=1, backward_only=True)
    assert e.name.startswith("net_qactivation")
    assert e.attr("backward_only") == "True"
    with pytest.raises(ValueError, match="both positionally and as a keyword"):
        mx.sym.QConvolution(data, data=data, kernel=(3, 3), num_filter=2)


def test_symbol_json_roundtrip_keeps_qconvolution_nodes():
    data = mx.sym.var("data")
    net = mx.sym.QConvolution(data, kernel=(3, 3), num_filter=4, pad=(1, 1), act_bit=1, name="qc")
    js = net.tojson()
    assert '"op": "QConvolution"' in js
    back = mx.sym.load_json(js)
    assert back.list_arguments() == net.list_arguments()
    assert back.infer_shape(data=(1, 3, 6, 6))[1] == [(1, 4, 6, 6)]


def test_module_forward_backward_matches_reference(rng):
    data = mx.sym.var("data")
    net = mx.sym.QConvolution(data, kernel=(3, 3), num_filter=5, pad=(1, 1), name="qc")
    net = mx.sym.QFullyConnected(net, num_hidden=4, name="qf")
    mod = mx.mod.Module(net, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", (2, 3, 6, 6))], inputs_need_grad=True)
    mod.init_params(mx.init.Normal(1.0))
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    mod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=True)
    out = mod.get_outputs()[0].asnumpy()
    args, _ = mod.get_params()
    h = ref.q_conv2d(x, args["qc_weight"].asnumpy(), args["qc_bias"].asnumpy(), pad=(1, 1))
    want = ref.q_dense(h.astype(np.float32), args["qf_weight"].asnumpy(), args["qf_bias"].asnumpy())
    # integer-valued conv output + float32 bias, then a second layer: float32 rounding only
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    mod.backward([mx.nd.ones(out.shape)])
    assert mod.get_input_grads()[0].shape == x.shape


def test_autograd_and_gluon_hybridize_agree(rng):
    """One net, the same parameters: imperative and hybridized forward/backward agree."""
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    net = mx.gluon.nn.HybridSequential()
    with net.name_scope():
        net.add(
            QActivation(backward_only=True),
            QConv2D(6, 3, padding=1, in_channels=3),
            mx.gluon.nn.BatchNorm(),
            QActivation(),
            QDense(5),
        )
    net.initialize(mx.init.Normal(1.0))
    results = []
    for hybrid in (False, True):
        if hybrid:
            net.hybridize()
        xa = mx.nd.array(x)
        xa.attach_grad()
        with mx.autograd.record():
            y = net(xa)
        y.backward()
        grads = {
            k: v.grad().asnumpy() for k, v in net.collect_params().items() if v.grad_req != "null"
        }
        results.append((y.asnumpy(), xa.grad.asnumpy(), grads))
    (y0, g0, w0), (y1, g1, w1) = results
    conv_w = next(v for k, v in net.collect_params().items() if k.endswith("conv2d0_weight"))
    assert conv_w.shape == (6, 3, 3, 3)
    assert y0.shape == (2, 5) and g0.shape == x.shape
    # The same operators on the same values in both modes; BatchNorm's float reductions may be
    # scheduled differently in the cached graph, so allow float32 rounding (relative 1e-5).
    np.testing.assert_allclose(y1, y0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-5)
    assert w0.keys() == w1.keys() and w0
    for k in w0:
        np.testing.assert_allclose(w1[k], w0[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert np.abs(g0).sum() > 0  # the STE passes gradient through to the input


def test_gluon_conv_matches_convolution_and_exports(tmp_path, rng):
    net = QConv2D(8, (3, 3), strides=1, padding=(1, 1), in_channels=5, use_bias=True)
    net.initialize(mx.init.Normal(1.0))
    net.hybridize()
    x = rng.standard_normal((2, 5, 7, 7)).astype(np.float32)
    y = net(mx.nd.array(x)).asnumpy()
    w, b = net.weight.data().asnumpy(), net.bias.data().asnumpy()
    want = (
        mx.nd.Convolution(
            mx.nd.array(_sgn(x)),
            mx.nd.array(_sgn(w)),
            kernel=(3, 3),
            pad=(1, 1),
            num_filter=8,
            no_bias=True,
        ).asnumpy()
        + b[:, None, None]
    )
    np.testing.assert_array_equal(y, want)
    prefix = str(tmp_path / "qnet")
    net.export(prefix)
    with open(prefix + "-symbol.json") as f:
        js = f.read()
    assert '"op": "QConvolution"' in js
    back = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
    np.testing.assert_array_equal(back(mx.nd.array(x)).asnumpy(), y)


def test_gluon_packed_blocks_match_float_blocks(rng):
    x = rng.standard_normal((3, 70, 5, 5)).astype(np.float32)
    fnet = QConv2D(4, 3, padding=1, in_channels=70, scaling_factor=True)
    fnet.initialize(mx.init.Normal(1.0))
    pnet = QConv2D(
        4, 3, padding=1, in_channels=70, scaling_factor=True, binarized_weights_only=True
    )
    pnet.initialize()
    w = fnet.weight.data()
    pnet.weight.set_data(binmx.pack_weight(w))
    pnet.bias.set_data(fnet.bias.data())
    pnet.alpha.set_data(mx.nd.array(ref.scaling_alpha(w.asnumpy())))
    pnet.hybridize()
    # alpha: float64 mean rounded to float32, summation order may differ by 1 ulp
    np.testing.assert_allclose(
        pnet(mx.nd.array(x)).asnumpy(), fnet(mx.nd.array(x)).asnumpy(), rtol=2e-6, atol=1e-6
    )
    dense_f = QDense(3, in_units=70 * 25, use_bias=False)
    dense_f.initialize(mx.init.Normal(1.0))
    dense_p = QDense(3, in_units=70 * 25, use_bias=False, binarized_weights_only=True)
    dense_p.initialize()
    dense_p.weight.set_data(binmx.pack_weight(dense_f.weight.data()))
    np.testing.assert_array_equal(
        dense_p(mx.nd.array(x)).asnumpy(), dense_f(mx.nd.array(x)).asnumpy()
    )


def test_gluon_argument_errors():
    with pytest.raises(ValueError, match="act_bit"):
        QConv2D(4, 3, act_bit=0)
    with pytest.raises(ValueError, match="pad_value"):
        QConv2D(4, 3, pad_value=2)
    with pytest.raises(ValueError, match="binarized_weights_only"):
        QDense(4, act_bit=12, binarized_weights_only=True)
    with pytest.raises(ValueError, match="kernel_size"):
        QConv2D(4, (3, 3, 3))


def _bmxnet_lenet() -> mx.sym.Symbol:
    """BMXNet's binary LeNet (smd_hpi/examples/binary_mnist style), written as BMXNet did."""
    data = mx.sym.Variable("data")
    conv1 = mx.sym.Convolution(data=data, kernel=(5, 5), num_filter=16)
    bn1 = mx.sym.BatchNorm(data=conv1)
    tanh1 = mx.sym.Activation(data=bn1, act_type="tanh")
    pool1 = mx.sym.Pooling(data=tanh1, pool_type="max", kernel=(2, 2), stride=(2, 2))
    bn2 = mx.sym.BatchNorm(data=pool1)
    ba1 = mx.sym.QActivation(data=bn2, act_bit=1, backward_only=True)
    conv2 = mx.sym.QConvolution(data=ba1, kernel=(5, 5), num_filter=32, act_bit=1)
    bn3 = mx.sym.BatchNorm(data=conv2)
    pool2 = mx.sym.Pooling(data=bn3, pool_type="max", kernel=(2, 2), stride=(2, 2))
    flatten = mx.sym.Flatten(data=pool2)
    bn4 = mx.sym.BatchNorm(data=flatten)
    ba2 = mx.sym.QActivation(data=bn4, act_bit=1, backward_only=True)
    fc1 = mx.sym.QFullyConnected(data=ba2, num_hidden=64, act_bit=1)
    bn5 = mx.sym.BatchNorm(data=fc1)
    tanh3 = mx.sym.Activation(data=bn5, act_type="tanh")
    fc2 = mx.sym.FullyConnected(data=tanh3, num_hidden=10)
    return mx.sym.SoftmaxOutput(data=fc2, name="softmax")


@pytest.mark.slow
def test_bmxnet_lenet_trains_with_module(rng):
    # Synthetic 10-class digits: a fixed random template per class plus noise.
    templates = rng.standard_normal((10, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 512)
    images = templates[labels] + 0.5 * rng.standard_normal((512, 1, 28, 28)).astype(np.float32)
    it = mx.io.NDArrayIter(images, labels.astype(np.float32), batch_size=64, shuffle=False)
    mod = mx.mod.Module(_bmxnet_lenet(), data_names=["data"], label_names=["softmax_label"])
    mod.bind(data_shapes=it.provide_data, label_shapes=it.provide_label)
    mx.random.seed(int(rng.integers(1 << 30)))
    mod.init_params(mx.init.Xavier())
    mod.init_optimizer(optimizer="adam", optimizer_params={"learning_rate": 2e-3})
    metric = mx.metric.CrossEntropy()
    losses = []
    for _epoch in range(3):
        it.reset()
        metric.reset()
        for batch in it:
            mod.forward(batch, is_train=True)
            mod.update_metric(metric, batch.label)
            mod.backward()
            mod.update()
        losses.append(metric.get()[1])
    assert losses[-1] < 0.7 * losses[0], f"cross-entropy per epoch: {losses}"


def test_shapeless_json_variables_bind(tmp_path):
    """BMXNet-style JSON (no __shape__ on weights) loads and binds; 2-D data used to crash
    MXNet's extension-op shape inference (unknown-rank inputs overrun its buffer)."""
    data = mx.sym.var("data")
    raw_fc = binmx.ops._RAW["QFullyConnected"][1]
    raw_conv = binmx.ops._RAW["QConvolution"][1]
    c = raw_conv(
        data, mx.sym.var("c_weight"), mx.sym.var("c_bias"), kernel="(3, 3)", num_filter="4"
    )
    f = raw_fc(mx.sym.Flatten(c), mx.sym.var("f_weight"), mx.sym.var("f_bias"), num_hidden="3")
    path = str(tmp_path / "net-symbol.json")
    f.save(path)
    with open(path) as fh:
        assert "__shape__" not in fh.read()
    loaded = mx.sym.load(path)
    mod = mx.mod.Module(loaded, data_names=["data"], label_names=None)
    mod.bind(data_shapes=[("data", (2, 5, 6, 6))])
    mod.init_params()
    mod.forward(mx.io.DataBatch([mx.nd.ones((2, 5, 6, 6))]), is_train=False)
    assert mod.get_outputs()[0].shape == (2, 3)
