"""What it costs MXNet to hand a oneDNN-blocked array to a plain-layout reader.

A 1x1 ``Convolution`` (oneDNN, output in its blocked layout) is followed by one of:
``Reshape(shape=(-2,))`` (the plain NCHW copy ``binmx.fold`` inserts, pass 9),
``transpose(axes=(0, 2, 3, 1))`` (plain NHWC) or ``transpose(axes=(0, 1, 2, 3))``. The cost is
the graph's time minus the convolution alone, median of N forwards, 1 thread by default.

    python benchmarks/investigations/bench_reorder.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[14, 28, 56, 112])
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before MXNet loads

    import mxnet as mx
    import numpy as np

    rng = np.random.default_rng(0)
    c = args.channels
    print(f"reorder of a oneDNN-blocked (1, {c}, S, S) float32 array, ms over the conv alone")
    print(
        f"{'S':>4s} {'KiB':>6s} {'Reshape->NCHW':>14s} {'transpose->NHWC':>16s}",
        f"{'transpose id':>13s}",
    )
    for s in args.sizes:
        conv = mx.sym.Convolution(
            mx.sym.var("data"), kernel=(1, 1), num_filter=c, no_bias=True, name="c"
        )
        variants = {
            "conv": conv,
            "reshape": mx.sym.Reshape(conv, shape=(-2,)),
            "nhwc": mx.sym.transpose(conv, axes=(0, 2, 3, 1)),
            "identity": mx.sym.transpose(conv, axes=(0, 1, 2, 3)),
        }
        inputs = {
            "data": mx.nd.array(rng.standard_normal((1, 16, s, s))),
            "c_weight": mx.nd.array(rng.standard_normal((c, 16, 1, 1))),
        }
        ms = {}
        for name, sym in variants.items():
            ex = sym.bind(mx.cpu(), inputs, grad_req="null")
            times = []
            for i in range(args.reps + 20):
                t0 = time.perf_counter()
                ex.forward(is_train=False)[0].wait_to_read()
                if i >= 20:
                    times.append(time.perf_counter() - t0)
            ms[name] = float(np.median(times)) * 1e3
        d = {k: v - ms["conv"] for k, v in ms.items()}
        kib = c * s * s * 4 // 1024
        print(f"{s:4d} {kib:6d} {d['reshape']:14.3f} {d['nhwc']:16.3f} {d['identity']:13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
