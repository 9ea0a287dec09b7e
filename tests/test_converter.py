"""Model converter: round trips (Module, Gluon export), sizes, summary, and every bad input."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import binmx
import mxnet as mx
import numpy as np
import pytest
from binmx import reference
from binmx.converter_cli import main as converter_main

REPO = Path(__file__).resolve().parents[1]


def bmxnet_lenet(*, scaling: bool = False) -> mx.sym.Symbol:
    """BMXNet's binary LeNet: float conv 5x5x64, QConvolution 5x5x64, QFullyConnected 1000
    without bias, float FC 10 (BatchNorm -> QActivation in front of each binary layer)."""
    data = mx.sym.var("data")
    x = mx.sym.Convolution(data, kernel=(5, 5), num_filter=64, name="conv1")
    x = mx.sym.Activation(x, act_type="tanh")
    x = mx.sym.Pooling(x, pool_type="max", kernel=(2, 2), stride=(2, 2))
    x = mx.sym.BatchNorm(x, name="bn1")
    x = mx.sym.QActivation(x, backward_only=True, name="qact1")
    x = mx.sym.QConvolution(x, kernel=(5, 5), num_filter=64, scaling_factor=scaling, name="qconv2")
    x = mx.sym.BatchNorm(x, name="bn2")
    x = mx.sym.Pooling(x, pool_type="max", kernel=(2, 2), stride=(2, 2))
    x = mx.sym.Flatten(x)
    x = mx.sym.QActivation(x, backward_only=True, name="qact2")
    x = mx.sym.QFullyConnected(
        x, num_hidden=1000, no_bias=True, scaling_factor=scaling, name="qfc3"
    )
    x = mx.sym.BatchNorm(x, name="bn3")
    x = mx.sym.Activation(x, act_type="tanh")
    x = mx.sym.FullyConnected(x, num_hidden=10, name="fc4")
    return mx.sym.SoftmaxOutput(x, name="softmax")


def train_and_save(
    tmp_path: Path, rng: np.random.Generator, *, scaling: bool = False, steps: int = 2
) -> tuple[Path, mx.mod.Module, np.ndarray]:
    sym = bmxnet_lenet(scaling=scaling)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=8).astype(np.float32)
    it = mx.io.NDArrayIter(x, y, batch_size=4)
    mod = mx.mod.Module(sym, context=mx.cpu())
    mod.bind(data_shapes=it.provide_data, label_shapes=it.provide_label)
    mx.random.seed(int(rng.integers(0, 2**31)))
    mod.init_params(mx.init.Xavier())
    mod.init_optimizer(optimizer="adam", optimizer_params={"learning_rate": 1e-3})
    for _ in range(steps):
        it.reset()
        for batch in it:
            mod.forward_backward(batch)
            mod.update()
    mod.save_checkpoint(str(tmp_path / "lenet"), 1)
    return tmp_path / "lenet-0001.params", mod, x


def predict(sym_path: Path, params_path: Path, x: np.ndarray) -> np.ndarray:
    sym = mx.sym.load(str(sym_path))
    saved = mx.nd.load(str(params_path))
    args = {k[4:]: v for k, v in saved.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in saved.items() if k.startswith("aux:")}
    mod = mx.mod.Module(sym, context=mx.cpu())
    mod.bind(
        data_shapes=[("data", x.shape)],
        label_shapes=[("softmax_label", (x.shape[0],))],
        for_training=False,
    )
    mod.set_params(args, aux)
    return mod.predict(mx.io.NDArrayIter(x, batch_size=x.shape[0])).asnumpy()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("scaling", [False, True])
def test_module_round_trip(tmp_path: Path, rng: np.random.Generator, scaling: bool) -> None:
    params, _, x = train_and_save(tmp_path, rng, scaling=scaling)
    before = predict(tmp_path / "lenet-symbol.json", params, x)
    json_path, bin_params = binmx.convert_checkpoint(str(params))
    assert Path(json_path) == tmp_path / "binarized_lenet-symbol.json"
    assert Path(bin_params) == tmp_path / "binarized_lenet-0001.params"
    after = predict(Path(json_path), Path(bin_params), x)
    # Integer-exact binary layers; alpha = mean|W_f| is summed in order in float64 by the
    # converter, as by the operator on the float path: the same float32 bits.
    assert np.array_equal(after, before)
    saved = mx.nd.load(bin_params)
    w = saved["arg:qconv2_weight"]
    assert w.dtype == np.int64 and w.shape == (64, 5, 5, 1)
    assert saved["arg:qfc3_weight"].shape == (1000, 16)
    original = mx.nd.load(str(params))
    expected = reference.pack_weight(original["arg:qconv2_weight"].asnumpy())
    assert np.array_equal(w.asnumpy(), expected)
    assert saved["arg:conv1_weight"].dtype == np.float32  # float layers carried over
    assert np.array_equal(saved["arg:fc4_weight"].asnumpy(), original["arg:fc4_weight"].asnumpy())
    for key in ("aux:bn1_moving_mean", "aux:bn3_moving_var"):
        assert np.array_equal(saved[key].asnumpy(), original[key].asnumpy())
    if scaling:
        alpha = saved["arg:qconv2_alpha"].asnumpy()
        w0 = original["arg:qconv2_weight"].asnumpy()
        np.testing.assert_allclose(alpha, np.abs(w0).reshape(64, -1).mean(axis=1), rtol=1e-6)
        ordered = np.array(
            [sum(abs(float(v)) for v in row) / row.size for row in w0.reshape(64, -1)]
        )
        np.testing.assert_array_equal(alpha, ordered.astype(np.float32))


def test_lenet_size(tmp_path: Path, rng: np.random.Generator) -> None:
    params, _, _ = train_and_save(tmp_path, rng, steps=0)
    _, bin_params = binmx.convert_checkpoint(str(params), verify_outputs=False)
    saved = mx.nd.load(bin_params)
    payload = sum(v.size * np.dtype(v.dtype).itemsize for v in saved.values())
    # Binary weights take exactly one bit each: 64*64*25 + 1000*1024 bits.
    binary = sum(saved[k].size * 8 for k in ("arg:qconv2_weight", "arg:qfc3_weight"))
    assert binary == (64 * 64 * 25 + 1000 * 1024) // 8
    # The payload is that of BMXNet's converted LeNet, 205,800 bytes ...
    assert payload == 205_800
    size = os.path.getsize(bin_params)
    # ... but MXNet 1.9's NDArray file format spends ~64 bytes per array (int64 dims, storage
    # type, names) where BMXNet's older format spent ~40: 18 arrays put the file 0.2% above
    # BMXNet's 206,511 bytes. The BatchNorm folding of the fast-inference issue removes that.
    assert size <= 1.005 * 206_511, size
    assert os.path.getsize(params) / size >= 20


def test_convert_api_does_not_mutate(tmp_path: Path, rng: np.random.Generator) -> None:
    params, _, _ = train_and_save(tmp_path, rng, steps=0)
    sym = mx.sym.load(str(tmp_path / "lenet-symbol.json"))
    saved = mx.nd.load(str(params))
    args = {k[4:]: v for k, v in saved.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in saved.items() if k.startswith("aux:")}
    copies = {k: v.asnumpy().copy() for k, v in args.items()}
    json_before = sym.tojson()
    new_sym, new_args, new_aux = binmx.convert(sym, args, aux)
    assert sym.tojson() == json_before
    assert set(args) == set(copies)
    for k, v in args.items():
        assert v.dtype == np.float32 and np.array_equal(v.asnumpy(), copies[k])
    assert new_args["qconv2_weight"].dtype == np.int64
    assert "binarized_weights_only" in new_sym.tojson()
    assert new_aux.keys() == aux.keys()


def test_gluon_export_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    net = mx.gluon.nn.HybridSequential()
    with net.name_scope():
        net.add(mx.gluon.nn.Conv2D(16, 3, padding=1, in_channels=3))
        net.add(mx.gluon.nn.BatchNorm())
        net.add(binmx.gluon.QActivation(backward_only=True))
        net.add(binmx.gluon.QConv2D(32, 3, padding=1, in_channels=16, scaling_factor=True))
        net.add(mx.gluon.nn.BatchNorm())
        net.add(binmx.gluon.QActivation(backward_only=True))
        net.add(binmx.gluon.QDense(20, use_bias=False))
        net.add(mx.gluon.nn.Dense(10))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = mx.nd.array(rng.standard_normal((2, 3, 12, 12)).astype(np.float32))
    trainer = mx.gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 1e-3})
    loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    with mx.autograd.record():
        loss = loss_fn(net(x), mx.nd.array([1, 2]))
    loss.backward()
    trainer.step(2)
    before = net(x).asnumpy()
    net.export(str(tmp_path / "gnet"), epoch=3)
    json_path, params_path = binmx.convert_checkpoint(str(tmp_path / "gnet-0003.params"))
    block = mx.gluon.SymbolBlock.imports(json_path, ["data"], params_path)
    after = block(x).asnumpy()
    # scaled layer: alpha's last bit may differ (see test_module_round_trip)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    assert np.array_equal(np.argmax(after, 1), np.argmax(before, 1))


def test_cli_prints_and_writes(tmp_path: Path, rng: np.random.Generator) -> None:
    params, _, _ = train_and_save(tmp_path, rng, steps=0)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "model_converter.py"),
            str(params),
            "--output-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "converted 2 layer(s): qconv2, qfc3" in proc.stdout
    assert "bytes" in proc.stdout and "verified" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "binarized_lenet-0001.params",
        "binarized_lenet-symbol.json",
    ]
    exe = shutil.which("model_converter", path=os.path.dirname(sys.executable))
    assert exe is not None, "console script model_converter is not installed"
    proc = subprocess.run(
        [exe, "--summary", str(params)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "qconv2" in proc.stdout and "compression" in proc.stdout


def test_summary_counts() -> None:
    s = binmx.summary(bmxnet_lenet(), (1, 1, 28, 28))
    layers = {layer.name: layer for layer in s.layers}
    assert layers["qconv2"].params_1bit == 64 * 64 * 5 * 5
    assert layers["qconv2"].macs_1bit == 8 * 8 * 64 * 64 * 5 * 5
    assert layers["qfc3"].params_1bit == 1000 * 1024
    assert layers["conv1"].params_32bit == 64 * 25 + 64
    assert layers["conv1"].macs_32bit == 24 * 24 * 64 * 25
    assert layers["fc4"].params_32bit == 10 * 1000 + 10
    assert layers["bn1"].params_32bit == 4 * 64
    assert layers["softmax"].params_32bit == 0
    assert s.params_1bit == 64 * 64 * 25 + 1000 * 1024
    assert s.model_bytes == (s.params_1bit + 7) // 8 + 4 * s.params_32bit
    binary_macs = 8 * 8 * 64 * 64 * 25 + 1024 * 1000
    float_macs = 24 * 24 * 64 * 25 + 1000 * 10
    assert s.binary_mac_share == binary_macs / (binary_macs + float_macs)
    assert "compression" in s.table()
    with pytest.raises(ValueError, match="data_shape"):
        binmx.summary(bmxnet_lenet(), (1, -1, 28, 28))


# ---- bad inputs: non-zero exit, one-line reason, nothing written, inputs untouched ---------


def _run_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], match: str
) -> None:
    before = {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()}
    code = converter_main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert match in err, err
    after = {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # nothing written (no temporary files either), inputs untouched


@pytest.fixture
def saved_lenet(tmp_path: Path, rng: np.random.Generator) -> Path:
    params, _, _ = train_and_save(tmp_path, rng, steps=0)
    return params


def test_bad_missing_params(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run_bad(tmp_path, capsys, [str(tmp_path / "nope-0001.params")], "not found")


def test_bad_empty_params(saved_lenet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved_lenet.write_bytes(b"")
    _run_bad(saved_lenet.parent, capsys, [str(saved_lenet)], "empty")


def test_bad_truncated_params(saved_lenet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = saved_lenet.read_bytes()
    saved_lenet.write_bytes(data[: len(data) // 2])
    _run_bad(saved_lenet.parent, capsys, [str(saved_lenet)], "cannot read params")


def test_bad_corrupt_params(
    saved_lenet: Path, capsys: pytest.CaptureFixture[str], rng: np.random.Generator
) -> None:
    saved_lenet.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _run_bad(saved_lenet.parent, capsys, [str(saved_lenet)], "cannot read params")


def test_bad_missing_symbol(saved_lenet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (saved_lenet.parent / "lenet-symbol.json").unlink()
    _run_bad(saved_lenet.parent, capsys, [str(saved_lenet)], "symbol file not found")


def test_bad_invalid_symbol(saved_lenet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (saved_lenet.parent / "lenet-symbol.json").write_text('{"nodes": [oops')
    _run_bad(saved_lenet.parent, capsys, [str(saved_lenet)], "invalid symbol file")


def test_bad_params_do_not_match(saved_lenet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=3, name="other")
    other.save(str(saved_lenet.parent / "lenet-symbol.json"))
    _run_bad(saved_lenet.parent, capsys, [str(saved_lenet)], "do not match")


def test_bad_missing_weight(saved_lenet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = mx.nd.load(str(saved_lenet))
    del saved["arg:qconv2_weight"]
    mx.nd.save(str(saved_lenet), saved)
    _run_bad(saved_lenet.parent, capsys, [str(saved_lenet)], "qconv2_weight")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_bad_nonfinite_weight(
    saved_lenet: Path, capsys: pytest.CaptureFixture[str], value: float
) -> None:
    saved = mx.nd.load(str(saved_lenet))
    w = saved["arg:qfc3_weight"].asnumpy()
    w[3, 7] = value
    saved["arg:qfc3_weight"] = mx.nd.array(w)
    mx.nd.save(str(saved_lenet), saved)
    _run_bad(saved_lenet.parent, capsys, [str(saved_lenet)], "NaN/Inf")


def test_bad_already_converted(saved_lenet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert converter_main([str(saved_lenet), "--no-verify"]) == 0
    capsys.readouterr()
    _run_bad(
        saved_lenet.parent,
        capsys,
        [str(saved_lenet.parent / "binarized_lenet-0001.params")],
        "already converted",
    )


def test_bad_output_dir(saved_lenet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run_bad(
        saved_lenet.parent,
        capsys,
        [str(saved_lenet), "--output-dir", str(saved_lenet.parent / "missing")],
        "does not exist",
    )
    # /proc refuses new files even for root, so this is unwritable whoever runs the tests.
    _run_bad(saved_lenet.parent, capsys, [str(saved_lenet), "--output-dir", "/proc"], "writ")


def test_bad_name_without_epoch(saved_lenet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = saved_lenet.parent / "lenet.params"
    shutil.copy(saved_lenet, plain)
    _run_bad(saved_lenet.parent, capsys, [str(plain)], "PREFIX-EPOCH.params")


def test_interrupted_write_leaves_nothing(
    saved_lenet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = mx.nd.save

    def failing_save(path: str, data: object) -> None:
        real_save(path, data)  # the temporary file is complete ...
        raise KeyboardInterrupt  # ... and then the run is interrupted before the rename

    monkeypatch.setattr(mx.nd, "save", failing_save)
    before = sorted(p.name for p in saved_lenet.parent.iterdir())
    with pytest.raises(KeyboardInterrupt):
        binmx.convert_checkpoint(str(saved_lenet), verify_outputs=False)
    assert sorted(p.name for p in saved_lenet.parent.iterdir()) == before


def test_cli_exit_code_in_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "model_converter.py"),
            str(tmp_path / "x-0001.params"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("model_converter: error:")
