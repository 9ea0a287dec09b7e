#!/usr/bin/env python3
"""Train BMXNet's binary LeNet on MNIST, convert it to 1-bit weights, evaluate and time it.

The network (float first conv and last FC, binary in between, as in BMXNet's binary LeNet):

    data 1x28x28
    Convolution 5x5, 64 (float) -> BatchNorm -> relu -> max-pool 2x2
    BatchNorm -> QActivation -> QConvolution 5x5, 64 (1-bit) -> max-pool 2x2
    BatchNorm -> QActivation -> QFullyConnected 1000, no bias (1-bit)
    BatchNorm -> tanh -> FullyConnected 10 (float) -> SoftmaxOutput

Steps: train with Module.fit (or a Gluon loop with --gluon) on the 60,000 training images,
checkpoint each epoch (OUTPUT_DIR/lenet-symbol.json, lenet-EPOCH.params), convert the last
checkpoint with binmx.convert_checkpoint (binarized_lenet-*), evaluate both on the 10,000 test
images, time the converted model against a float LeNet of the same shape, and write
OUTPUT_DIR/results.json and OUTPUT_DIR/training_curves.png.

    python examples/train_mnist.py                    # defaults: the README's demo
    python examples/train_mnist.py --gluon            # the same network as Gluon blocks
    python examples/train_mnist.py --tiny             # seconds: 1 epoch on 512 images
    python tools/launch_local.py -n 2 -- python examples/train_mnist.py --kv-store dist_sync
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


# BMXNet's binary LeNet (binary=False: the float LeNet of the same shape).
lenet_symbol = models.binary_lenet


def lenet_gluon(*, binary: bool = True, act_bit: int = 1, weight_bit: int = 1):
    """The same network as Gluon blocks (binmx.gluon.QConv2D / QDense / QActivation)."""
    from mxnet.gluon import nn

    net = nn.HybridSequential(prefix="lenet_")
    with net.name_scope():
        net.add(
            nn.Conv2D(64, kernel_size=5),
            nn.BatchNorm(),
            nn.Activation("relu"),
            nn.MaxPool2D(pool_size=2, strides=2),
            nn.BatchNorm(),
        )
        if binary:
            from binmx import gluon as bgluon

            net.add(
                bgluon.QActivation(act_bit=act_bit, backward_only=True),
                bgluon.QConv2D(64, kernel_size=5, act_bit=act_bit, weight_bit=weight_bit),
            )
        else:
            net.add(nn.Activation("tanh"), nn.Conv2D(64, kernel_size=5))
        net.add(nn.MaxPool2D(pool_size=2, strides=2), nn.Flatten(), nn.BatchNorm())
        if binary:
            net.add(
                bgluon.QActivation(act_bit=act_bit, backward_only=True),
                bgluon.QDense(1000, use_bias=False, act_bit=act_bit, weight_bit=weight_bit),
            )
        else:
            net.add(nn.Activation("tanh"), nn.Dense(1000, use_bias=False))
        net.add(nn.BatchNorm(), nn.Activation("tanh"), nn.Dense(10))
    return net


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--output-dir", default="runs/mnist", help="where checkpoints and results go")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    p.add_argument("--lr", type=float, default=2e-3, help="base learning rate")
    p.add_argument("--lr-schedule", default="cosine", choices=["cosine", "step", "none"])
    p.add_argument("--wd", type=float, default=0.0, help="weight decay")
    p.add_argument("--act-bit", type=int, default=1)
    p.add_argument("--weight-bit", type=int, default=1)
    p.add_argument(
        "--stem",
        default="float",
        choices=["float", "int8"],
        help="conv1: float, or QConvolution act_bit=weight_bit=8 (integer int8 kernel)",
    )
    p.add_argument(
        "--float",
        dest="float_model",
        action="store_true",
        help="train the float LeNet of the same shape instead (the speed baseline)",
    )
    p.add_argument("--gluon", action="store_true", help="train with Gluon blocks instead of Module")
    p.add_argument("--kv-store", default="local", help="local, device, dist_sync, dist_async")
    p.add_argument("--bench-batch", type=int, default=64, help="batch size of the speed test")
    p.add_argument("--bench-repeats", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="1 epoch on 512 images, for tests")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    p.add_argument("--no-convert", action="store_true", help="skip conversion and speed test")
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs = 1
        args.bench_repeats = min(args.bench_repeats, 3)
        args.bench_batch = min(args.bench_batch, 16)
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
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

    x_train, y_train = bdata.load_mnist("trainval")
    x_test, y_test = bdata.load_mnist("test")
    if args.tiny:
        x_train, y_train = x_train[:512], y_train[:512]
        x_test, y_test = x_test[:256], y_test[:256]
    # Each distributed worker trains on its own shard of the training set.
    x_train, y_train = x_train[kv.rank :: kv.num_workers], y_train[kv.rank :: kv.num_workers]
    binary = not args.float_model
    model = "binary LeNet" if binary else "float LeNet"
    bits = dict(act_bit=args.act_bit, weight_bit=args.weight_bit)
    prefix = str(out_dir / "lenet")
    batches = x_train.shape[0] // args.batch_size
    if batches == 0:
        raise ValueError(f"Expected at least --batch-size ({args.batch_size}) training images")

    if args.gluon and args.stem != "float":
        raise SystemExit("--stem int8 is built with the Module API (drop --gluon)")
    if args.gluon:
        net = lenet_gluon(binary=binary, **bits)
        history, train_seconds = common.fit_gluon(
            net,
            (x_train, y_train),
            (x_test, y_test),
            kv=kv,
            num_epochs=args.epochs,
            batch_size=args.batch_size,
            optimizer=args.optimizer,
            lr=args.lr,
            lr_sched=args.lr_schedule,
            wd=args.wd,
            prefix=prefix,
            progress=not args.no_progress,
            desc="train",
            seed=args.seed,
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
        _, history, train_seconds = common.fit_module(
            lenet_symbol(binary=binary, stem=args.stem, **bits),
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
        "model": model + (" (Gluon)" if args.gluon else ""),
        "dataset": "mnist",
        "stem": args.stem,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "learning_rate": args.lr,
        "lr_schedule": args.lr_schedule,
        "kv_store": args.kv_store,
        "rank": kv.rank,
        "num_workers": kv.num_workers,
        "tiny": args.tiny,
        "train_samples": int(x_train.shape[0]),
        "test_samples": int(x_test.shape[0]),
        "train_seconds": train_seconds,
    }
    return common.finish_run(
        results=results,
        history=history,
        prefix=prefix,
        epoch=args.epochs,
        test=(x_test, y_test),
        eval_batch=256,
        binary=binary,
        convert_model=not args.no_convert,
        float_sym=lenet_symbol(binary=False),
        bench_shape=(args.bench_batch, 1, 28, 28),
        bench_repeats=args.bench_repeats,
        seed=args.seed,
        out_dir=out_dir,
        title=f"{model} on MNIST",
    )


if __name__ == "__main__":
    main()
