"""BatchNorm folding (binmx.fold): graphs lose their BatchNorms, outputs stay the same."""

from __future__ import annotations

import json
import os
from pathlib import Path

import binmx
import mxnet as mx
import numpy as np
import pytest
from binmx.converter import run_model
from binmx.converter_cli import main as converter_main
from test_converter import bmxnet_lenet


def random_params(
    sym: mx.sym.Symbol,
    data_shape: tuple[int, ...],
    rng: np.random.Generator,
    label: bool = True,
) -> tuple[dict, dict]:
    """Xavier weights and BatchNorm parameters/statistics far from the identity (label: the
    network ends in a SoftmaxOutput reading `softmax_label`)."""
    mod = mx.mod.Module(sym, context=mx.cpu(), label_names=["softmax_label"] if label else None)
    mod.bind(
        data_shapes=[("data", data_shape)],
        label_shapes=[("softmax_label", (data_shape[0],))] if label else None,
        for_training=False,
    )
    mx.random.seed(int(rng.integers(0, 2**31)))
    mod.init_params(mx.init.Xavier())
    args, aux = mod.get_params()
    for k, v in args.items():
        if k.endswith(("_gamma", "_beta")):
            args[k] = mx.nd.array(rng.standard_normal(v.shape).astype(np.float32))
    for k, v in aux.items():
        if k.endswith("_moving_mean"):
            aux[k] = mx.nd.array(rng.standard_normal(v.shape).astype(np.float32) * 0.3)
        elif k.endswith("_moving_var"):
            aux[k] = mx.nd.array(rng.uniform(0.2, 3.0, v.shape).astype(np.float32))
    return args, aux


def ops_of(sym: mx.sym.Symbol) -> list[str]:
    return [n["op"] for n in json.loads(sym.tojson())["nodes"] if n["op"] != "null"]


def outputs(sym, args, aux, x):
    return run_model(sym, args, aux, {"data": x, "softmax_label": np.zeros(len(x), np.float32)})


def preact_block_net() -> mx.sym.Symbol:
    """Float stem, then a pre-activation downsampling unit whose first BatchNorm feeds both the
    3x3 binary conv and the 1x1 binary shortcut (BMXNet's ResNet layout), then a dim-matching
    unit, then global pooling and a float classifier."""
    x = mx.sym.Convolution(
        mx.sym.var("data"), kernel=(3, 3), pad=(1, 1), num_filter=32, name="conv0"
    )

    def unit(x, f, stride, match, name):
        bn1 = mx.sym.BatchNorm(x, fix_gamma=False, eps=2e-5, name=f"{name}_bn1")
        a1 = mx.sym.QActivation(bn1, backward_only=True, name=f"{name}_qa1")
        c1 = mx.sym.QConvolution(
            a1,
            kernel=(3, 3),
            stride=(stride, stride),
            pad=(1, 1),
            num_filter=f,
            no_bias=True,
            name=f"{name}_conv1",
        )
        bn2 = mx.sym.BatchNorm(c1, fix_gamma=False, eps=2e-5, name=f"{name}_bn2")
        a2 = mx.sym.QActivation(bn2, backward_only=True, name=f"{name}_qa2")
        c2 = mx.sym.QConvolution(
            a2, kernel=(3, 3), pad=(1, 1), num_filter=f, no_bias=True, name=f"{name}_conv2"
        )
        sc = (
            x
            if match
            else mx.sym.QConvolution(
                a1,
                kernel=(1, 1),
                stride=(stride, stride),
                num_filter=f,
                no_bias=True,
                name=f"{name}_sc",
            )
        )
        return c2 + sc

    x = unit(x, 64, 2, False, "u1")
    x = unit(x, 64, 1, True, "u2")
    x = mx.sym.BatchNorm(x, fix_gamma=False, name="bn_final")
    x = mx.sym.Activation(x, act_type="relu")
    x = mx.sym.Pooling(x, global_pool=True, kernel=(1, 1), pool_type="avg")
    x = mx.sym.FullyConnected(mx.sym.Flatten(x), num_hidden=10, name="fc")
    return mx.sym.SoftmaxOutput(x, name="softmax")


