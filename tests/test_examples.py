"""The examples in --tiny mode: train, checkpoint, convert, evaluate, time, write results."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from binmx import data, distributed

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

HAVE_MNIST = True
try:
    data.mnist_path()
except data.DataNotFoundError:
    HAVE_MNIST = False
needs_mnist = pytest.mark.skipif(
    not HAVE_MNIST, reason=f"MNIST not installed ({data.MNIST_INSTALL})"
)
needs_fashion = pytest.mark.skipif(
    not (data.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed ({data.FASHION_MNIST_INSTALL})",
)
RESULT_KEYS = {
    "float_test_accuracy",
    "binarized_test_accuracy",
    "float_params_bytes",
    "binarized_params_bytes",
    "train_seconds",
    "speedup",
}


def run_example(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    return proc


def check_run(proc: subprocess.CompletedProcess, out: Path, prefix: str, epoch: int = 1) -> dict:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= RESULT_KEYS, sorted(RESULT_KEYS - set(results))
    float_params = out / f"{prefix}-{epoch:04d}.params"
    bin_params = out / f"binarized_{prefix}-{epoch:04d}.params"
    for path in [
        out / f"{prefix}-symbol.json",
        float_params,
        bin_params,
        out / f"binarized_{prefix}-symbol.json",
    ]:
        assert path.is_file(), path
    assert results["float_params_bytes"] == float_params.stat().st_size
    assert results["binarized_params_bytes"] == bin_params.stat().st_size
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["train_seconds"] > 0
    assert results["speedup"] > 0 and results["speed"]["binarized_ms"] > 0
    # Binary layers are integer-exact after conversion and the float layers are unchanged,
    # so the binarized model predicts exactly what the float-weight model predicts.
    assert results["binarized_test_accuracy"] == results["float_test_accuracy"]
    assert "test accuracy, binarized model" in proc.stdout
    return results


@needs_mnist
def test_train_mnist_tiny(tmp_path: Path) -> None:
    proc = run_example("train_mnist.py", "--tiny", "--output-dir", str(tmp_path))
    results = check_run(proc, tmp_path, "lenet")
    assert results["train_samples"] == 512 and results["epochs"] == 1
    assert results["float_test_accuracy"] > 0.2  # 1 epoch on 512 images; chance is 0.1
    # Binary conv and FC weights take one bit: the file shrinks by far more than 10x.
    assert results["binarized_params_bytes"] * 10 < results["float_params_bytes"]
    sym = json.loads((tmp_path / "binarized_lenet-symbol.json").read_text())
    ops = {n["name"]: n for n in sym["nodes"]}
    assert ops["conv1"]["op"] == "Convolution" and ops["fc2"]["op"] == "FullyConnected"
    assert ops["conv2"]["attrs"]["binarized_weights_only"] == "True"
    assert ops["fc1"]["attrs"]["binarized_weights_only"] == "True"
    hist = results["history"]
    assert len(hist["train_loss"]) == 1 and len(hist["test_accuracy"]) == 1
    # The per-epoch evaluation (Module.fit) and the final one (saved checkpoint) agree exactly.
    assert hist["test_accuracy"][-1] == results["float_test_accuracy"]


# What a user must not see under the bars (issue: MXNet's executor chatter, Module's own log).
CHATTER = (
    "MXNET_SUBGRAPH_BACKEND=NONE is detected",
    "Subgraph backend",
    "graph_executor.cc",
    "Epoch[",
    "Train-",
    "Validation-",
    "Time cost",
    "Saved checkpoint",
    "fontManager",
)


def assert_quiet(proc: subprocess.CompletedProcess, epochs: int = 1) -> None:
    """Bars, one line per epoch and the closing summary; none of the chatter above."""
    text = proc.stdout + proc.stderr
    found = [c for c in CHATTER if c in text]
    assert not found, f"chatter {found} in the output:\n{text[-4000:]}"
    lines = [ln for ln in proc.stderr.replace("\r", "\n").splitlines() if ln.startswith("epoch ")]
    assert len(lines) == epochs, proc.stderr[-3000:]
    assert lines[0].startswith(f"epoch 1/{epochs}: train loss ") and "test accuracy" in lines[0]


@needs_mnist
@pytest.mark.parametrize("api", ["module", "gluon"])
def test_train_mnist_tiny_output_is_quiet(tmp_path: Path, api: str) -> None:
    """`make demo`'s output (progress bars on): single-voiced, no MXNet or Module chatter."""
    cmd = [
        sys.executable,
        str(EXAMPLES / "train_mnist.py"),
        "--tiny",
        "--output-dir",
        str(tmp_path),
    ]
    if api == "gluon":
        cmd.append("--gluon")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "train epoch 1/1" in proc.stderr  # the tqdm bar
    assert_quiet(proc)
    assert "test accuracy, binarized model" in proc.stdout


