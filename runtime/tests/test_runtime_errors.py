"""Bad input to binmx_runtime: clear Python exceptions, never a crash or a wrong result."""

from __future__ import annotations

import json
import shutil
import struct

import binmx_runtime
import numpy as np
import pytest
from binmx_runtime import RuntimeLoadError
from rt_helpers import FIXTURES, dense_model, write_params

LENET = FIXTURES / "lenet_fold"


def copy_model(tmp_path, name: str = "lenet_fold"):
    dst = tmp_path / "m"
    shutil.copy(FIXTURES / name / "model-symbol.json", str(dst) + "-symbol.json")
    shutil.copy(FIXTURES / name / "model-0001.params", str(dst) + "-0001.params")
    return dst


def load(prefix, shape=(2, 1, 28, 28), **kw):
    return binmx_runtime.load(prefix, 1, input_shape=shape, **kw)


def test_missing_files(tmp_path) -> None:
    with pytest.raises(RuntimeLoadError, match="nothing-symbol.json.*No such file"):
        load(tmp_path / "nothing")
    p = copy_model(tmp_path)
    with pytest.raises(RuntimeLoadError, match="0002.params"):
        binmx_runtime.load(p, 2, input_shape=(2, 1, 28, 28))


DATA = '{"op": "null", "name": "data", "inputs": []}'


def graph(*nodes: str, heads: str = "[[1, 0, 0]]") -> str:
    return '{"nodes": [' + ", ".join(nodes) + '], "heads": ' + heads + "}"


def flatten(attrs: str = "", src: int = 0) -> str:
    return '{"op": "Flatten", "name": "f", ' + attrs + f'"inputs": [[{src}, 0, 0]]' + "}"


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "JSON"),
        ("[1, 2, 3]", "not a symbol graph|object"),
        ('{"nodes": 3, "heads": []}', "nodes"),
        ('{"nodes": [], "heads": []}', "no nodes"),
        (graph(DATA, heads="[]"), "no outputs"),
        (graph(flatten(), heads="[[0, 0, 0]]"), "does not come before|cycle"),
        (graph(DATA, flatten(src=7)), "names node 7"),
        (
            graph(DATA, '{"op": "Bogus", "name": "b", "inputs": [[0, 0, 0]]}'),
            "'Bogus' is not supported",
        ),
        (
            graph(
                DATA,
                '{"op": "Activation", "name": "a", "attrs": {"act_type": "swish"}, '
                '"inputs": [[0, 0, 0]]}',
            ),
            "act_type",
        ),
        (
            graph(DATA, flatten('"attrs": {"colour": "red"}, ')),
            "node 'f' \\(Flatten\\): attribute `colour`",
        ),
        ('{"nodes": [' + "[" * 5000 + "]" * 5000 + '], "heads": []}', "deep|depth|nest"),
    ],
)
def test_bad_symbol_json(tmp_path, text: str, match: str) -> None:
    p = copy_model(tmp_path)
    (tmp_path / "m-symbol.json").write_text(text)
    with pytest.raises(RuntimeLoadError, match=match):
        load(p)


def test_unsupported_attribute_names_node_op_and_attribute(tmp_path) -> None:
    p = copy_model(tmp_path)
    graph = json.loads((tmp_path / "m-symbol.json").read_text())
    conv = next(n for n in graph["nodes"] if n["op"] == "QConvolution")
    conv["attrs"]["layout"] = "NHWC"
    (tmp_path / "m-symbol.json").write_text(json.dumps(graph))
    with pytest.raises(RuntimeLoadError, match=f"node '{conv['name']}' \\(QConvolution\\).*layout"):
        load(p)


def test_missing_parameter(tmp_path) -> None:
    p = copy_model(tmp_path)
    graph = json.loads((tmp_path / "m-symbol.json").read_text())
    var = next(n for n in graph["nodes"] if n["name"].endswith("_weight"))
    var["name"] = "renamed_weight"
    (tmp_path / "m-symbol.json").write_text(json.dumps(graph))
    with pytest.raises(RuntimeLoadError, match="renamed_weight"):
        load(p)


