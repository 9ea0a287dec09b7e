#!/usr/bin/env python3
"""Train a binary ResNet (BMXNet's pre-activation layout) on Fashion-MNIST, CIFAR-10 or ImageNet.

Layout (as BMXNet's binary ResNet; float first conv and last FC, everything in the blocks binary):

    data -> BatchNorm -> Convolution conv0 (float; 3x3 s1, or 7x7 s2 + max-pool for ImageNet)
    per residual unit (pre-activation):
        BatchNorm -> QActivation -> QConvolution 3x3 (stride s)
        BatchNorm -> QActivation -> QConvolution 3x3
        + shortcut: identity, or QConvolution 1x1 stride s on the first QActivation's output
    BatchNorm -> relu -> global average pool -> FullyConnected (float) -> SoftmaxOutput

``--depth`` picks the units per stage: 18 -> (2, 2, 2, 2) (ResNet-18), 34 -> (3, 4, 6, 3),
10 -> (1, 1, 1, 1). ``--width`` is the first stage's channel count (64 in ResNet-18; the stages
double it). ``--stem-stride 2`` (the default for 28x28 / 32x32 inputs) makes conv0 stride 2, so
the stages run at 14, 7, 4, 2 pixels. The defaults (Fashion-MNIST, depth 10, width 32, stem
stride 2, 15 epochs) train on two CPU cores in about 15 minutes, whole script (measured
2026-11-26: 90.58% test accuracy, float-weight and binarized alike);
``--depth 18 --width 64 --stem-stride 1`` is the full CIFAR-style ResNet-18.

    python examples/train_resnet.py                                    # Fashion-MNIST
    python examples/train_resnet.py --dataset cifar10 --data-dir ~/data/cifar-10-batches-py \\
        --depth 18 --width 64 --stem-stride 1 --epochs 100
    python examples/train_resnet.py --dataset imagenet --data-dir ~/data/imagenet-rec \\
        --depth 18 --width 64 --batch-size 256
    python examples/train_resnet.py --tiny                             # seconds, for tests
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import binmx  # noqa: F401  (registers mx.sym.QConvolution & co.)
import common
import mxnet as mx
import numpy as np
from binmx import data as bdata
from binmx import models

log = logging.getLogger("binmx.examples")

NUM_CLASSES = {"fashion-mnist": 10, "cifar10": 10, "imagenet": 1000}
IMAGE_SHAPE = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32), "imagenet": (3, 224, 224)}


def resnet_symbol(
    *,
    dataset: str = "fashion-mnist",
    depth: int = 18,
    width: int = 64,
    binary: bool = True,
    act_bit: int = 1,
    weight_bit: int = 1,
    stem_stride: int = 1,
    stem: str = "auto",
) -> mx.sym.Symbol:
    """Binary pre-activation ResNet for ``dataset`` (binmx.models.resnet; ``binary=False``: the
    float network of the same shape)."""
    return models.resnet(
        depth=depth,
        num_classes=NUM_CLASSES[dataset],
        image_shape=IMAGE_SHAPE[dataset],
        width=width,
        binary=binary,
        act_bit=act_bit,
        weight_bit=weight_bit,
        stem_stride=stem_stride,
        stem=stem,
    )


class AugmentIter(mx.io.DataIter):
    """Random crops (zero padding ``pad``) and horizontal flips over in-memory NCHW arrays."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, *, batch_size: int, pad: int, flip: bool, seed: int
    ):
        super().__init__(batch_size)
        self.x, self.y = x, y.astype(np.float32)
        self.pad, self.flip = pad, flip
        self.rng = np.random.default_rng(seed)
        self.provide_data = [mx.io.DataDesc("data", (batch_size, *x.shape[1:]))]
        self.provide_label = [mx.io.DataDesc("softmax_label", (batch_size,))]
        self.reset()

    def reset(self) -> None:
        self.order = self.rng.permutation(self.x.shape[0])
        self.cursor = 0

    def next(self) -> mx.io.DataBatch:
        if self.cursor + self.batch_size > self.x.shape[0]:
            raise StopIteration
        idx = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        batch = self.x[idx]
        n, _, h, w = batch.shape
        if self.pad:
            p = self.pad
            padded = np.pad(batch, ((0, 0), (0, 0), (p, p), (p, p)))
            dy = self.rng.integers(0, 2 * p + 1, n)
            dx = self.rng.integers(0, 2 * p + 1, n)
            batch = np.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
        if self.flip:
            mirror = self.rng.random(n) < 0.5
            batch[mirror] = batch[mirror, :, :, ::-1]
        return mx.io.DataBatch(
            data=[mx.nd.array(batch)],
            label=[mx.nd.array(self.y[idx])],
            pad=0,
            provide_data=self.provide_data,
            provide_label=self.provide_label,
        )


