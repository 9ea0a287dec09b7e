"""The runtime's file readers (src/runtime: params.h, json.h, npy.h) against MXNet and NumPy.

Builds the C++ tests (cmake -DBINMX_PYTHON=OFF -DBINMX_TESTS=ON in build/rt-tests), runs
rt_formats_test (valid and corrupted files built in memory), then writes real files with
``mx.nd.save`` / ``Module.save_checkpoint`` / ``numpy.save`` and checks through the tool
rt_formats_dump_test that the C++ readers return exactly the same names, dtypes, shapes and
bytes. The MXNet parts skip with a reason where mxnet is not importable (the runtime's CI venv).
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cmake_build import ROOT, build_targets

BUILD = ROOT / "build" / "rt-tests"
DTYPES = ["float32", "float64", "float16", "uint8", "int32", "int8", "int64"]
FLOAT_DTYPES = {"float32", "float64", "float16"}


@pytest.fixture(scope="module")
def tools() -> dict[str, Path]:
    return build_targets(BUILD, ["rt_formats_test", "rt_formats_dump_test"])


def _mxnet():
    try:
        import mxnet as mx
    except Exception as exc:  # ImportError, or a broken native library
        pytest.skip(
            f"mxnet is not importable ({type(exc).__name__}: {exc}); "
            "the MXNet-written files cannot be made here"
        )
    return mx


def _dump(tools: dict[str, Path], *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(tools["rt_formats_dump_test"]), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _read_params(tools: dict[str, Path], path: Path, out: Path) -> list[dict]:
    out.mkdir(exist_ok=True)
    res = _dump(tools, "params", path, out)
    assert res.returncode == 0, res.stderr
    return json.loads((out / "index.json").read_text())


def _check_params(index: list[dict], out: Path, expected: dict[str, np.ndarray]) -> None:
    """The C++ reader's arrays equal `expected` (name order, dtype, shape, bytes, ToFloat32)."""
    assert [e["name"] for e in index] == list(expected)
    for i, (entry, (name, arr)) in enumerate(zip(index, expected.items(), strict=True)):
        assert entry["dtype"] == str(arr.dtype), name
        assert entry["shape"] == list(arr.shape), name
        assert entry["nbytes"] == arr.nbytes, name
        assert entry["aligned"], name
        raw = (out / f"{i}.bin").read_bytes()
        assert raw == np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes(), (
            f"{name}: data bytes differ"
        )
        if entry["dtype"] in FLOAT_DTYPES:
            got = np.load(out / f"{i}.f32.npy")
            want = arr.astype(np.float32)  # the same round-to-nearest-even as the C++ cast
            assert got.shape == want.shape, name
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), name


