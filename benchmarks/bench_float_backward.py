"""QConvolution training step (forward + STE backward) per backward method, vs MXNet's Convolution.

The binary forward runs on the xnor kernels; the STE gradients (dx, dW) run on OpenBLAS in one of
three ways (src/float/: float_conv.cc, conv_shift.cc, conv_rows.cc), chosen by shape or forced with
BINMX_FLOAT_CONV: im2col + GEMM, shifted GEMMs on a shared-padding grid ("shift", stride 1), or a
channels-last im2col ("rows"). For each layer shape this times ``autograd.record(); QConvolution;
backward`` with every method and "auto" (the choice binmx makes), and the same step of MXNet's own
float Convolution (oneDNN) on the same shapes, interleaved in one process under NaiveEngine; median
of N. The env variable is read on every call, so one process can compare the methods.

    python benchmarks/bench_float_backward.py               # 1 thread
    OMP_NUM_THREADS=2 python benchmarks/bench_float_backward.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")

# name: (input NCHW, filters, kernel, pad, stride)
SHAPES = {
    "lenet conv2 b64": ((64, 64, 12, 12), 64, (5, 5), (0, 0), (1, 1)),
    "fmnist 14x14x32 b128": ((128, 32, 14, 14), 32, (3, 3), (1, 1), (1, 1)),
    "fmnist 7x7x64 b128": ((128, 64, 7, 7), 64, (3, 3), (1, 1), (1, 1)),
    "fmnist 4x4x128 b128": ((128, 128, 4, 4), 128, (3, 3), (1, 1), (1, 1)),
    "fmnist 2x2x256 b128": ((128, 256, 2, 2), 256, (3, 3), (1, 1), (1, 1)),
    "fmnist 14->7 s2 b128": ((128, 32, 14, 14), 64, (3, 3), (1, 1), (2, 2)),
    "r18 32x32x64 b32": ((32, 64, 32, 32), 64, (3, 3), (1, 1), (1, 1)),
    "r18 16x16x128 b32": ((32, 128, 16, 16), 128, (3, 3), (1, 1), (1, 1)),
    "r18 8x8x256 b32": ((32, 256, 8, 8), 256, (3, 3), (1, 1), (1, 1)),
    "r18 4x4x512 b32": ((32, 512, 4, 4), 512, (3, 3), (1, 1), (1, 1)),
    "r18 14x14x256 b4": ((4, 256, 14, 14), 256, (3, 3), (1, 1), (1, 1)),
    "r18 7x7x512 b4": ((4, 512, 7, 7), 512, (3, 3), (1, 1), (1, 1)),
}
METHODS = ["auto", "im2col", "shift", "rows"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=9, help="timed steps per method (median)")
    ap.add_argument("--shapes", nargs="*", choices=list(SHAPES), default=list(SHAPES))
    args = ap.parse_args(argv)

    import binmx  # noqa: F401  (registers the Q ops)
    import mxnet as mx
    import numpy as np

    rng = np.random.default_rng(0)
    threads = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    print(
        f"threads {threads}; engine {os.environ['MXNET_ENGINE_TYPE']}; forward + backward (ms, "
        f"median of {args.repeats}); float = mx.nd.Convolution (oneDNN) on the same shape"
    )
    head = " ".join(f"{m:>8}" for m in METHODS)
    print(f"{'layer':<22} {head} {'float':>8} {'auto/float':>10}")
    for name in args.shapes:
        xs, f, k, pad, stride = SHAPES[name]
        x = mx.nd.array(rng.standard_normal(xs).astype(np.float32))
        w = mx.nd.array(rng.standard_normal((f, xs[1], *k)).astype(np.float32))
        x.attach_grad()
        w.attach_grad()
        conv = dict(kernel=k, pad=pad, stride=stride, num_filter=f, no_bias=True)

        def step(op, x=x, w=w, conv=conv):
            with mx.autograd.record():
                y = op(x, w, **conv)
            y.backward()
            mx.nd.waitall()

        runs = {m: (m, mx.nd.QConvolution) for m in METHODS}
        runs["float"] = ("auto", mx.nd.Convolution)
        samples: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeats + 2):
            for key, (method, op) in runs.items():
                os.environ["BINMX_FLOAT_CONV"] = "" if method == "auto" else method
                t0 = time.perf_counter()
                step(op)
                samples[key].append(time.perf_counter() - t0)
        med = {k: float(np.median(v[2:])) * 1e3 for k, v in samples.items()}
        cols = " ".join(f"{med[m]:8.2f}" for m in METHODS)
        print(
            f"{name:<22} {cols} {med['float']:8.2f} {med['auto'] / med['float']:10.2f}", flush=True
        )
    os.environ.pop("BINMX_FLOAT_CONV", None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