@pytest.mark.parametrize("package", ["tqdm", "matplotlib"])
def test_example_without_extras_says_what_to_install(tmp_path: Path, package: str) -> None:
    """Without tqdm or matplotlib an example exits with the pip command, not a traceback."""
    code = (
        f"import runpy, sys; sys.modules[{package!r}] = None; "
        f"sys.argv = ['train_mnist.py', '--tiny', '--output-dir', {str(tmp_path)!r}]; "
        f"sys.path.insert(0, {str(EXAMPLES)!r}); "
        f"runpy.run_path({str(EXAMPLES / 'train_mnist.py')!r}, run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr
    assert f"need {package}" in proc.stderr and "pip install 'binmx[examples]'" in proc.stderr


@needs_mnist
def test_train_mnist_tiny_gluon(tmp_path: Path) -> None:
    proc = run_example("train_mnist.py", "--tiny", "--gluon", "--output-dir", str(tmp_path))
    results = check_run(proc, tmp_path, "lenet")
    assert results["model"].endswith("(Gluon)")
    assert results["float_test_accuracy"] > 0.2  # chance is 0.1


@needs_mnist
def test_train_mnist_float_baseline(tmp_path: Path) -> None:
    proc = run_example("train_mnist.py", "--tiny", "--float", "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["binarized_test_accuracy"] is None and results["speedup"] is None
    assert results["float_test_accuracy"] > 0.2  # chance is 0.1
    assert not list(tmp_path.glob("binarized_*"))


def test_train_mnist_bad_arguments(tmp_path: Path) -> None:
    proc = run_example("train_mnist.py", "--epochs", "0", "--output-dir", str(tmp_path))
    assert proc.returncode == 2 and "--epochs" in proc.stderr
    proc = run_example(
        "train_mnist.py", "--tiny", "--kv-store", "dist_sync", "--output-dir", str(tmp_path)
    )
    assert proc.returncode != 0 and "launch_local.py" in proc.stderr


@needs_fashion
@pytest.mark.slow
def test_train_resnet_tiny_fashion(tmp_path: Path) -> None:
    proc = run_example("train_resnet.py", "--tiny", "--output-dir", str(tmp_path))
    results = check_run(proc, tmp_path, "resnet10")
    assert results["dataset"] == "fashion-mnist" and results["train_samples"] == 256


def write_cifar10(directory: Path, rng: np.random.Generator, per_batch: int) -> None:
    """A small synthetic set in the CIFAR-10 python format (bytes keys, protocol 2)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        labels = rng.integers(0, 10, per_batch)
        # Class-dependent brightness so that there is something to learn.
        pixels = rng.integers(0, 128, size=(per_batch, 3072)) + 12 * labels[:, None]
        batch = {b"data": pixels.astype(np.uint8), b"labels": [int(v) for v in labels]}
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)


@pytest.mark.slow
def test_train_resnet_tiny_cifar10(tmp_path: Path, rng: np.random.Generator) -> None:
    write_cifar10(tmp_path / "cifar", rng, per_batch=160)
    out = tmp_path / "out"
    proc = run_example(
        "train_resnet.py",
        "--tiny",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path / "cifar"),
        "--output-dir",
        str(out),
    )
    results = check_run(proc, out, "resnet10")
    assert results["augment"] is True and results["test_samples"] == 128
    assert_quiet(proc)


def write_imagenet_rec(directory: Path, rng: np.random.Generator, counts: dict[str, int]) -> None:
    """train.rec/.idx and val.rec/.idx with small random JPEGs (40x40), labels 0..4."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    for split, n in counts.items():
        rec = mx.recordio.MXIndexedRecordIO(
            str(directory / f"{split}.idx"), str(directory / f"{split}.rec"), "w"
        )
        for i in range(n):
            buf = io.BytesIO()
            pixels = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buf, format="JPEG")
            rec.write_idx(
                i, mx.recordio.pack(mx.recordio.IRHeader(0, float(i % 5), i, 0), buf.getvalue())
            )
        rec.close()


@pytest.mark.slow
def test_train_resnet_tiny_imagenet_rec(tmp_path: Path, rng: np.random.Generator) -> None:
    pytest.importorskip("PIL.Image", reason="Pillow writes the test JPEGs")
    write_imagenet_rec(tmp_path / "rec", rng, {"train": 64, "val": 32})
    out = tmp_path / "out"
    proc = run_example(
        "train_resnet.py",
        "--tiny",
        "--dataset",
        "imagenet",
        "--data-dir",
        str(tmp_path / "rec"),
        "--image-size",
        "32",
        "--output-dir",
        str(out),
    )
    results = check_run(proc, out, "resnet10")
    assert results["train_samples"] == 64 and results["test_samples"] == 32


def test_train_resnet_missing_data(tmp_path: Path) -> None:
    proc = run_example(
        "train_resnet.py",
        "--tiny",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path),
        "--output-dir",
        str(tmp_path / "out"),
    )
    assert proc.returncode != 0
    assert "data_batch_1" in proc.stderr and "DataNotFoundError" in proc.stderr