def test_fold_lenet(rng: np.random.Generator) -> None:
    sym = bmxnet_lenet()
    args, aux = random_params(sym, (4, 1, 28, 28), rng)
    csym, cargs, caux = binmx.convert(sym, args, aux)
    fsym, fargs, faux = binmx.fold(csym, cargs, caux)
    assert ops_of(fsym) == [
        "Convolution",
        "Activation",
        "Pooling",
        "transpose",  # the oneDNN max-pool's output handed over as NHWC (pass 9)
        "QNHWCToNCHW",
        "QConvolution",
        "Pooling",
        "Flatten",
        "QFullyConnected",
        "Activation",
        "FullyConnected",
        "SoftmaxOutput",
    ]
    assert faux == {}
    assert fargs["qconv2_in_scale"].shape == (64,)
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    before = outputs(sym, args, aux, x)[0]
    after = outputs(fsym, fargs, faux, x)[0]
    # BatchNorm as one affine map rounds differently from normalise-then-scale; a sign can
    # only flip where the BatchNorm output is within rounding of 0 (checked separately).
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)
    assert np.array_equal(after.argmax(1), before.argmax(1))


def test_fold_preact_resnet_units(rng: np.random.Generator) -> None:
    sym = preact_block_net()
    args, aux = random_params(sym, (2, 3, 16, 16), rng)
    csym, cargs, caux = binmx.convert(sym, args, aux)
    fsym, fargs, faux = binmx.fold(csym, cargs, caux)
    ops = ops_of(fsym)
    # bn1/bn2 of both units fold into the binary convs (the downsampling unit's bn1 feeds the
    # 3x3 conv and the 1x1 shortcut: both take it as input affine); bn_final and its relu,
    # reading the last binary conv's plain output, become one QChannelAffine (pass 7).
    assert ops.count("BatchNorm") == 0
    assert ops.count("QChannelAffine") == 1 and "Activation" not in ops
    assert ops.count("QActivation") == 0
    assert ops.count("QConvolution") == 5
    assert "u1_sc_in_scale" in fargs and "u1_conv1_in_scale" in fargs
    x = rng.standard_normal((8, 3, 16, 16)).astype(np.float32)
    before = outputs(sym, args, aux, x)[0]
    after = outputs(fsym, fargs, faux, x)[0]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)
    assert np.array_equal(after.argmax(1), before.argmax(1))


def test_sign_flips_only_at_rounding_of_zero(rng: np.random.Generator) -> None:
    """The folded threshold x * scale + shift < 0 against MXNet's own BatchNorm output."""
    sym = preact_block_net()
    args, aux = random_params(sym, (2, 3, 16, 16), rng)
    csym, cargs, caux = binmx.convert(sym, args, aux)
    _, fargs, _ = binmx.fold(csym, cargs, caux)
    x = rng.standard_normal((8, 3, 16, 16)).astype(np.float32)
    nd = {**args, **aux}
    conv0_nd = mx.nd.Convolution(
        mx.nd.array(x),
        nd["conv0_weight"],
        nd["conv0_bias"],
        kernel=(3, 3),
        pad=(1, 1),
        num_filter=32,
    )
    bn = mx.nd.BatchNorm(
        conv0_nd,
        nd["u1_bn1_gamma"],
        nd["u1_bn1_beta"],
        nd["u1_bn1_moving_mean"],
        nd["u1_bn1_moving_var"],
        fix_gamma=False,
        eps=2e-5,
        use_global_stats=True,
    ).asnumpy()  # MXNet's own BatchNorm
    conv0 = conv0_nd.asnumpy()
    scale = fargs["u1_conv1_in_scale"].asnumpy()[None, :, None, None]
    shift = fargs["u1_conv1_in_shift"].asnumpy()[None, :, None, None]
    folded_bits = conv0 * scale + shift < 0
    assert 0.2 < folded_bits.mean() < 0.8  # a real mix of +1 and -1, not a degenerate case
    flips = folded_bits != (bn < 0)
    assert np.all(np.abs(bn[flips]) <= 1e-5 * (1 + np.abs(conv0[flips] * scale)[0])), (
        np.argwhere(flips)[:5],
        bn[flips][:5],
    )


