"""Packed k-bit weights (docs/design.md §2): the format, the converter, the operators, the
runtime, and bad input.

A QConvolution / QFullyConnected with weight_bit k in 1..8 (but act_bit = weight_bit = 1)
converts to its weight levels lw, k bits each in one LSB-first stream of int64 words. The
format is checked against binmx.reference (NumPy, written independently of the C++ packer); a
converted model must give the unconverted model's outputs bit for bit in MXNet (the levels are
the fake-quant weights, alpha is the operators' own sum), on every ISA path and at 1 and 2
threads; the runtime gives MXNet's bits on the integer paths; each packed weight takes
ceil(n k / 64) words, i.e. at most k/32 of the float bytes plus 7.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import binmx
import mxnet as mx
import numpy as np
import pytest
from binmx import reference as ref
from binmx import xnor
from binmx.converter_cli import main as converter_main

# (act_bit, weight_bit) pairs of the integer kernels the converted layers are checked on.
INTEGER_PAIRS = [(2, 1), (2, 2), (3, 3), (4, 2), (8, 8)]


def _acts(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Mostly in [-0.2, 1.2] (both clip sides), with exact 0 and 1 mixed in."""
    x = rng.uniform(-0.2, 1.2, shape).astype(np.float32)
    r = rng.random(shape)
    x[r < 0.05] = 0.0
    x[(r >= 0.05) & (r < 0.08)] = 1.0
    return x


def _assert_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    bad = np.argwhere(got != want)
    assert got.shape == want.shape and bad.size == 0, (
        f"{what}: {len(bad)} differ, first at {tuple(bad[0]) if bad.size else None}"
    )