def test_shape_mismatch_names_the_parameter(tmp_path) -> None:
    p = copy_model(tmp_path)
    graph = json.loads((tmp_path / "m-symbol.json").read_text())
    conv = next(n for n in graph["nodes"] if n["op"] == "Convolution")
    conv["attrs"]["num_filter"] = "32"
    (tmp_path / "m-symbol.json").write_text(json.dumps(graph))
    with pytest.raises(RuntimeLoadError, match="weight.*shape"):
        load(p)


@pytest.mark.parametrize("cut", [0, 8, 16, 100, -1])
def test_truncated_params(tmp_path, cut: int) -> None:
    p = copy_model(tmp_path)
    params = tmp_path / "m-0001.params"
    data = params.read_bytes()
    params.write_bytes(data[:cut] if cut >= 0 else data[:-1])
    with pytest.raises(RuntimeLoadError):
        load(p)


def test_wrong_magic_and_huge_dims(tmp_path) -> None:
    p = copy_model(tmp_path)
    params = tmp_path / "m-0001.params"
    data = bytearray(params.read_bytes())
    params.write_bytes(b"\x00" * 8 + bytes(data[8:]))
    with pytest.raises(RuntimeLoadError, match="magic|not an MXNet"):
        load(p)
    # The first array's first dim (after header 24 bytes, magic 4, stype 4, ndim 4) -> 2^62.
    data[36:44] = struct.pack("<q", 2**62)
    params.write_bytes(bytes(data))
    with pytest.raises(RuntimeLoadError):
        load(p)


def test_handmade_model_and_nan_parameter(tmp_path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    dense_model(tmp_path / "fc", w, b)
    x = rng.standard_normal((3, 7)).astype(np.float32)
    y = binmx_runtime.load(tmp_path / "fc", 1, input_shape=(3, 7), threads=1).run(x)
    # The runtime's dense kernel sums in float32 in its own order: a few ulps of float64's.
    np.testing.assert_allclose(y, x.astype(np.float64) @ w.T + b, rtol=1e-5, atol=1e-5)
    w[2, 3] = np.nan
    dense_model(tmp_path / "nan", w, b)
    with pytest.raises(RuntimeLoadError, match="fc_weight.*non-finite"):
        binmx_runtime.load(tmp_path / "nan", 1, input_shape=(3, 7))
    w[2, 3] = np.inf
    dense_model(tmp_path / "inf", w, b)
    with pytest.raises(RuntimeLoadError, match="non-finite"):
        binmx_runtime.load(tmp_path / "inf", 1, input_shape=(3, 7))
    w[2, 3] = 0.5
    dense_model(tmp_path / "short", w[:, :6].copy(), b)
    with pytest.raises(RuntimeLoadError, match="fc_weight.*shape \\(5, 6\\), expected \\(5, 7\\)"):
        binmx_runtime.load(tmp_path / "short", 1, input_shape=(3, 7))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="threads"):
        load(LENET / "model", threads=0)
    with pytest.raises(ValueError, match="threads"):
        load(LENET / "model", threads=-2)
    with pytest.raises(TypeError, match="threads"):
        load(LENET / "model", threads=1.5)
    with pytest.raises(ValueError, match="input_shape"):
        load(LENET / "model", shape=(2, 0, 28, 28))
    with pytest.raises(ValueError, match="epoch"):
        binmx_runtime.load(LENET / "model", -1, input_shape=(2, 1, 28, 28))
    with pytest.raises(RuntimeLoadError, match="input|shape|channels|weight"):
        load(LENET / "model", shape=(2, 3, 28, 28))
    with pytest.raises(RuntimeLoadError):
        load(LENET / "model", shape=(2, 1, 3, 3))


def test_bad_run_input() -> None:
    model = load(LENET / "model")
    with pytest.raises(TypeError, match="float32"):
        model.run(np.zeros((2, 1, 28, 28), np.float64))
    with pytest.raises(ValueError, match="shape"):
        model.run(np.zeros((1, 1, 28, 28), np.float32))
    with pytest.raises(TypeError, match="ndarray"):
        model.run([[0.0]])
    with pytest.raises(ValueError, match="repeat"):
        model.profile(np.zeros((2, 1, 28, 28), np.float32), repeat=0)
    # A non-contiguous input is accepted (copied) and gives the contiguous result.
    x = np.asfortranarray(np.random.default_rng(0).standard_normal((2, 1, 28, 28), np.float32))
    np.testing.assert_array_equal(model.run(x), model.run(np.ascontiguousarray(x)))


