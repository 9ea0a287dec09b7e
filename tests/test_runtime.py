"""The binmx runtime against MXNet + binmx on the same converted files.

Every model of tests/runtime_cases.py (LeNet and ResNets folded, converted and with float
weights, the BMXNet-era float operators, binmx's k-bit and 1-bit layers with every attribute,
a Gluon export), with fresh random weights and BatchNorm statistics far from the identity, on
every ISA path and at 1 and 2 threads; binary layers integer-exact against MXNet's own
Convolution on sign()ed data; the stored fixtures still what MXNet computes; the summary's
measured column. The runtime is the binmx-runtime distribution (`make install` installs it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

binmx_runtime = pytest.importorskip(
    "binmx_runtime", reason="binmx-runtime is not installed (make install installs it)"
)

import binmx  # noqa: E402
import runtime_cases as rc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "runtime" / "tests" / "fixtures"


def isas() -> list[str]:
    return [name for name in ("scalar", "avx2", "avx512") if name in binmx.xnor.available_isas()]


@pytest.fixture(scope="module")
def saved_cases(tmp_path_factory):
    d = tmp_path_factory.mktemp("runtime_cases")
    out = {}
    for k, name in enumerate(rc.CASES):
        sym, args, aux, shape = rc.build(name, str(d), seed=100 + k)
        prefix = str(d / name)
        rc.save(prefix, sym, args, aux)
        x = np.random.default_rng(k).standard_normal(shape).astype(np.float32)
        out[name] = (prefix, x, rc.mxnet_output(sym, args, aux, x), sym)
    return out


@pytest.mark.parametrize("name", list(rc.CASES))
def test_runtime_equals_mxnet(saved_cases, name: str, monkeypatch) -> None:
    prefix, x, ref, _ = saved_cases[name]
    for isa in isas():
        monkeypatch.setenv("BINMX_ISA", isa)
        for threads in (1, 2):
            model = binmx_runtime.load(prefix, 1, input_shape=x.shape, threads=threads)
            assert (model.isa, model.threads) == (isa, threads)
            y = model.run(x)
            diff = float(np.abs(y - ref).max())
            # Float layers sum in another order than MXNet / oneDNN: rounding-size differences.
            assert diff <= 1e-4 * float(np.abs(ref).max()), (isa, threads, diff)
            rows = len(ref)
            assert (y.reshape(rows, -1).argmax(1) == ref.reshape(rows, -1).argmax(1)).all()


def test_cases_cover_the_operators(saved_cases) -> None:
    ops = set()
    for _, _, _, sym in saved_cases.values():
        ops.update(rc.ops_of(sym))
    want = {
        "QConvolution",
        "QFullyConnected",
        "QActivation",
        "QChannelAffine",
        "QNHWCToNCHW",
        "transpose",
        "Convolution",
        "FullyConnected",
        "BatchNorm",
        "Activation",
        "LeakyReLU",
        "Pooling",
        "Flatten",
        "Reshape",
        "elemwise_add",
        "broadcast_add",
        "Concat",
        "Dropout",
        "softmax",
        "SoftmaxOutput",
        "SoftmaxActivation",
        "clip",
    }
    assert want <= ops, want - ops


def test_bmxnet_op_spellings(saved_cases, tmp_path) -> None:
    """BMXNet-era files spell the add `_Plus` (MXNet reads it as elemwise_add): same output."""
    prefix, x, ref, _ = saved_cases["bmxnet_ops"]
    graph = json.loads(Path(prefix + "-symbol.json").read_text())
    renamed = 0
    for node in graph["nodes"]:
        if node["op"] == "elemwise_add":
            node["op"] = "_Plus"
            renamed += 1
    assert renamed >= 2
    new = str(tmp_path / "plus")
    Path(new + "-symbol.json").write_text(json.dumps(graph))
    Path(new + "-0001.params").write_bytes(Path(prefix + "-0001.params").read_bytes())
    sym, args, aux = mx.model.load_checkpoint(new, 1)
    np.testing.assert_array_equal(rc.mxnet_output(sym, args, aux, x), ref)
    y = binmx_runtime.load(new, 1, input_shape=x.shape, threads=1).run(x)
    y0 = binmx_runtime.load(prefix, 1, input_shape=x.shape, threads=1).run(x)
    np.testing.assert_array_equal(y, y0)


def sign_conv_reference(x, w, kernel, stride, pad, dilate, groups):
    """MXNet's own Convolution on sign()ed data (sgn(0) = +1, as binmx's convention)."""
    sx = np.where(x < 0, -1.0, 1.0).astype(np.float32)
    sw = np.where(w < 0, -1.0, 1.0).astype(np.float32)
    return mx.nd.Convolution(
        mx.nd.array(sx),
        mx.nd.array(sw),
        kernel=kernel,
        stride=stride,
        pad=pad,
        dilate=dilate,
        num_group=groups,
        num_filter=w.shape[0],
        no_bias=True,
    ).asnumpy()


@pytest.mark.parametrize(
    "channels, filters, kernel, stride, pad, dilate, groups, hw",
    [
        (1, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, (5, 6)),
        (63, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1, (7, 7)),
        (64, 65, (3, 3), (2, 2), (1, 1), (1, 1), 1, (9, 8)),
        (65, 17, (1, 1), (2, 2), (0, 0), (1, 1), 1, (8, 8)),
        (127, 33, (3, 3), (1, 1), (2, 2), (2, 2), 1, (6, 9)),
        (128, 10, (5, 3), (1, 2), (2, 1), (1, 1), 2, (7, 7)),
        (129, 129, (3, 3), (1, 1), (1, 1), (1, 1), 1, (5, 5)),
        (513, 9, (3, 3), (1, 1), (1, 1), (1, 1), 1, (4, 4)),
    ],
)
def test_binary_layer_is_exact(
    tmp_path, channels, filters, kernel, stride, pad, dilate, groups, hw
) -> None:
    rng = np.random.default_rng(channels * 1000 + filters)
    shape = (2, channels, *hw)
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 0, 0, :2] = [0.0, -0.0]  # exact zeros binarize to +1
    data = mx.sym.var("data")
    sym = mx.sym.QConvolution(
        data,
        kernel=kernel,
        stride=stride,
        pad=pad,
        dilate=dilate,
        num_group=groups,
        num_filter=filters,
        no_bias=True,
        name="b",
    )
    w = rng.standard_normal((filters, channels // groups, *kernel)).astype(np.float32)
    ref = sign_conv_reference(x, w, kernel, stride, pad, dilate, groups)
    for convert in (False, True):
        s, a = sym, {"b_weight": mx.nd.array(w)}
        if convert:
            s, a, _ = binmx.convert(sym, a, {})
        prefix = str(tmp_path / f"b{int(convert)}")
        mx.model.save_checkpoint(prefix, 1, s, a, {})
        for threads in (1, 2):
            y = binmx_runtime.load(prefix, 1, input_shape=shape, threads=threads).run(x)
            bad = np.argwhere(y != ref)
            assert bad.size == 0, f"{len(bad)} differ, first {bad[0]}"


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_stored_fixtures_are_current(name: str) -> None:
    """MXNet + binmx still compute the stored outputs from the stored files."""
    d = FIXTURES / name
    sym, args, aux = mx.model.load_checkpoint(str(d / "model"), 1)
    x, ref = np.load(d / "input.npy"), np.load(d / "output.npy")
    y = rc.mxnet_output(sym, args, aux, x)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6 * float(np.abs(ref).max()))


def test_summary_has_the_measured_column(saved_cases) -> None:
    prefix, x, _, sym = saved_cases["resnet_cifar_fold"]
    s = binmx.summary(sym, x.shape, checkpoint=(prefix, 1), repeat=2)
    timed = [layer for layer in s.layers if layer.runtime_ms is not None]
    assert len(timed) >= 17 and all(layer.runtime_ms >= 0 for layer in timed)
    assert s.runtime_total_ms is not None and s.runtime_total_ms > 0
    table = s.table()
    assert "runtime ms" in table and "binmx runtime:" in table
    assert "runtime ms" not in binmx.summary(sym, x.shape).table()


def test_model_converter_summary_prints_runtime_latency(saved_cases) -> None:
    prefix, x, _, _ = saved_cases["lenet_fold"]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "binmx.converter_cli",
            "--summary",
            prefix + "-0001.params",
            "--data-shape",
            ",".join(map(str, x.shape)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )
    assert r.returncode == 0, r.stderr
    assert "runtime ms" in r.stdout and "binmx runtime:" in r.stdout
    assert "fused" in r.stdout or "QConvolution" in r.stdout


def test_fixture_index_matches_directories() -> None:
    with open(FIXTURES / "index.json") as f:
        index = json.load(f)
    assert set(index) == {p.name for p in FIXTURES.iterdir() if p.is_dir()}


def test_trained_demo_lenet_on_mnist() -> None:
    """The demo's trained, converted LeNet (fixture lenet_trained) on all 10,000 MNIST test
    images: the runtime classifies them as MXNet + binmx does."""
    d = FIXTURES / "lenet_trained"
    if not d.is_dir():
        pytest.skip("no lenet_trained fixture (tools/make_runtime_fixtures.py --trained ...)")
    from binmx.data import DataNotFoundError, load_mnist

    try:
        x, y = load_mnist("test")
    except DataNotFoundError as exc:
        pytest.skip(f"MNIST is not installed: {exc}")
    sym, args, aux = mx.model.load_checkpoint(str(d / "model"), 1)
    batch = 500
    model = binmx_runtime.load(d / "model", 1, input_shape=(batch, 1, 28, 28), threads=2)
    ours, theirs = [], []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        ref = rc.mxnet_output(sym, args, aux, xb)
        out = model.run(xb)
        # Float layers (conv0, fc) sum in another order than oneDNN.
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
        ours.append(out.argmax(1))
        theirs.append(ref.argmax(1))
    ours, theirs = np.concatenate(ours), np.concatenate(theirs)
    assert (ours == theirs).all(), np.flatnonzero(ours != theirs)[:10]
    accuracy = float((ours == y).mean())
    assert accuracy > 0.98, accuracy  # a trained LeNet; the README's demo reaches 99%