def test_fold_keeps_batchnorm_with_other_readers(rng: np.random.Generator) -> None:
    data = mx.sym.var("data")
    bn = mx.sym.BatchNorm(data, fix_gamma=False, name="bn")
    q = mx.sym.QConvolution(
        mx.sym.QActivation(bn, backward_only=True),
        kernel=(3, 3),
        pad=(1, 1),
        num_filter=4,
        no_bias=True,
        name="q",
    )
    out = mx.sym.Group([q, mx.sym.relu(bn)])
    mod = mx.mod.Module(out, label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[("data", (1, 8, 6, 6))], for_training=False)
    mod.init_params(mx.init.Xavier())
    args, aux = mod.get_params()
    csym, cargs, caux = binmx.convert(out, args, aux)
    fsym, fargs, faux = binmx.fold(csym, cargs, caux)
    # The relu still reads it, so it stays; on the data it becomes QChannelAffine with the
    # relu fused (pass 7).
    assert ops_of(fsym).count("BatchNorm") == 0 and "relu" not in ops_of(fsym)
    assert ops_of(fsym).count("QChannelAffine") == 1
    assert "q_in_scale" in fargs
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    for a, b in zip(
        run_model(out, args, aux, {"data": x}),
        run_model(fsym, fargs, faux, {"data": x}),
        strict=True,
    ):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)  # folded rounding, see above


def test_fold_does_not_mutate(rng: np.random.Generator) -> None:
    sym = bmxnet_lenet()
    args, aux = random_params(sym, (4, 1, 28, 28), rng)
    csym, cargs, caux = binmx.convert(sym, args, aux)
    text = csym.tojson()
    copies = {k: v.asnumpy().copy() for k, v in {**cargs, **caux}.items()}
    keys = (set(cargs), set(caux))
    binmx.fold(csym, cargs, caux)
    assert csym.tojson() == text
    assert (set(cargs), set(caux)) == keys
    for k, v in {**cargs, **caux}.items():
        assert np.array_equal(v.asnumpy(), copies[k])


def test_converter_fold_flag_and_size(
    tmp_path: Path, rng: np.random.Generator, capsys: pytest.CaptureFixture[str]
) -> None:
    sym = bmxnet_lenet()
    args, aux = random_params(sym, (4, 1, 28, 28), rng)
    mx.model.save_checkpoint(str(tmp_path / "lenet"), 1, sym, args, aux)
    assert converter_main([str(tmp_path / "lenet-0001.params"), "--fold"]) == 0
    assert "verified" in capsys.readouterr().out
    size = os.path.getsize(tmp_path / "binarized_lenet-0001.params")
    assert size <= 206_511, size  # BMXNet's converted LeNet
    saved = mx.nd.load(str(tmp_path / "binarized_lenet-0001.params"))
    assert not any(k.startswith("aux:") for k in saved)


def test_fold_float_conv_batchnorm_demo_lenet(tmp_path: Path, rng: np.random.Generator) -> None:
    """The demo's LeNet (binmx.models.binary_lenet: float conv -> BatchNorm -> relu first):
    every BatchNorm folds, the outputs match, and the converted file beats BMXNet's size."""
    sym = binmx.models.binary_lenet()
    args, aux = random_params(sym, (4, 1, 28, 28), rng)
    mx.model.save_checkpoint(str(tmp_path / "lenet"), 5, sym, args, aux)
    json_path, params_path = binmx.convert_checkpoint(
        str(tmp_path / "lenet-0005.params"), fold=True
    )
    fsym = mx.sym.load(json_path)
    assert "BatchNorm" not in ops_of(fsym)
    saved = mx.nd.load(params_path)
    fargs = {k[4:]: v for k, v in saved.items() if k.startswith("arg:")}
    x = rng.standard_normal((32, 1, 28, 28)).astype(np.float32)
    before = outputs(sym, args, aux, x)[0]
    after = outputs(fsym, fargs, {}, x)[0]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)  # folded rounding
    assert np.array_equal(after.argmax(1), before.argmax(1))
    assert os.path.getsize(params_path) <= 206_511  # BMXNet's converted LeNet