# ---- packed k-bit weights (binarized_weights_only with weight_bit 1..8, docs/design.md §2) ----


def _pack_levels(levels, bits: int):
    """The k-bit level stream, written here from the documented layout: level i is bits
    i*bits .. i*bits+bits-1 of the stream (LSB first), stream bit b is bit b % 64 of word b / 64."""
    words = [0] * ((len(levels) * bits + 63) // 64)
    for i, v in enumerate(levels):
        for j in range(bits):
            if (int(v) >> j) & 1:
                b = i * bits + j
                words[b // 64] |= 1 << (b % 64)
    return np.array([w - (1 << 64) if w >= 1 << 63 else w for w in words], np.int64)


def _kbit_dense(prefix, weight, alpha, bias, attrs=None) -> None:
    """data -> QFullyConnected(act_bit=2, weight_bit=3, packed, scaling_factor)."""
    a = {
        "num_hidden": str(len(bias)),
        "act_bit": "2",
        "weight_bit": "3",
        "binarized_weights_only": "True",
        "scaling_factor": "True",
        **(attrs or {}),
    }
    names = ["data", "q_weight", "q_bias", "q_alpha"]
    graph = {
        "nodes": [{"op": "null", "name": n, "inputs": []} for n in names]
        + [
            {
                "op": "QFullyConnected",
                "name": "q",
                "attrs": a,
                "inputs": [[i, 0, 0] for i in range(4)],
            }
        ],
        "arg_nodes": [0, 1, 2, 3],
        "heads": [[4, 0, 0]],
    }
    with open(f"{prefix}-symbol.json", "w") as f:
        json.dump(graph, f)
    params = {"arg:q_weight": weight, "arg:q_bias": bias, "arg:q_alpha": alpha}
    write_params(f"{prefix}-0001.params", params)


def test_packed_kbit_weights_and_malformed_ones(tmp_path) -> None:
    rng = np.random.default_rng(3)
    hidden, depth = 5, 23  # 115 levels at 3 bits: 345 bits, 6 words, 25 bits in the last
    lw = rng.integers(0, 8, hidden * depth)
    words = _pack_levels(lw, 3)
    alpha = rng.uniform(0.5, 2.0, hidden).astype(np.float32)
    bias = rng.standard_normal(hidden).astype(np.float32)
    x = rng.uniform(-0.2, 1.2, (4, depth)).astype(np.float32)
    _kbit_dense(tmp_path / "ok", words, alpha, bias)
    y = binmx_runtime.load(tmp_path / "ok", 1, input_shape=x.shape, threads=1).run(x)
    # docs/design.md §3, integer k-bit forward: D = sum la * mw, la = rint(3 clip(x, 0, 1)),
    # mw = 2 lw - 7; out = float32(D * alpha / (3 * 7)) + bias.
    la = np.rint(3.0 * np.clip(x.astype(np.float64), 0.0, 1.0))
    d = la @ (2.0 * lw.reshape(hidden, depth) - 7.0).T
    want = (d * (alpha.astype(np.float64) / 21.0)).astype(np.float32) + bias
    np.testing.assert_array_equal(y, want)

    cases = [
        (words[:-1], {}, r"q_weight.*\(5,\), expected packed int64 words \(6,\).*weight_bit=3"),
        (words.astype(np.float32), {}, "q_weight.*float32.*expected packed int64"),
        (words.reshape(2, 3), {}, r"q_weight.*\(2, 3\)"),
        (words, {"weight_bit": "4"}, r"q_weight.*\(6,\), expected packed int64 words \(8,\)"),
        (words, {"weight_bit": "12", "act_bit": "12"}, "weight_bit <= 8"),
    ]
    tail = words.copy()
    tail[-1] |= np.int64(1) << np.int64(30)  # bit 30 of the last word: past the 25 level bits
    cases.append((tail, {}, "q_weight.*bits past the last level are set"))
    for k, (w, attrs, match) in enumerate(cases):
        _kbit_dense(tmp_path / f"bad{k}", w, alpha, bias, attrs)
        with pytest.raises(RuntimeLoadError, match=match):
            binmx_runtime.load(tmp_path / f"bad{k}", 1, input_shape=x.shape)
