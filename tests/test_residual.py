"""QConvolution ``residual=True`` (the residual add fused into the xnor epilogue) and the fold
rewrite that uses it: exact against elemwise_add of the unfused layer and the NumPy reference,
on every ISA path and thread count."""

from __future__ import annotations

import json

import binmx
import mxnet as mx
import numpy as np
import pytest
from binmx import models, xnor
from binmx import reference as ref
from binmx.converter import run_model
from test_bconv import _assert_equal, _data, _env, _epilogue

MXNetError = mx.base.MXNetError


def _ops(sym: mx.sym.Symbol) -> list[str]:
    return [n["op"] for n in json.loads(sym.tojson())["nodes"] if n["op"] != "null"]


@pytest.mark.parametrize(
    "channels,kernel,stride,pad,affine",
    [
        (64, 3, 1, 1, True),
        (65, 3, 2, 1, False),
        (128, 1, 2, 0, True),
        (3, 5, 1, 2, True),
        (129, 3, 1, 0, False),
    ],
)
def test_residual_conv_every_isa_and_thread_count(rng, channels, kernel, stride, pad, affine):
    n, h, f = 2, 9, 33
    x = _data(rng, (n, channels, h, h))
    w = _data(rng, (f, channels, kernel, kernel))
    alpha = rng.standard_normal(f).astype(np.float32)
    bias = rng.standard_normal(f).astype(np.float32)
    oh = (h + 2 * pad - kernel) // stride + 1
    r = _data(rng, (n, f, oh, oh))
    extra, in_aff = [], {}
    if affine:
        s = rng.standard_normal(channels).astype(np.float32)
        t = rng.standard_normal(channels).astype(np.float32)
        extra = [mx.nd.array(s), mx.nd.array(t)]
        in_aff = dict(in_scale=s, in_shift=t)
    geo = dict(stride=(stride, stride), pad=(pad, pad))
    dots = ref.q_conv2d(x, w, **geo, **in_aff)  # exact integers in float64
    # The epilogue: float32(dot) * alpha + bias, then + residual, each rounded to float32.
    want = (_epilogue(dots, alpha, bias, axis=1) + r).astype(np.float32)
    attrs = dict(
        kernel=(kernel, kernel),
        stride=(stride, stride),
        pad=(pad, pad),
        num_filter=f,
        binarized_weights_only=True,
        scaling_factor=True,
        input_affine=affine,
    )
    base = [
        mx.nd.array(x),
        mx.nd.array(ref.pack_weight(w), dtype=np.int64),
        mx.nd.array(bias),
        mx.nd.array(alpha),
        *extra,
    ]
    for isa in xnor.available_isas():
        for threads in ("1", "2", "3"):
            with _env(BINMX_ISA=isa, OMP_NUM_THREADS=threads):
                got = mx.nd.QConvolution(*base, mx.nd.array(r), residual=True, **attrs)
                plain = mx.nd.QConvolution(*base, **attrs)
                added = mx.nd.elemwise_add(plain, mx.nd.array(r)).asnumpy()
                got = got.asnumpy()
            what = f"isa={isa} threads={threads}"
            _assert_equal(got, want, f"residual vs reference, {what}")
            _assert_equal(got, added, f"residual vs elemwise_add, {what}")
    # Float weights (the training form) take the same direct path.
    got = mx.nd.QConvolution(
        mx.nd.array(x),
        mx.nd.array(w),
        mx.nd.array(bias),
        *extra,
        mx.nd.array(r),
        kernel=(kernel, kernel),
        stride=(stride, stride),
        pad=(pad, pad),
        num_filter=f,
        input_affine=affine,
        residual=True,
    ).asnumpy()
    _assert_equal(
        got,
        (_epilogue(dots, None, bias, axis=1) + r).astype(np.float32),
        "float weights + residual",
    )
    # The reference's residual argument (float64; exact here: small integers plus floats).
    np.testing.assert_array_equal(
        ref.q_conv2d(x, w, **geo, **in_aff, residual=r), dots + r.astype(np.float64)
    )