def test_verification_immune_to_mkldnn_conv_bn_fusion(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """conv0 feeds a BatchNorm AND a residual add (pre-activation ResNet stem). MXNet 1.9.1's
    MKLDNN subgraph pass fuses conv0 with the BatchNorm and hands the add the normalised values;
    the converter's reference run must not use that pass, or it rejects a correct fold."""
    d = mx.sym.var("data")
    c0 = mx.sym.Convolution(d, kernel=(3, 3), pad=(1, 1), num_filter=8, no_bias=True, name="conv0")
    bn = mx.sym.BatchNorm(c0, fix_gamma=False, name="bn1")
    q = mx.sym.QConvolution(
        mx.sym.QActivation(bn, backward_only=True),
        kernel=(3, 3),
        pad=(1, 1),
        num_filter=8,
        no_bias=True,
        name="q",
    )
    x = mx.sym.Pooling(q + c0, global_pool=True, kernel=(1, 1), pool_type="avg")
    sym = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(x, num_hidden=3, name="fc"), name="softmax")
    args, aux = random_params(sym, (2, 8, 6, 6), rng)
    mx.model.save_checkpoint(str(tmp_path / "m"), 1, sym, args, aux)
    _, params_path = binmx.convert_checkpoint(
        str(tmp_path / "m-0001.params"), fold=True, data_shape=(1, 8, 6, 6)
    )
    assert os.path.exists(params_path)


def stem_net(in_channels: int) -> mx.sym.Symbol:
    """ImageNet-style stem (input BatchNorm, float conv, relu, max-pool) whose pool output feeds
    a binary conv and, as the residual, the next one: the stem of binmx.models.resnet."""
    x = mx.sym.BatchNorm(mx.sym.var("data"), fix_gamma=True, eps=2e-5, name="bn_data")
    x = mx.sym.Convolution(x, kernel=(5, 5), stride=(2, 2), pad=(2, 2), num_filter=16, name="c0")
    x = mx.sym.Pooling(
        mx.sym.relu(x), kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max", name="pool0"
    )

    def qconv(y, name):
        bn = mx.sym.BatchNorm(y, fix_gamma=False, eps=2e-5, name=f"{name}_bn")
        return mx.sym.QConvolution(
            mx.sym.QActivation(bn, backward_only=True),
            kernel=(3, 3),
            pad=(1, 1),
            num_filter=16,
            no_bias=True,
            name=name,
        )

    x = qconv(qconv(x, "q1"), "q2") + x
    x = mx.sym.Pooling(x, global_pool=True, kernel=(1, 1), pool_type="avg")
    x = mx.sym.FullyConnected(mx.sym.Flatten(x), num_hidden=10, name="fc")
    return mx.sym.SoftmaxOutput(x, name="softmax")


@pytest.mark.parametrize("in_channels", [3, 8])
def test_fold_input_batchnorm_and_layout_barrier(
    in_channels: int, rng: np.random.Generator
) -> None:
    """Pass 7 (the input BatchNorm -> QChannelAffine) and pass 9 (one NHWC hand-over
    where two binmx inputs read the max-pool), against the unfolded model; folding twice
    changes nothing."""
    sym = stem_net(in_channels)
    shape = (2, in_channels, 32, 32)
    args, aux = random_params(sym, shape, rng)
    csym, cargs, caux = binmx.convert(sym, args, aux)
    fsym, fargs, faux = binmx.fold(csym, cargs, caux)
    nodes = {n["name"]: n for n in json.loads(fsym.tojson())["nodes"]}
    assert nodes["bn_data"]["op"] == "QChannelAffine"
    assert nodes["bn_data"]["attrs"]["relu"] == "False"
    scale = 1 / np.sqrt(aux["bn_data_moving_var"].asnumpy().astype(np.float64) + 2e-5)
    np.testing.assert_allclose(fargs["bn_data_scale"].asnumpy(), scale, rtol=1e-6)  # fix_gamma
    shift = -aux["bn_data_moving_mean"].asnumpy() * scale + fargs_beta(cargs, "bn_data")
    np.testing.assert_allclose(fargs["bn_data_shift"].asnumpy(), shift, rtol=1e-5, atol=1e-6)
    # pool0 -> transpose to NHWC (oneDNN) -> QNHWCToNCHW, read by both binary convs.
    barrier = [n for n in nodes.values() if n["op"] == "QNHWCToNCHW"]
    assert len(barrier) == 1 and "Reshape" not in ops_of(fsym)
    names = [n["name"] for n in json.loads(fsym.tojson())["nodes"]]
    nhwc = nodes[names[barrier[0]["inputs"][0][0]]]
    assert nhwc["op"] == "transpose" and nhwc["attrs"]["axes"] == "(0, 2, 3, 1)"
    assert names[nhwc["inputs"][0][0]] == "pool0"
    readers = [
        n["name"]
        for n in nodes.values()
        if any(names[e[0]] == barrier[0]["name"] for e in n["inputs"])
    ]
    assert sorted(readers) == ["q1", "q2"]  # q2 reads it as its fused residual
    assert nodes["q2"]["attrs"]["residual"] == "True"
    x = rng.standard_normal((8,) + shape[1:]).astype(np.float32)
    before = outputs(sym, args, aux, x)[0]
    after = outputs(fsym, fargs, faux, x)[0]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)  # folded rounding
    assert np.array_equal(after.argmax(1), before.argmax(1))
    again = binmx.fold(fsym, fargs, faux)
    assert again[0].tojson() == fsym.tojson()