def record_count(idx_file: Path, *, default: int) -> int:
    """Records in a RecordIO data set, from its .idx file (one line each) when there is one."""
    if idx_file.is_file():
        with open(idx_file) as f:
            return sum(1 for line in f if line.strip())
    return default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="fashion-mnist", choices=sorted(NUM_CLASSES))
    p.add_argument(
        "--data-dir",
        default=None,
        help="data directory (Fashion-MNIST: default /usr/share/datasets/fashion-mnist)",
    )
    p.add_argument("--output-dir", default=None, help="default runs/resnet-DATASET")
    p.add_argument("--depth", type=int, default=10, choices=sorted(models.RESNET_UNITS))
    p.add_argument(
        "--width", type=int, default=32, help="channels of the first stage (64 = ResNet)"
    )
    p.add_argument(
        "--stem-stride",
        type=int,
        default=2,
        choices=[1, 2],
        help="stride of conv0 for 28x28/32x32 inputs (2 halves the cost of every stage)",
    )
    p.add_argument(
        "--stem",
        default="auto",
        choices=["auto", "int8"],
        help="conv0: float after bn_data, or QConvolution act_bit=weight_bit=8 on pixel / 255 "
        "(integer int8 kernel; not for the mean/std-normalised ImageNet input)",
    )
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--lr-schedule", default="cosine", choices=["cosine", "step", "none"])
    p.add_argument("--wd", type=float, default=0.0)
    p.add_argument(
        "--augment",
        choices=["auto", "on", "off"],
        default="auto",
        help="random crop + flip (auto: on for cifar10/imagenet, off for fashion-mnist)",
    )
    p.add_argument("--act-bit", type=int, default=1)
    p.add_argument("--weight-bit", type=int, default=1)
    p.add_argument(
        "--float",
        dest="float_model",
        action="store_true",
        help="train the float network of the same shape instead",
    )
    p.add_argument("--kv-store", default="local", help="local, device, dist_sync, dist_async")
    p.add_argument(
        "--image-size", type=int, default=224, help="ImageNet crop size (the .rec images' size)"
    )
    p.add_argument("--bench-batch", type=int, default=32)
    p.add_argument("--bench-repeats", type=int, default=10)
    p.add_argument(
        "--train-limit", type=int, default=0, help="use only the first N training images"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tiny", action="store_true", help="1 epoch on 256 images, depth 10, width 8 (for tests)"
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-convert", action="store_true")
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs, args.depth, args.width = 1, 10, 8
        args.batch_size = min(args.batch_size, 32)
        args.bench_batch, args.bench_repeats = min(args.bench_batch, 4), min(args.bench_repeats, 3)
        args.train_limit = 256
    if args.output_dir is None:
        args.output_dir = f"runs/resnet-{args.dataset}"
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    common.setup_logging()
    kv = common.make_kvstore(args.kv_store)
    out_dir = Path(args.output_dir)
    if kv.num_workers > 1:
        out_dir = out_dir / f"worker{kv.rank}"
    out_dir.mkdir(parents=True, exist_ok=True)
    mx.random.seed(args.seed + kv.rank)
    np.random.seed(args.seed + kv.rank)  # noqa: NPY002 (seeds code that uses the global RNG)
    binary = not args.float_model
    augment = args.augment == "on" or (args.augment == "auto" and args.dataset != "fashion-mnist")
    shape = IMAGE_SHAPE[args.dataset]
    if args.dataset == "imagenet":
        shape = (3, args.image_size, args.image_size)

    if args.dataset == "imagenet":

        def test_factory() -> mx.io.DataIter:
            return bdata.imagenet_iter(
                args.data_dir, "val", batch_size=args.batch_size, data_shape=shape
            )

        train_iter = bdata.imagenet_iter(
            args.data_dir,
            "train",
            batch_size=args.batch_size,
            data_shape=shape,
            num_parts=kv.num_workers,
            part_index=kv.rank,
            seed=args.seed,
        )
        test_iter, test = test_factory(), test_factory
        train_samples = record_count(Path(args.data_dir) / "train.idx", default=1_281_167)
        test_samples = record_count(Path(args.data_dir) / "val.idx", default=50_000)
        batches = max(1, train_samples // kv.num_workers // args.batch_size)
    else:
        x_train, y_train = bdata.load_dataset(args.dataset, "trainval", data_dir=args.data_dir)
        x_test, y_test = bdata.load_dataset(args.dataset, "test", data_dir=args.data_dir)
        if args.train_limit:
            x_train, y_train = x_train[: args.train_limit], y_train[: args.train_limit]
        if args.tiny:
            x_test, y_test = x_test[:128], y_test[:128]
        x_train, y_train = x_train[kv.rank :: kv.num_workers], y_train[kv.rank :: kv.num_workers]
        if augment:
            train_iter = AugmentIter(
                x_train,
                y_train,
                batch_size=args.batch_size,
                pad=4 if shape[1] == 32 else 2,
                flip=True,
                seed=args.seed + kv.rank,
            )
        else:
            train_iter = bdata.make_iter(
                x_train,
                y_train,
                batch_size=args.batch_size,
                shuffle=True,
                last_batch_handle="discard",
            )
        test_iter = bdata.make_iter(
            x_test, y_test, batch_size=common.divisor_batch(x_test.shape[0])
        )
        test = (x_test, y_test)
        train_samples, test_samples = int(x_train.shape[0]), int(x_test.shape[0])
        batches = train_samples // args.batch_size
        if batches == 0:
            raise ValueError(f"Expected at least --batch-size ({args.batch_size}) training images")

    model = f"{'binary' if binary else 'float'} ResNet-{args.depth} (width {args.width})"
    if args.stem == "int8" and args.dataset == "imagenet":
        raise SystemExit(
            "--stem int8 quantises clip(x, 0, 1): it needs pixel / 255 inputs, and "
            "the ImageNet reader normalises with the channel mean / std"
        )
    sym_kw = dict(
        dataset=args.dataset,
        depth=args.depth,
        width=args.width,
        stem_stride=args.stem_stride,
        stem=args.stem,
    )
    sym = resnet_symbol(binary=binary, act_bit=args.act_bit, weight_bit=args.weight_bit, **sym_kw)
    prefix = str(out_dir / f"resnet{args.depth}")
    _, history, train_seconds = common.fit_module(
        sym,
        train_iter,
        test_iter,
        kv=kv,
        num_epochs=args.epochs,
        optimizer=args.optimizer,
        lr=args.lr,
        lr_sched=args.lr_schedule,
        wd=args.wd,
        prefix=prefix,
        batches_per_epoch=batches,
        progress=not args.no_progress,
        desc="train",
    )
    results: dict = {
        "model": model,
        "dataset": args.dataset,
        "depth": args.depth,
        "width": args.width,
        "stem_stride": args.stem_stride,
        "stem": args.stem,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "learning_rate": args.lr,
        "lr_schedule": args.lr_schedule,
        "augment": augment,
        "kv_store": args.kv_store,
        "rank": kv.rank,
        "num_workers": kv.num_workers,
        "tiny": args.tiny,
        "train_samples": train_samples,
        "test_samples": test_samples,
        "train_seconds": train_seconds,
    }
    return common.finish_run(
        results=results,
        history=history,
        prefix=prefix,
        epoch=args.epochs,
        test=test,
        eval_batch=256 if args.dataset != "imagenet" else args.batch_size,
        binary=binary,
        convert_model=not args.no_convert,
        float_sym=resnet_symbol(binary=False, **sym_kw),
        bench_shape=(args.bench_batch, *shape),
        bench_repeats=args.bench_repeats,
        seed=args.seed,
        out_dir=out_dir,
        title=f"{model} on {args.dataset}",
    )


if __name__ == "__main__":
    main()