def test_residual_symbol_inputs_shapes_and_errors(rng):
    data = mx.sym.var("data")
    conv = mx.sym.QConvolution(
        data, kernel=(3, 3), pad=(1, 1), num_filter=4, no_bias=True, residual=True, name="c1"
    )
    assert conv.list_arguments() == ["data", "c1_weight", "c1_residual"]
    arg_shapes, out_shapes, _ = conv.infer_shape(data=(2, 5, 8, 8))
    assert arg_shapes[2] == (2, 4, 8, 8) and out_shapes[0] == (2, 4, 8, 8)
    both = mx.sym.QConvolution(
        data, kernel=(1, 1), num_filter=4, input_affine=True, residual=True, name="c2"
    )
    assert both.list_arguments() == [
        "data",
        "c2_weight",
        "c2_bias",
        "c2_in_scale",
        "c2_in_shift",
        "c2_residual",
    ]
    inputs = binmx.ops.op_inputs("QConvolution", {"residual": "True", "no_bias": "True"})
    assert inputs == ["data", "weight", "residual"]
    r = mx.sym.var("r")
    kw = mx.sym.QConvolution(data, kernel=(3, 3), num_filter=4, residual=r, name="c3")
    assert kw.list_arguments() == ["data", "c3_weight", "c3_bias", "r"]
    assert kw.list_attr()["residual"] == "True"

    x = mx.nd.array(_data(rng, (1, 5, 6, 6)))
    w = mx.nd.array(_data(rng, (4, 5, 3, 3)))
    with pytest.raises(MXNetError, match="residual"):  # not a 1-bit layer
        mx.nd.QConvolution(
            x,
            w,
            mx.nd.zeros((1, 4, 4, 4)),
            kernel=(3, 3),
            num_filter=4,
            no_bias=True,
            act_bit=2,
            residual=True,
        ).wait_to_read()
    with pytest.raises(MXNetError, match="residual"):  # wrong shape
        mx.nd.QConvolution(
            x,
            w,
            mx.nd.zeros((1, 4, 6, 6)),
            kernel=(3, 3),
            num_filter=4,
            no_bias=True,
            residual=True,
        ).wait_to_read()
    with pytest.raises(ValueError, match="residual"):  # missing input
        mx.nd.QConvolution(x, w, kernel=(3, 3), num_filter=4, no_bias=True, residual=True)
    x.attach_grad()
    with mx.autograd.record():
        y = mx.nd.QConvolution(
            x,
            w,
            mx.nd.zeros((1, 4, 4, 4)),
            kernel=(3, 3),
            num_filter=4,
            no_bias=True,
            residual=True,
        )
    with pytest.raises(MXNetError, match="inference"):
        y.backward()
        x.grad.wait_to_read()


def _params(sym, data_shape, rng):
    mod = mx.mod.Module(sym, context=mx.cpu())
    mod.bind(
        data_shapes=[("data", data_shape)],
        label_shapes=[("softmax_label", (data_shape[0],))],
        for_training=False,
    )
    mx.random.seed(int(rng.integers(0, 2**31)))
    mod.init_params(mx.init.Xavier(magnitude=2.0))
    args, aux = mod.get_params()
    for k, v in aux.items():
        lo, hi = (0.3, 2.0) if k.endswith("_var") else (-0.5, 0.5)
        aux[k] = mx.nd.array(rng.uniform(lo, hi, v.shape).astype(np.float32))
    return args, aux


def _unfuse(sym: mx.sym.Symbol) -> mx.sym.Symbol:
    """The folded graph with every residual=True QConvolution turned back into
    QConvolution + elemwise_add (to compare the fused epilogue with MXNet's add)."""
    g = json.loads(sym.tojson())
    nodes = g["nodes"]
    out_nodes, remap = [], {}
    for i, node in enumerate(nodes):
        node = dict(node, inputs=[[remap[e[0]], e[1], e[2]] for e in node["inputs"]])
        attrs = dict(node.get("attrs", {}))
        if node["op"] == "QConvolution" and attrs.get("residual") == "True":
            residual = node["inputs"][-1]
            attrs.pop("residual")
            node = dict(node, attrs=attrs, inputs=node["inputs"][:-1])
            out_nodes.append(node)
            node = {
                "op": "elemwise_add",
                "name": node["name"] + "_unfused",
                "attrs": {},
                "inputs": [[len(out_nodes) - 1, 0, 0], residual],
            }
        remap[i] = len(out_nodes)
        out_nodes.append(node)
    g = {
        "nodes": out_nodes,
        "heads": [[remap[h[0]], h[1], h[2]] for h in g["heads"]],
        "arg_nodes": [i for i, n in enumerate(out_nodes) if n["op"] == "null"],
        "attrs": g["attrs"],
    }
    return mx.sym.load_json(json.dumps(g))