def fargs_beta(args: dict[str, mx.nd.NDArray], bn: str) -> np.ndarray:
    return args[f"{bn}_beta"].asnumpy().astype(np.float64)


@pytest.mark.parametrize("channels", [3, 8])
def test_fold_small_batchnorm_after_onednn_op_is_diagonal_conv(
    channels: int, rng: np.random.Generator
) -> None:
    """Pass 8: an inference BatchNorm over <= 4 channels that reads a oneDNN operator
    (here a pooling; pass 7 takes only plain-layout inputs) becomes a 1x1 Convolution with
    a diagonal weight; over more channels it stays."""
    data = mx.sym.var("data")
    x = mx.sym.Pooling(data, kernel=(2, 2), stride=(2, 2), pool_type="avg", name="pool")
    x = mx.sym.BatchNorm(x, fix_gamma=False, eps=2e-5, name="bn")
    x = mx.sym.Convolution(x, kernel=(3, 3), pad=(1, 1), num_filter=4, name="conv")
    sym = mx.sym.FullyConnected(mx.sym.Flatten(x), num_hidden=5, name="fc")
    shape = (2, channels, 8, 8)
    args, aux = random_params(sym, shape, rng, label=False)
    fsym, fargs, faux = binmx.fold(sym, args, aux)
    nodes = {n["name"]: n for n in json.loads(fsym.tojson())["nodes"]}
    if channels <= 4:
        assert nodes["bn"]["op"] == "Convolution"
        weight = fargs["bn_diag_weight"].asnumpy().reshape(channels, channels)
        var = aux["bn_moving_var"].asnumpy().astype(np.float64)
        scale = args["bn_gamma"].asnumpy() / np.sqrt(var + 2e-5)
        np.testing.assert_allclose(np.diag(weight), scale, rtol=1e-6)
        assert np.count_nonzero(weight - np.diag(np.diag(weight))) == 0
    else:
        assert nodes["bn"]["op"] == "BatchNorm"  # too many channels: stays
    xv = rng.standard_normal((4,) + shape[1:]).astype(np.float32)
    before = run_model(sym, args, aux, {"data": xv})[0]
    after = run_model(fsym, fargs, faux, {"data": xv})[0]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)  # folded rounding


