"""MXNet's BatchNorm (forward + backward, training) after a oneDNN Convolution vs after a
binmx QConvolution: the same shapes, the same BatchNorm; only the layout of its input differs
(oneDNN's blocked layout vs the plain NCHW array an extension operator returns).

Each graph is ``sum(BatchNorm(conv(data)))`` bound for training; the BatchNorm's cost is the
time of the graph minus the time of the same graph without it, median of N steps.

    python benchmarks/investigations/bench_bn_layout.py          # 64 channels, 32x32, batch 32
    python benchmarks/investigations/bench_bn_layout.py --channels 128 --size 16
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before MXNet and binmx load

    import binmx  # noqa: F401  (registers QConvolution)
    import mxnet as mx
    import numpy as np

    n, c, s = args.batch, args.channels, args.size
    rng = np.random.default_rng(0)
    x, w = mx.sym.var("data"), mx.sym.var("w")
    geo = dict(kernel=(3, 3), pad=(1, 1), num_filter=c, no_bias=True)
    convs = {
        "Convolution": mx.sym.Convolution(x, weight=w, name="c", **geo),
        "QConvolution": mx.sym.QConvolution(x, weight=w, name="q", **geo),
    }
    values = {
        "data": mx.nd.array(rng.standard_normal((n, c, s, s))),
        "w": mx.nd.array(rng.standard_normal((c, c, 3, 3)) * 0.1),
        "bn_gamma": mx.nd.ones(c),
        "bn_beta": mx.nd.zeros(c),
    }
    aux = {"bn_moving_mean": mx.nd.zeros(c), "bn_moving_var": mx.nd.ones(c)}

    def step_ms(sym) -> float:
        inputs = {k: values[k] for k in sym.list_arguments()}
        grads = {k: mx.nd.zeros_like(v) for k, v in inputs.items()}
        ex = sym.bind(
            mx.cpu(),
            inputs,
            args_grad=grads,
            aux_states={k: aux[k] for k in sym.list_auxiliary_states()},
        )
        times = []
        for i in range(args.steps + 5):
            t0 = time.perf_counter()
            ex.forward(is_train=True)
            ex.backward()
            mx.nd.waitall()
            if i >= 5:
                times.append(time.perf_counter() - t0)
        return float(np.median(times)) * 1e3

    print(f"BatchNorm forward + backward, ({n}, {c}, {s}, {s}), {args.threads} thread(s)")
    for name, conv in convs.items():
        bn = mx.sym.BatchNorm(conv, fix_gamma=False, eps=2e-5, name="bn")
        alone = step_ms(mx.sym.make_loss(mx.sym.sum(conv)))
        with_bn = step_ms(mx.sym.make_loss(mx.sym.sum(bn)))
        print(
            f"after {name:13s}: step {alone:8.2f} ms, with BatchNorm {with_bn:8.2f} ms, "
            f"BatchNorm {with_bn - alone:6.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