def test_fold_fuses_residual_adds_exactly(rng, monkeypatch):
    # Compare graphs as written (MXNet's MKLDNN subgraph pass would rewrite the float conv0).
    monkeypatch.setenv("MXNET_SUBGRAPH_BACKEND", "NONE")
    sym = models.resnet(depth=10, num_classes=10, image_shape=(3, 16, 16), width=64)
    args, aux = _params(sym, (2, 3, 16, 16), rng)
    csym, cargs, caux = binmx.convert(sym, args, aux)
    fsym, fargs, faux = binmx.fold(csym, cargs, caux)
    ops = _ops(fsym)
    assert "elemwise_add" not in ops  # all four residual adds fused
    nodes = {n["name"]: n for n in json.loads(fsym.tojson())["nodes"]}
    fused = sorted(k for k, n in nodes.items() if n.get("attrs", {}).get("residual") == "True")
    # conv2 reads the identity shortcut (stage 1) or the 1x1 shortcut conv's output.
    assert fused == [f"stage{s}_unit1_conv2" for s in (1, 2, 3, 4)]
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    feed = {"data": x, "softmax_label": np.zeros(4, np.float32)}
    got = run_model(fsym, fargs, faux, feed)[0]
    back = _unfuse(fsym)
    assert _ops(back).count("elemwise_add") == 4
    np.testing.assert_array_equal(got, run_model(back, fargs, faux, feed)[0])
    # Against the unfolded converted model: BatchNorm folding rounds differently (test_fold).
    before = run_model(csym, cargs, caux, feed)[0]
    np.testing.assert_allclose(got, before, rtol=1e-4, atol=1e-5)
    assert np.array_equal(got.argmax(1), before.argmax(1))
    # fuse_residual=False keeps the adds (for the gpu path, which has no fused add).
    nofuse = binmx.fold(csym, cargs, caux, fuse_residual=False)[0]
    assert _ops(nofuse).count("elemwise_add") == 4 and "residual" not in nofuse.tojson()
    # Folding again changes nothing.
    again = binmx.fold(fsym, fargs, faux)
    assert again[0].tojson() == fsym.tojson()


def test_fold_leaves_other_adds(rng):
    data = mx.sym.var("data")
    q = mx.sym.QConvolution(data, kernel=(3, 3), pad=(1, 1), num_filter=8, no_bias=True, name="q")
    k2 = mx.sym.QConvolution(
        data, kernel=(3, 3), pad=(1, 1), num_filter=8, no_bias=True, act_bit=2, name="k2"
    )
    fl = mx.sym.Convolution(data, kernel=(3, 3), pad=(1, 1), num_filter=8, no_bias=True, name="fl")
    # q has a second reader (relu), k2 is 2-bit, fl is float: no add may be fused.
    out = mx.sym.Group([q + data, mx.sym.relu(q), k2 + data, fl + data])
    mod = mx.mod.Module(out, label_names=None, context=mx.cpu())
    mod.bind(data_shapes=[("data", (1, 8, 6, 6))], for_training=False)
    mod.init_params(mx.init.Xavier())
    args, aux = mod.get_params()
    csym, cargs, caux = binmx.convert(out, args, aux)
    fsym, _, _ = binmx.fold(csym, cargs, caux)
    assert _ops(fsym).count("elemwise_add") == 3
    assert "residual" not in fsym.tojson()
    # A binary conv that is a head (the network's output) keeps its add too.
    single = mx.sym.Group([q, q + data])
    s2, _, _ = binmx.fold(*binmx.convert(single, {"q_weight": args["q_weight"]}, {}))
    assert _ops(s2).count("elemwise_add") == 1