def test_fold_channel_affine_after_binary_layer(rng: np.random.Generator) -> None:
    """Pass 7: an inference BatchNorm reading a binmx operator's (plain NCHW) output, with
    the relu that is its only reader, becomes one QChannelAffine(relu=True); with a second
    reader of the BatchNorm the relu stays separate; channel_affine=False keeps the
    BatchNorm."""
    data = mx.sym.var("data")
    q = mx.sym.QConvolution(data, kernel=(3, 3), pad=(1, 1), num_filter=6, name="q")
    bn = mx.sym.BatchNorm(q, fix_gamma=False, eps=2e-5, name="bn")
    # q has a second reader, so pass 2 cannot take the BatchNorm into its epilogue.
    other = mx.sym.sum(q, axis=1, name="qs")
    one = mx.sym.Group([mx.sym.Activation(bn, act_type="relu", name="act"), other])
    two = mx.sym.Group([mx.sym.relu(bn, name="r"), mx.sym.sum(bn, axis=1, name="s"), other])
    shape = (2, 5, 7, 7)
    for sym, relu in ((one, True), (two, False)):
        args, aux = random_params(sym, shape, rng, label=False)
        csym, cargs, caux = binmx.convert(sym, args, aux)
        fsym, fargs, faux = binmx.fold(csym, cargs, caux)
        nodes = {n["name"]: n for n in json.loads(fsym.tojson())["nodes"]}
        assert nodes["bn"]["op"] == "QChannelAffine"
        assert nodes["bn"]["attrs"]["relu"] == str(relu)
        assert ("act" in nodes) is False and ("r" in nodes) is (not relu)
        assert faux == {}
        kept = binmx.fold(csym, cargs, caux, channel_affine=False)[0]
        assert "QChannelAffine" not in ops_of(kept) and "BatchNorm" in ops_of(kept)
        xv = rng.standard_normal((3,) + shape[1:]).astype(np.float32)
        for a, b in zip(
            run_model(sym, args, aux, {"data": xv}),
            run_model(fsym, fargs, faux, {"data": xv}),
            strict=True,
        ):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)  # folded rounding


def test_fold_packs_activations_between_binary_convs(rng: np.random.Generator) -> None:
    """Pass 6: each unit's conv1 hands conv2 sign words (its only reader, through the folded
    BatchNorm + sign); the outputs are bit-identical to the float hand-over, and the shortcut
    conv (read by the residual add, not by a sign) stays float."""
    sym = preact_block_net()
    args, aux = random_params(sym, (2, 3, 16, 16), rng)
    csym, cargs, caux = binmx.convert(sym, args, aux)
    fsym, fargs, faux = binmx.fold(csym, cargs, caux)
    plain = binmx.fold(csym, cargs, caux, pack_activations=False)
    nodes = {n["name"]: n for n in json.loads(fsym.tojson())["nodes"]}
    for unit in ("u1", "u2"):
        first, second = nodes[f"{unit}_conv1"]["attrs"], nodes[f"{unit}_conv2"]["attrs"]
        assert first["out_packed"] == "True" and second["in_packed"] == "True"
        assert second["in_channels"] == "64" and second["input_affine"] == "False"
        assert f"{unit}_conv2_in_scale" in fargs  # now read by conv1 as out_scale
    assert "out_packed" not in nodes["u1_sc"]["attrs"]
    assert "out_packed" not in plain[0].tojson() and "in_packed" not in plain[0].tojson()
    x = rng.standard_normal((8, 3, 16, 16)).astype(np.float32)
    feed = {"data": x, "softmax_label": np.zeros(8, np.float32)}
    got = run_model(fsym, fargs, faux, feed)[0]
    np.testing.assert_array_equal(got, run_model(*plain, feed)[0])  # the same bits, no rounding
    assert binmx.fold(fsym, fargs, faux)[0].tojson() == fsym.tojson()  # idempotent


def test_fold_layout_barrier_reshape_for_mixed_readers(rng: np.random.Generator) -> None:
    """A plain operator's output read by a QConvolution and a QActivation (not only 4-d convs)
    gets the rank-agnostic identity Reshape instead of the NHWC hand-over."""
    x = mx.sym.Flatten(mx.sym.var("data"))
    x = mx.sym.Reshape(x, shape=(0, 8, 6, 6), name="r")  # not a oneDNN operator
    q = mx.sym.QConvolution(x, kernel=(3, 3), num_filter=4, no_bias=True, name="q")
    a = mx.sym.QActivation(x, act_bit=1, name="a")
    out = mx.sym.Group([q, a])
    mod = mx.mod.Module(out, label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[("data", (2, 8, 6, 6))], for_training=False)
    mod.init_params(mx.init.Xavier())
    args, aux = mod.get_params()
    csym, cargs, caux = binmx.convert(out, args, aux)
    fsym, fargs, faux = binmx.fold(csym, cargs, caux)
    assert "QNHWCToNCHW" not in ops_of(fsym) and ops_of(fsym).count("Reshape") == 2
    xv = rng.standard_normal((2, 8, 6, 6)).astype(np.float32)
    for got, want in zip(
        run_model(fsym, fargs, faux, {"data": xv}),
        run_model(out, args, aux, {"data": xv}),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)  # no BatchNorm folded: the same arithmetic
    assert binmx.fold(fsym, fargs, faux)[0].tojson() == fsym.tojson()