def _resnet_module():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import train_resnet
    finally:
        sys.path.remove(str(EXAMPLES))
    return train_resnet


@pytest.mark.parametrize(
    "dataset,shape,classes", [("cifar10", (2, 3, 32, 32), 10), ("imagenet", (1, 3, 224, 224), 1000)]
)
def test_resnet18_layout(dataset: str, shape: tuple[int, ...], classes: int) -> None:
    """ResNet-18: float conv0 and fc, 16 binary 3x3 convs + 3 binary 1x1 shortcuts."""
    tr = _resnet_module()
    sym = tr.resnet_symbol(dataset=dataset, depth=18, width=64)
    nodes = json.loads(sym.tojson())["nodes"]
    qconv = [n for n in nodes if n["op"] == "QConvolution"]
    assert len(qconv) == 19
    assert sum(n["op"] == "Convolution" for n in nodes) == 1  # conv0 only
    assert sum(n["op"] == "FullyConnected" for n in nodes) == 1  # fc only
    assert sum(n["op"] == "QActivation" for n in nodes) == 16
    arg_shapes, out_shapes, _ = sym.infer_shape(data=shape)
    assert out_shapes == [(shape[0], classes)]
    weights = dict(zip(sym.list_arguments(), arg_shapes, strict=True))
    binary = sum(int(np.prod(weights[f"{n['name']}_weight"])) for n in qconv)
    # ResNet-18's 3x3 + shortcut convolutions: 11,157,504 weights (conv0/fc excluded).
    assert binary == 11_157_504
    float_sym = tr.resnet_symbol(dataset=dataset, depth=18, width=64, binary=False)
    assert float_sym.infer_shape(data=shape)[1] == out_shapes


@needs_mnist
@pytest.mark.slow
@pytest.mark.parametrize("api", ["module", "gluon"])
def test_train_mnist_dist_sync_two_workers(tmp_path: Path, api: str) -> None:
    """--kv-store dist_sync with 2 workers: both end with identical weights."""
    cmd = [
        sys.executable,
        str(EXAMPLES / "train_mnist.py"),
        "--tiny",
        "--no-progress",
        "--no-convert",
        "--kv-store",
        "dist_sync",
        "--output-dir",
        str(tmp_path),
    ] + (["--gluon"] if api == "gluon" else [])
    result = distributed.launch(cmd, num_workers=2, num_servers=1, timeout=240)
    assert result.ok, result
    r0 = json.loads((tmp_path / "worker0" / "results.json").read_text())
    r1 = json.loads((tmp_path / "worker1" / "results.json").read_text())
    assert {r0["rank"], r1["rank"]} == {0, 1} and r0["num_workers"] == 2
    assert r0["train_samples"] == r1["train_samples"] == 256  # disjoint halves of 512
    p0 = mx.nd.load(str(tmp_path / "worker0" / "lenet-0001.params"))
    p1 = mx.nd.load(str(tmp_path / "worker1" / "lenet-0001.params"))
    assert sorted(p0) == sorted(p1)
    args = sorted(k for k in p0 if k.startswith("arg:"))
    weights = [k for k in args if k.endswith("weight")]
    assert len(weights) == 4  # conv1, binary conv2, binary fc1, fc2
    for key in args:  # BatchNorm moving statistics (aux:) are per worker, as in MXNet
        assert np.array_equal(p0[key].asnumpy(), p1[key].asnumpy()), key
    # The workers saw different data, so identical weights come from the parameter server.
    assert any(
        not np.array_equal(p0[k].asnumpy(), p1[k].asnumpy()) for k in p0 if k.startswith("aux:")
    )