# ---- the format ------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 9))
def test_stream_matches_the_numpy_statement(rng, bits: int) -> None:
    # Level counts around word boundaries for every width (3, 5, 6, 7 bits straddle words).
    for n in [0, 1, 2, 7, 8, 9, 21, 22, 63, 64, 65, 127, 128, 129, 1000, 4096 + 3]:
        levels = rng.integers(0, 2**bits, n).astype(np.uint8)
        levels[: min(n, 3)] = 2**bits - 1  # all-ones levels at the start
        words = xnor.pack_kbit_levels(levels, bits)
        assert words.dtype == np.int64 and words.shape == ((n * bits + 63) // 64,)
        np.testing.assert_array_equal(words, ref.pack_levels(levels, bits))
        np.testing.assert_array_equal(xnor.unpack_kbit_levels(words, n, bits), levels)
        np.testing.assert_array_equal(ref.unpack_levels(words, n, bits), levels)
        # Level i is bits i*k .. i*k+k-1 of the stream, LSB first: spot-check by hand.
        u = words.view(np.uint64)
        for i in {0, n // 2, n - 1} if n else ():
            v = 0
            for j in range(bits):
                b = i * bits + j
                v |= int((int(u[b // 64]) >> (b % 64)) & 1) << j
            assert v == levels[i]
        if n * bits % 64:  # the tail bits are 0
            assert int(u[-1]) >> (n * bits % 64) == 0


@pytest.mark.parametrize("bits", range(1, 9))
def test_levels_are_the_fake_quant_weights(rng, bits: int) -> None:
    w = rng.standard_normal((9, 5, 3, 3)).astype(np.float32)
    w[0, 0, 0, :3] = [0.0, -0.0, 3.5]
    lw = xnor.kbit_weight_levels(w, bits)
    assert lw.dtype == np.uint8 and lw.shape == w.shape
    np.testing.assert_array_equal(lw, ref.weight_levels(w, bits))
    b = 2**bits - 1
    back = (2.0 * (lw.astype(np.float64) / b) - 1.0).astype(np.float32)
    np.testing.assert_array_equal(back, ref.quantize_weight(w, bits))
    zero = np.zeros((3, 4), np.float32)  # all-zero tensor: rint(B / 2), half to even
    np.testing.assert_array_equal(
        xnor.kbit_weight_levels(zero, bits), ref.weight_levels(zero, bits)
    )


def test_pack_weight_forms() -> None:
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 70, 3, 3)).astype(np.float32)
    # act_bit = weight_bit = 1: the sign words, as before.
    np.testing.assert_array_equal(binmx.pack_weight(w), ref.pack_weight(w))
    for act_bit, weight_bit in [(2, 2), (4, None), (32, 1), (1, 5), (8, 8)]:
        k = act_bit if weight_bit is None else weight_bit
        p = binmx.pack_weight(w, act_bit=act_bit, weight_bit=weight_bit)
        assert p.shape == ((w.size * k + 63) // 64,)
        np.testing.assert_array_equal(p, ref.pack_levels(ref.weight_levels(w, k), k))
    nd = binmx.pack_weight(mx.nd.array(w), act_bit=2)
    assert isinstance(nd, mx.nd.NDArray) and nd.dtype == np.int64
    with pytest.raises(ValueError, match="weight_bit=9.*stay float"):
        binmx.pack_weight(w, act_bit=9)
    with pytest.raises(ValueError, match="weight_bit"):
        binmx.pack_weight(w, act_bit=2, weight_bit=0)
    with pytest.raises(ValueError, match="rank"):
        binmx.pack_weight(w[0], act_bit=2)


def test_format_bad_arguments() -> None:
    words = xnor.pack_kbit_levels(np.arange(10, dtype=np.uint8), 4)
    with pytest.raises(ValueError, match="expected 2 words for 17 levels at weight_bit=4, got 1"):
        xnor.unpack_kbit_levels(words, 17, 4)
    bad = words.copy()
    bad[-1] |= np.int64(1) << np.int64(45)
    with pytest.raises(ValueError, match="bits past the last level"):
        xnor.unpack_kbit_levels(bad, 10, 4)
    with pytest.raises(ValueError, match="does not fit weight_bit=2"):
        xnor.pack_kbit_levels(np.array([0, 3, 4], np.uint8), 2)
    with pytest.raises(ValueError, match="bits"):
        xnor.pack_kbit_levels(np.zeros(3, np.uint8), 9)
    with pytest.raises(TypeError, match="uint8"):
        xnor.pack_kbit_levels(np.zeros(3, np.int32), 2)
    with pytest.raises(ValueError, match="NaN"):
        xnor.kbit_weight_levels(np.array([0.5, np.nan], np.float32), 3)


# ---- converted models in MXNet ---------------------------------------------------------------


def _kbit_model(act_bit: int, weight_bit: int) -> mx.sym.Symbol:
    """Two convolutions (groups, stride, dilation, pad_value +-1, scaling_factor) and two dense
    layers at (act_bit, weight_bit); depths across 64-word boundaries."""
    q = dict(act_bit=act_bit, weight_bit=weight_bit)
    x = mx.sym.var("data")  # (N, 66, 9, 8)
    x = mx.sym.QConvolution(
        x,
        kernel=(3, 3),
        pad=(1, 1),
        stride=(2, 1),
        num_filter=34,
        num_group=2,
        pad_value=-1,
        scaling_factor=True,
        name="c1",
        **q,
    )
    x = mx.sym.QConvolution(
        x, kernel=(3, 2), pad=(2, 1), dilate=(2, 1), num_filter=17, pad_value=1, name="c2", **q
    )
    x = mx.sym.QFullyConnected(
        mx.sym.Flatten(x), num_hidden=29, scaling_factor=True, no_bias=True, name="d1", **q
    )
    return mx.sym.QFullyConnected(x, num_hidden=7, name="d2", **q)


def _params(sym: mx.sym.Symbol, shape: tuple[int, ...], rng: np.random.Generator) -> dict:
    arg_shapes, _, _ = sym.infer_shape(data=shape)
    return {
        name: mx.nd.array(rng.standard_normal(s).astype(np.float32) * 0.5)
        for name, s in zip(sym.list_arguments(), arg_shapes, strict=True)
        if name != "data"
    }


def _forward(sym: mx.sym.Symbol, args: dict, x: np.ndarray) -> np.ndarray:
    ex = sym.bind(mx.cpu(), {**args, "data": mx.nd.array(x)}, grad_req="null")
    return ex.forward(is_train=False)[0].asnumpy()


@pytest.mark.parametrize("act_bit,weight_bit", INTEGER_PAIRS)
def test_converted_model_gives_the_same_bits(rng, monkeypatch, act_bit, weight_bit) -> None:
    sym = _kbit_model(act_bit, weight_bit)
    shape = (2, 66, 9, 8)
    args = _params(sym, shape, rng)
    x = _acts(rng, shape)
    csym, cargs, _ = binmx.convert(sym, args, {})
    nodes = {n["name"]: n for n in json.loads(csym.tojson())["nodes"]}
    for layer in ("c1", "c2", "d1", "d2"):
        assert nodes[layer]["attrs"]["binarized_weights_only"] == "True"
        w = args[f"{layer}_weight"].asnumpy()
        packed = cargs[f"{layer}_weight"]
        assert packed.dtype == np.int64 and packed.shape == ((w.size * weight_bit + 63) // 64,)
        np.testing.assert_array_equal(
            packed.asnumpy(), ref.pack_levels(ref.weight_levels(w, weight_bit), weight_bit)
        )
    assert set(cargs) - set(args) == {"c1_alpha", "d1_alpha"}
    for isa in xnor.available_isas():
        for threads in ("1", "2"):
            monkeypatch.setenv("BINMX_ISA", isa)
            monkeypatch.setenv("OMP_NUM_THREADS", threads)
            want = _forward(sym, args, x)
            got = _forward(csym, cargs, x)
            _assert_equal(got, want, f"isa={isa} threads={threads}")


@pytest.mark.parametrize("act_bit,weight_bit", [(1, 3), (32, 1), (16, 4), (9, 8)])
def test_converted_float_path_layers_give_the_same_bits(rng, act_bit, weight_bit) -> None:
    """Bit widths without an integer kernel: the float path computes with 2 lw / B - 1, the
    very fake-quant weights of the float model."""
    sym = _kbit_model(act_bit, weight_bit)
    shape = (2, 66, 9, 8)
    args = _params(sym, shape, rng)
    x = rng.standard_normal(shape).astype(np.float32)
    csym, cargs, _ = binmx.convert(sym, args, {})
    assert cargs["c2_weight"].dtype == np.int64
    _assert_equal(_forward(csym, cargs, x), _forward(sym, args, x), "float path")


def test_wide_weights_stay_float(rng) -> None:
    sym = mx.sym.QConvolution(
        mx.sym.var("data"), kernel=(3, 3), num_filter=4, act_bit=4, weight_bit=12, name="w12"
    )
    sym = mx.sym.QConvolution(sym, kernel=(1, 1), num_filter=4, act_bit=32, name="f32")
    sym = mx.sym.QConvolution(sym, kernel=(1, 1), num_filter=4, act_bit=3, name="k3")
    args = _params(sym, (1, 3, 6, 6), rng)
    csym, cargs, _ = binmx.convert(sym, args, {})
    assert cargs["w12_weight"].dtype == np.float32 and cargs["f32_weight"].dtype == np.float32
    assert cargs["k3_weight"].dtype == np.int64
    nodes = {n["name"]: n for n in json.loads(csym.tojson())["nodes"]}
    assert "binarized_weights_only" not in nodes["w12"]["attrs"]


def test_packed_backward_gives_dx_and_dalpha(rng) -> None:
    """As for packed 1-bit weights: the packed weight's gradient is 0, dx is the float
    model's (same Qw, same alpha), the alpha input gets dalpha = sum_i G_fi Qw_fi."""
    for op in ("conv", "dense"):
        x = _acts(rng, (2, 5, 6, 6))
        if op == "conv":
            w = rng.standard_normal((4, 5, 3, 3)).astype(np.float32)
            kw = dict(kernel=(3, 3), num_filter=4, pad=(1, 1))
            call = mx.nd.QConvolution
        else:
            w = rng.standard_normal((4, 180)).astype(np.float32)
            kw = dict(num_hidden=4)
            call = mx.nd.QFullyConnected
        kw.update(act_bit=3, weight_bit=2, scaling_factor=True, no_bias=True)
        dy = rng.standard_normal((2, 4, 6, 6) if op == "conv" else (2, 4)).astype(np.float32)
        xf, wf = mx.nd.array(x), mx.nd.array(w)
        xf.attach_grad()
        with mx.autograd.record():
            y0 = call(xf, wf, **kw)
        y0.backward(mx.nd.array(dy))
        from binmx.converter import _alpha

        xp = mx.nd.array(x)
        wp = mx.nd.array(binmx.pack_weight(w, act_bit=3, weight_bit=2), dtype=np.int64)
        alpha = mx.nd.array(_alpha(w))
        for v in (xp, wp, alpha):
            v.attach_grad()
        with mx.autograd.record():
            y1 = call(xp, wp, alpha, binarized_weights_only=True, **kw)
        y1.backward(mx.nd.array(dy))
        _assert_equal(y1.asnumpy(), y0.asnumpy(), f"{op} forward")
        _assert_equal(xp.grad.asnumpy(), xf.grad.asnumpy(), f"{op} dx")
        assert not wp.grad.asnumpy().any()
        # dalpha_f = sum over the filter of G * Qw with G = d loss / d (Qw) unscaled.
        qa = ref.quantize_act(x, 3)
        qw = ref.quantize_weight(w, 2).astype(np.float64)
        if op == "conv":
            g = ref.conv2d_grads(qa, qw, dy, pad=(1, 1))[1]
        else:
            g = dy.astype(np.float64).T @ qa.reshape(2, -1)
        want = (g.reshape(4, -1) * qw.reshape(4, -1)).sum(axis=1)
        np.testing.assert_allclose(alpha.grad.asnumpy(), want, rtol=1e-5, atol=1e-4)


# ---- sizes -----------------------------------------------------------------------------------


def _record_bytes(name: str, arr: mx.nd.NDArray, tmp: Path) -> int:
    """Bytes one array adds to an MXNet .params file (its record and its name)."""
    mx.nd.save(str(tmp / "one.params"), {name: arr})
    mx.nd.save(str(tmp / "none.params"), {})
    return os.path.getsize(tmp / "one.params") - os.path.getsize(tmp / "none.params")


@pytest.mark.parametrize("act_bit,weight_bit", [*INTEGER_PAIRS, (1, 3), (32, 1)])
def test_packed_layer_takes_k_32nds(tmp_path, rng, act_bit, weight_bit) -> None:
    sym = _kbit_model(act_bit, weight_bit)
    args = _params(sym, (1, 66, 9, 8), rng)
    _, cargs, _ = binmx.convert(sym, args, {})
    k = weight_bit
    for layer in ("c1", "c2", "d1", "d2"):
        name = f"{layer}_weight"
        n = args[name].size
        data = cargs[name].size * 8
        assert data == 8 * ((n * k + 63) // 64) <= 4 * n * k / 32 + 7
        # In the file: no more record overhead (header, shape, name) than the float array's.
        overhead = _record_bytes(name, args[name], tmp_path) - 4 * n
        assert _record_bytes(name, cargs[name], tmp_path) - data <= overhead
    # The alpha vectors (4 bytes a filter) are the only new arrays.
    assert sorted(set(cargs) - set(args)) == ["c1_alpha", "d1_alpha"]


def test_checkpoint_conversion_and_cli(tmp_path, rng, capsys) -> None:
    sym = _kbit_model(2, 2)
    shape = (2, 66, 9, 8)
    args = _params(sym, shape, rng)
    mx.model.save_checkpoint(str(tmp_path / "k"), 3, sym, args, {})
    assert converter_main([str(tmp_path / "k-0003.params"), "--data-shape", "2,66,9,8"]) == 0
    out = capsys.readouterr().out
    assert "converted 4 layer(s): c1, c2, d1, d2" in out
    assert "weights packed at 2 bits: c1, c2, d1, d2" in out
    assert "verified: outputs equal (max abs difference 0)" in out
    before = os.path.getsize(tmp_path / "k-0003.params")
    after = os.path.getsize(tmp_path / "binarized_k-0003.params")
    weights = sum(v.size for k, v in args.items() if k.endswith("_weight"))
    # 2/32 of the float weights' bytes; biases, alpha and the records stay.
    assert after < before - 4 * weights * (1 - 2 / 32) + 4 * (34 + 29) + 2 * 100
    csym, cargs, _ = mx.model.load_checkpoint(str(tmp_path / "binarized_k"), 3)
    x = _acts(rng, shape)
    _assert_equal(_forward(csym, cargs, x), _forward(sym, args, x), "checkpoint")
    # Converting again is refused.
    assert converter_main([str(tmp_path / "binarized_k-0003.params")]) == 1
    assert "already converted" in capsys.readouterr().err


def test_summary_shows_the_weight_bits(rng) -> None:
    sym = _kbit_model(3, 3)
    s = binmx.summary(sym, (1, 66, 9, 8))
    layers = {layer.name: layer for layer in s.layers}
    assert layers["c1"].weight_bits == 3 and layers["c1"].params_kbit == 34 * 33 * 9
    assert layers["c1"].params_32bit == 34  # the bias
    assert layers["c1"].memory_bytes == (34 * 33 * 9 * 3 + 7) // 8 + 4 * 34
    csym, _, _ = binmx.convert(sym, _params(sym, (1, 66, 9, 8), rng), {})
    converted = {layer.name: layer for layer in binmx.summary(csym, (1, 66, 9, 8)).layers}
    assert converted["c1"].params_kbit == 34 * 33 * 9
    assert converted["c1"].params_32bit == 34 + 34  # bias and alpha
    assert s.params_kbit == sum(layer.params_kbit for layer in s.layers)
    assert s.float32_bytes == 4 * (s.params_1bit + s.params_kbit + s.params_32bit)
    table = s.table()
    assert "w bits" in table and "k-bit par" in table and "k-bit (2..8)" in table
    wide = binmx.summary(
        mx.sym.QConvolution(mx.sym.var("data"), kernel=(1, 1), num_filter=2, act_bit=12),
        (1, 3, 2, 2),
    )
    assert wide.layers[0].weight_bits == 32 and wide.layers[0].params_32bit == 6 + 2


def test_gluon_blocks_take_packed_kbit_weights(rng) -> None:
    from binmx.gluon import QConv2D, QDense

    x = _acts(rng, (2, 10, 6, 6))
    kw = dict(padding=1, in_channels=10, scaling_factor=True, act_bit=4, weight_bit=2)
    fnet = QConv2D(5, 3, **kw)
    fnet.initialize(mx.init.Normal(1.0))
    pnet = QConv2D(5, 3, binarized_weights_only=True, **kw)
    pnet.initialize()
    assert pnet.weight.shape == ((5 * 10 * 9 * 2 + 63) // 64,)
    w = fnet.weight.data()
    pnet.weight.set_data(binmx.pack_weight(w, act_bit=4, weight_bit=2))
    pnet.bias.set_data(fnet.bias.data())
    from binmx.converter import _alpha

    pnet.alpha.set_data(mx.nd.array(_alpha(w.asnumpy())))
    pnet.hybridize()
    _assert_equal(pnet(mx.nd.array(x)).asnumpy(), fnet(mx.nd.array(x)).asnumpy(), "QConv2D")
    dense_f = QDense(3, in_units=360, act_bit=8, weight_bit=8, use_bias=False)
    dense_f.initialize(mx.init.Normal(1.0))
    dense_p = QDense(
        3, in_units=360, act_bit=8, weight_bit=8, use_bias=False, binarized_weights_only=True
    )
    dense_p.initialize()
    assert dense_p.weight.shape == (3 * 360 * 8 // 64,)
    dense_p.weight.set_data(binmx.pack_weight(dense_f.weight.data(), act_bit=8))
    _assert_equal(dense_p(mx.nd.array(x)).asnumpy(), dense_f(mx.nd.array(x)).asnumpy(), "QDense")
    with pytest.raises(ValueError, match="weight_bit <= 8"):
        QDense(3, act_bit=2, weight_bit=9, binarized_weights_only=True)


# ---- bad input to the operators ----------------------------------------------------------------


def test_operator_rejects_malformed_packed_weights(rng) -> None:
    x = mx.nd.array(_acts(rng, (1, 6, 5, 5)))
    w = rng.standard_normal((4, 6, 3, 3)).astype(np.float32)
    packed = binmx.pack_weight(w, act_bit=3)  # 216 levels x 3 bits = 11 words (40 bits in the last)
    kw = dict(kernel=(3, 3), num_filter=4, act_bit=3, no_bias=True, binarized_weights_only=True)
    ok = mx.nd.QConvolution(x, mx.nd.array(packed, dtype=np.int64), **kw).asnumpy()
    assert ok.shape == (1, 4, 3, 3)
    with pytest.raises(mx.base.MXNetError, match=r"weight.*\(11,\).*k-bit weight levels"):
        mx.nd.QConvolution(x, mx.nd.array(packed[:-1], dtype=np.int64), **kw).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="weight.*int64"):
        mx.nd.QConvolution(x, mx.nd.array(packed.astype(np.float32)), **kw).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"weight.*\(11,\).*got \(4, 6, 3, 3\)"):
        mx.nd.QConvolution(x, mx.nd.array(w), **kw).wait_to_read()
    tail = packed.copy()
    tail[-1] |= np.int64(1) << np.int64(50)
    with pytest.raises(mx.base.MXNetError, match="bits past the last level are set"):
        mx.nd.QConvolution(x, mx.nd.array(tail, dtype=np.int64), **kw).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match="weight_bit <= 8"):
        mx.nd.QConvolution(x, mx.nd.array(packed, dtype=np.int64), **{**kw, "act_bit": 12})
    with pytest.raises(mx.base.MXNetError, match="in_packed"):
        mx.nd.QConvolution(
            x, mx.nd.array(packed, dtype=np.int64), **kw, in_packed=True, in_channels=6
        )
    fc_packed = binmx.pack_weight(w.reshape(4, 54), act_bit=5)  # 216 x 5 bits: 17 words, 56 bits
    fkw = dict(num_hidden=4, act_bit=5, no_bias=True, binarized_weights_only=True)
    xd = mx.nd.array(_acts(rng, (2, 54)))
    mx.nd.QFullyConnected(xd, mx.nd.array(fc_packed, dtype=np.int64), **fkw).wait_to_read()
    with pytest.raises(mx.base.MXNetError, match=r"weight.*\(17,\).*k-bit weight levels"):
        mx.nd.QFullyConnected(xd, mx.nd.array(fc_packed[:5], dtype=np.int64), **fkw).wait_to_read()
    fc_tail = fc_packed.copy()
    fc_tail[-1] |= np.int64(1) << np.int64(60)
    with pytest.raises(mx.base.MXNetError, match="bits past the last level are set"):
        mx.nd.QFullyConnected(xd, mx.nd.array(fc_tail, dtype=np.int64), **fkw).wait_to_read()


# ---- the runtime -------------------------------------------------------------------------------


@pytest.mark.parametrize("act_bit,weight_bit", INTEGER_PAIRS)
def test_runtime_on_converted_files_equals_mxnet(
    tmp_path, rng, monkeypatch, act_bit, weight_bit
) -> None:
    runtime = pytest.importorskip("binmx_runtime", reason="needs the binmx-runtime distribution")
    sym = _kbit_model(act_bit, weight_bit)
    shape = (2, 66, 9, 8)
    args = _params(sym, shape, rng)
    x = _acts(rng, shape)
    csym, cargs, _ = binmx.convert(sym, args, {})
    want = _forward(csym, cargs, x)
    mx.model.save_checkpoint(str(tmp_path / "c"), 1, csym, cargs, {})
    mx.model.save_checkpoint(str(tmp_path / "f"), 1, sym, args, {})
    for isa in xnor.available_isas():
        monkeypatch.setenv("BINMX_ISA", isa)
        for threads in (1, 2):
            for prefix in ("c", "f"):  # converted and float weights
                model = runtime.load(tmp_path / prefix, 1, input_shape=shape, threads=threads)
                _assert_equal(model.run(x), want, f"{prefix} isa={isa} threads={threads}")


@pytest.mark.parametrize("act_bit,weight_bit", [(1, 3), (32, 1)])
def test_runtime_float_path_on_converted_files(tmp_path, rng, act_bit, weight_bit) -> None:
    """The runtime's float path gives the same bits from packed and from float weights."""
    runtime = pytest.importorskip("binmx_runtime", reason="needs the binmx-runtime distribution")
    sym = _kbit_model(act_bit, weight_bit)
    shape = (2, 66, 9, 8)
    args = _params(sym, shape, rng)
    x = rng.standard_normal(shape).astype(np.float32)
    csym, cargs, _ = binmx.convert(sym, args, {})
    mx.model.save_checkpoint(str(tmp_path / "c"), 1, csym, cargs, {})
    mx.model.save_checkpoint(str(tmp_path / "f"), 1, sym, args, {})
    got = runtime.load(tmp_path / "c", 1, input_shape=shape, threads=2).run(x)
    _assert_equal(got, runtime.load(tmp_path / "f", 1, input_shape=shape, threads=2).run(x), "rt")
    want = _forward(csym, cargs, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(np.abs(want).max()))


def test_runtime_rejects_malformed_packed_weights(tmp_path, rng) -> None:
    runtime = pytest.importorskip("binmx_runtime", reason="needs the binmx-runtime distribution")
    sym = _kbit_model(3, 3)
    shape = (1, 66, 9, 8)
    args = _params(sym, shape, rng)
    csym, cargs, _ = binmx.convert(sym, args, {})
    good = cargs[
        "c2_weight"
    ].asnumpy()  # 17 * 34 * 6 levels at 3 bits: 163 words, 36 bits in the last

    def load_with(weight, attrs=None):
        g = json.loads(csym.tojson())
        for node in g["nodes"]:
            if node["name"] == "c2":
                node["attrs"].update(attrs or {})
        prefix = str(tmp_path / "bad")
        Path(prefix + "-symbol.json").write_text(json.dumps(g))
        mx.nd.save(
            prefix + "-0001.params",
            {f"arg:{k}": v for k, v in {**cargs, "c2_weight": weight}.items()},
        )
        return runtime.load(prefix, 1, input_shape=shape, threads=1)

    load_with(mx.nd.array(good, dtype=np.int64))
    with pytest.raises(
        runtime.RuntimeLoadError, match=r"c2.*c2_weight.*\(162,\).*\(163,\).*weight_bit=3"
    ):
        load_with(mx.nd.array(good[:-1], dtype=np.int64))
    with pytest.raises(runtime.RuntimeLoadError, match="c2_weight.*float32.*packed int64"):
        load_with(mx.nd.array(good.astype(np.float32)))
    tail = good.copy()
    tail[-1] |= np.int64(1) << np.int64(40)
    with pytest.raises(runtime.RuntimeLoadError, match="c2_weight.*bits past the last level"):
        load_with(mx.nd.array(tail, dtype=np.int64))
    with pytest.raises(runtime.RuntimeLoadError, match="weight_bit <= 8"):
        load_with(mx.nd.array(good, dtype=np.int64), {"act_bit": "12", "weight_bit": "12"})
    with pytest.raises(runtime.RuntimeLoadError, match="c2_weight"):  # 4-bit: another size
        load_with(mx.nd.array(good, dtype=np.int64), {"weight_bit": "4"})