def test_nhwc_hand_over_only_for_float_data_and_residual() -> None:
    """Pass 9's NHWC pair is 4-d only: a QConvolution's data or fused residual, never one of
    its parameters (an operator could compute a bias) nor packed words."""
    from binmx._onednn_layout import _reads_nchw

    conv = {"op": "QConvolution", "attrs": {"residual": "True"}, "inputs": [[0, 0, 0]] * 4}
    assert _reads_nchw(conv, 0) and _reads_nchw(conv, 3)
    assert not _reads_nchw(conv, 1) and not _reads_nchw(conv, 2)
    assert not _reads_nchw({**conv, "attrs": {}}, 3)  # no residual: the last input is a param
    assert not _reads_nchw({**conv, "attrs": {"in_packed": "True"}}, 0)
    assert not _reads_nchw({"op": "QFullyConnected", "attrs": {}, "inputs": [[0, 0, 0]]}, 0)


def test_passes_are_numbered_in_run_order() -> None:
    """binmx.fold.PASSES: one named function each, numbered 1.. in the order they run; the
    oneDNN layout hand-overs last, all behind the `onednn_layout` switch."""
    from binmx.fold import PASSES

    assert [p.number for p in PASSES] == list(range(1, len(PASSES) + 1))
    assert [p.name for p in PASSES] == [
        "bn_to_input_affine",
        "bn_into_binary_epilogue",
        "bn_into_float_layer",
        "drop_sign_activations",
        "fuse_residual_add",
        "pack_activations",
        "bn_to_channel_affine",
        "small_bn_to_conv",
        "nhwc_handover",
    ]
    assert all(p.run.__name__ == p.name for p in PASSES)
    assert [p.number for p in PASSES if "onednn_layout" in p.switches] == [7, 8, 9]


def test_onednn_layout_switch_skips_the_hand_overs(rng: np.random.Generator) -> None:
    """onednn_layout=False: no QChannelAffine, transpose, QNHWCToNCHW, Reshape or diagonal
    Convolution is made; the binary folds still happen and the outputs stay the same."""
    data = mx.sym.Variable("data")
    bn0 = mx.sym.BatchNorm(data, fix_gamma=False, name="bn0")
    pool = mx.sym.Pooling(bn0, kernel=(2, 2), stride=(2, 2), pool_type="max", name="pool")
    q = mx.sym.QConvolution(pool, kernel=(3, 3), num_filter=8, pad=(1, 1), name="q")
    bn1 = mx.sym.BatchNorm(q, fix_gamma=False, name="bn1")
    sym = mx.sym.Activation(bn1, act_type="relu", name="relu")
    shape = (2, 3, 8, 8)
    args, aux = random_params(sym, shape, rng, label=False)
    csym, cargs, caux = binmx.convert(sym, args, aux)
    full = binmx.fold(csym, cargs, caux)[0]
    plain, pargs, paux = binmx.fold(csym, cargs, caux, onednn_layout=False)
    ops_full = {n["op"] for n in json.loads(full.tojson())["nodes"]}
    ops_plain = {n["op"] for n in json.loads(plain.tojson())["nodes"]}
    assert ops_full & {"QChannelAffine", "QNHWCToNCHW", "Convolution"}
    assert not ops_plain & {"QChannelAffine", "QNHWCToNCHW", "transpose", "Reshape"}
    assert "Convolution" not in ops_plain  # bn0 stays a BatchNorm
    assert "BatchNorm" in ops_plain
    x = {"data": rng.standard_normal(shape).astype(np.float32)}
    (want,) = run_model(csym, cargs, caux, x)
    (got,) = run_model(plain, pargs, paux, x)
    # Folded BatchNorm rounds as one affine map: float rounding only, through 2 layers.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