def _sample(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype in FLOAT_DTYPES:
        return (rng.standard_normal(shape) * 10).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


SHAPES = [(1,), (7,), (3, 4), (2, 3, 4, 5), (0, 3), (63,), (64,), (65,), (129, 3), (1, 1, 1, 1)]


def test_cpp_formats_test(tools: dict[str, Path]) -> None:
    res = subprocess.run(
        [str(tools["rt_formats_test"])], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout[-8000:] + res.stderr[-2000:]
    assert " 0 failures" in res.stdout, res.stdout[-8000:]


def test_mxnet_params_every_dtype_and_shape(tools, tmp_path, rng) -> None:
    mx = _mxnet()
    expected: dict[str, np.ndarray] = {}
    for dtype in DTYPES:
        for shape in SHAPES:
            expected[f"arg:{dtype}_{'x'.join(map(str, shape))}"] = _sample(rng, dtype, shape)
        # A 0-d array: MXNet 1.9.1 writes it as V2 with ndim 0 followed by its data.
        scalar = np.array(_sample(rng, dtype, (1,))[0], dtype=dtype)
        assert mx.nd.array(scalar, dtype=dtype).shape == ()
        expected[f"aux:{dtype}_scalar"] = scalar
    path = tmp_path / "all.params"
    mx.nd.save(str(path), {k: mx.nd.array(v, dtype=v.dtype) for k, v in expected.items()})
    _check_params(_read_params(tools, path, tmp_path / "out"), tmp_path / "out", expected)


def test_mxnet_params_np_semantics(tools, tmp_path, rng) -> None:
    """Arrays saved under np shape semantics carry the V3 magic; 0-d and empty arrays included."""
    mx = _mxnet()
    expected: dict[str, np.ndarray] = {}
    for dtype in DTYPES:
        expected[f"{dtype}_scalar"] = np.array(_sample(rng, dtype, (1,))[0], dtype=dtype)
        expected[f"{dtype}_empty"] = _sample(rng, dtype, (0, 2))
        expected[f"{dtype}_3d"] = _sample(rng, dtype, (2, 3, 5))
    path = tmp_path / "np.params"
    with mx.util.np_shape(True), mx.util.np_array(True):
        mx.npx.save(str(path), {k: mx.np.array(v, dtype=v.dtype) for k, v in expected.items()})
    assert path.read_bytes()[24:28] == bytes.fromhex("cafa93f9")  # the V3 magic
    _check_params(_read_params(tools, path, tmp_path / "out"), tmp_path / "out", expected)


def test_mxnet_params_large(tools, tmp_path, rng) -> None:
    mx = _mxnet()
    expected = {
        "arg:fc_weight": _sample(rng, "float32", (1000, 1024)),
        "arg:conv_weight": _sample(rng, "float16", (256, 3, 7, 7)),
        "aux:idx": _sample(rng, "int64", (100003,)),
    }
    path = tmp_path / "large.params"
    mx.nd.save(str(path), {k: mx.nd.array(v, dtype=v.dtype) for k, v in expected.items()})
    _check_params(_read_params(tools, path, tmp_path / "out"), tmp_path / "out", expected)


def test_mxnet_module_checkpoint(tools, tmp_path) -> None:
    """A Module checkpoint: arg:/aux: parameters and the symbol JSON read back exactly."""
    mx = _mxnet()
    data = mx.sym.Variable("data")
    net = mx.sym.Convolution(data, num_filter=8, kernel=(3, 3), pad=(1, 1), name="conv1")
    net = mx.sym.BatchNorm(net, fix_gamma=False, name="bn1")
    net = mx.sym.Activation(net, act_type="relu", name="relu1")
    net = mx.sym.Pooling(net, kernel=(2, 2), stride=(2, 2), pool_type="max", name="pool1")
    net = mx.sym.FullyConnected(mx.sym.Flatten(net), num_hidden=10, name="fc1")
    net = mx.sym.SoftmaxOutput(net, name="softmax")
    mod = mx.mod.Module(net, data_names=["data"], label_names=["softmax_label"], context=mx.cpu())
    mod.bind(data_shapes=[("data", (1, 3, 8, 8))], label_shapes=[("softmax_label", (1,))])
    mx.random.seed(7)
    mod.init_params(initializer=mx.init.Xavier())
    prefix = tmp_path / "model"
    mod.save_checkpoint(str(prefix), 3)
    args, auxs = mod.get_params()
    expected = {f"arg:{k}": v.asnumpy() for k, v in args.items()}
    expected.update({f"aux:{k}": v.asnumpy() for k, v in auxs.items()})
    params = tmp_path / "model-0003.params"
    index = _read_params(tools, params, tmp_path / "out")
    # save_checkpoint's order is MXNet's business; compare by name.
    order = [e["name"] for e in index]
    assert sorted(order) == sorted(expected)
    _check_params(index, tmp_path / "out", {name: expected[name] for name in order})

    symbol = tmp_path / "model-symbol.json"
    res = _dump(tools, "json", symbol)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == json.loads(symbol.read_text())


def test_mxnet_params_errors(tools, tmp_path) -> None:
    mx = _mxnet()
    cases = {
        "list.params": ([mx.nd.ones((2,))], "names missing"),
        "csr.params": ({"w": mx.nd.zeros((2, 3)).tostype("csr")}, "storage type 2 (csr)"),
        "rsp.params": (
            {"w": mx.nd.zeros((2, 3)).tostype("row_sparse")},
            "storage type 1 (row_sparse)",
        ),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        mx.nd.save(str(path), data)
        res = _dump(tools, "params", path, tmp_path)
        assert res.returncode == 1 and message in res.stderr, (name, res.stderr)
        assert res.stderr.startswith(f"error: {path}: ") and res.stderr.count("\n") == 1
    path = tmp_path / "bool.params"  # bool exists only under np semantics
    with mx.util.np_shape(True), mx.util.np_array(True):
        mx.npx.save(str(path), {"b": mx.np.zeros((2,), dtype=bool)})
    res = _dump(tools, "params", path, tmp_path)
    assert res.returncode == 1 and "data type flag 7 (bool) is not supported" in res.stderr
    # Corruptions of a real file: truncated data, trailing bytes.
    good = tmp_path / "good.params"
    mx.nd.save(str(good), {"w": mx.nd.ones((4, 4))})
    raw = good.read_bytes()
    (tmp_path / "short.params").write_bytes(raw[:70])
    res = _dump(tools, "params", tmp_path / "short.params", tmp_path)
    assert res.returncode == 1 and "needs 64 bytes but the file has 6 left" in res.stderr
    (tmp_path / "long.params").write_bytes(raw + b"\0")
    res = _dump(tools, "params", tmp_path / "long.params", tmp_path)
    assert res.returncode == 1 and "1 bytes of trailing garbage" in res.stderr


# ---- .npy (NumPy only) -------------------------------------------------------------------------

NPY_SHAPES = [
    (),
    (0,),
    (1,),
    (5,),
    (3, 4, 5),
    (0, 3),
    (1, 1, 1, 1),
    (63,),
    (64,),
    (65,),
    (512, 1025),
    (2, 3, 224, 224),
]


@pytest.mark.parametrize("shape", NPY_SHAPES, ids=lambda s: "x".join(map(str, s)) or "scalar")
def test_numpy_npy_round_trip(tools, tmp_path, rng, shape) -> None:
    arr = (rng.standard_normal(shape) * 100).astype(np.float32)
    flat = arr.reshape(-1)
    if flat.size >= 6:  # special values survive bit for bit
        flat[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, np.float32(1e-45)]
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, arr)
    res = _dump(tools, "npy", src, dst)
    assert res.returncode == 0, res.stderr
    got = np.load(dst)
    assert got.dtype == np.float32 and got.shape == arr.shape
    assert np.array_equal(got.view(np.uint32), arr.view(np.uint32))
    # The writer's bytes are numpy.save's bytes (same version 1.0 header and padding).
    assert dst.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_numpy_npy_versions(tools, tmp_path, rng, version) -> None:
    arr = rng.standard_normal((4, 6)).astype(np.float32)[:, ::2]  # non-contiguous source
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version)
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    src.write_bytes(buf.getvalue())
    res = _dump(tools, "npy", src, dst)
    assert res.returncode == 0, res.stderr
    assert np.array_equal(np.load(dst), arr)


def test_numpy_npy_rejected(tools, tmp_path) -> None:
    cases = {
        "f8": (np.zeros((2, 3)), "dtype '<f8' (float64) is not supported"),
        "f2": (np.zeros(3, np.float16), "dtype '<f2' (float16)"),
        "i4": (np.zeros(3, np.int32), "dtype '<i4' (int32)"),
        "u1": (np.zeros(3, np.uint8), "dtype '|u1' (uint8)"),
        "b1": (np.zeros(3, bool), "dtype '|b1' (bool)"),
        "be": (np.zeros(3, ">f4"), "dtype '>f4' (big-endian float32)"),
        "obj": (np.array([1, "a"], dtype=object), "dtype '|O' (object array)"),
        "rec": (np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]), "structured dtype"),
        "fortran": (np.asfortranarray(np.zeros((3, 4), np.float32)), "fortran_order is True"),
    }
    for name, (arr, message) in cases.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, arr, allow_pickle=True)
        res = _dump(tools, "npy", path, tmp_path / "out.npy")
        assert res.returncode == 1, (name, res.stdout)
        assert message in res.stderr and str(path) in res.stderr, (name, res.stderr)
    good = tmp_path / "good.npy"
    np.save(good, np.ones((8, 8), np.float32))
    (tmp_path / "short.npy").write_bytes(good.read_bytes()[:-1])
    res = _dump(tools, "npy", tmp_path / "short.npy", tmp_path / "out.npy")
    assert res.returncode == 1 and "needs 256 bytes of data but the file has 255 left" in res.stderr
    res = _dump(tools, "npy", good, tmp_path)  # the output path is a directory
    assert res.returncode == 1 and "Is a directory" in res.stderr
    assert not list(tmp_path.glob("*.tmp-*"))
