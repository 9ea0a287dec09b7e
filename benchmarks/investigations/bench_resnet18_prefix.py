"""Where the binarized ResNet-18's inference time goes, inside the whole graph.

MXNet runs a bound inference executor as one bulked engine op, so its profiler gives no
per-layer times, and one-node executors (``bench_resnet18.py``'s per-layer table) miss what
happens *between* layers (oneDNN's blocked layouts reordered for extension ops, for one).
This script binds every prefix of the graph (the sub-graph from the input to one node's
output) as its own executor, times each (median of N forwards, 1 thread by default), and
prints the cumulative time and its increase per node. The increase is that node's cost in
the graph, up to noise (a prefix can come out a little faster than a shorter one).

    python benchmarks/investigations/bench_resnet18_prefix.py          # binarized, 224x224, batch 1
    python benchmarks/investigations/bench_resnet18_prefix.py --float --image 32
    python benchmarks/investigations/bench_resnet18_prefix.py --cold   # caches evicted first

``--cold`` writes a 64 MiB buffer before every timed forward (not timed), as the float network
does between the binary forwards in ``bench_resnet18.py``'s alternating loop: the prefix then
finds its weights and buffers in L3 or memory instead of L2, and the rows show which nodes pay.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# bench_resnet18 (the networks and their binding) lives one directory up, in benchmarks/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--float", action="store_true", help="the float ResNet-18 instead")
    ap.add_argument("--image", type=int, default=224, choices=(224, 32))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--cold", action="store_true", help="evict the caches before each forward")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before MXNet and binmx load

    import binmx
    import mxnet as mx
    import numpy as np
    from bench_resnet18 import build

    sym, params, aux = build(mx, np, binmx, args.image, args.batch, not args.float)
    shape = (args.batch, 3, args.image, args.image)
    data = mx.nd.array(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    values = {**params, "data": data, "softmax_label": mx.nd.zeros(args.batch)}
    internals = sym.get_internals()
    print(
        f"{'binarized' if not args.float else 'float'} ResNet-18 {shape}, "
        f"{args.threads} thread(s), median of {args.reps} forwards of each prefix"
        + (", caches evicted before each" if args.cold else "")
    )
    flush = np.zeros(16 << 20, dtype=np.float32)  # 64 MiB, for --cold
    print(f"{'node output':40s} {'prefix ms':>9s} {'+ms':>7s}")
    prev = 0.0
    for name in internals.list_outputs():
        if not name.endswith("_output"):
            continue
        s = internals[name]
        ex = s.bind(
            mx.cpu(),
            {k: values[k] for k in s.list_arguments()},
            aux_states={k: aux[k] for k in s.list_auxiliary_states()},
            grad_req="null",
        )
        for _ in range(5):
            ex.forward(is_train=False)[0].wait_to_read()
        times = []
        for _ in range(args.reps):
            if args.cold:
                flush[:] += 1.0
            t0 = time.perf_counter()
            ex.forward(is_train=False)[0].wait_to_read()
            times.append(time.perf_counter() - t0)
        ms = float(np.median(times)) * 1e3
        print(f"{name[: -len('_output')]:40s} {ms:9.3f} {ms - prev:+7.3f}")
        prev = ms
    return 0


if __name__ == "__main__":
    sys.exit(main())
