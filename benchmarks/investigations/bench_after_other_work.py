"""How much slower a forward is when other work ran just before it (the alternating penalty).

``bench_resnet18.py`` times the binarized and the float ResNet-18 alternately, so every binary
forward follows a 25 ms float forward. This script times the same bound executors (1 thread,
224x224, batch 1) after each of these, run just before every timed forward (untimed):

  nothing        back-to-back forwards of the same network
  busy N ms      a Python busy loop of N ms (touches almost no memory, no vector code)
  sleep 5 ms     time.sleep
  64 MiB write   a NumPy write over 64 MiB (evicts the caches)
  other network  one forward of the other network

and prints the median per case, for the binary and the float network. If a pure busy loop
slows the next forward as much as the float network does, the penalty is not the float
network's cache footprint but the machine (a shared VM's vCPU state); see benchmarks/README.md.

    python benchmarks/investigations/bench_after_other_work.py [--reps 40]
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
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before MXNet and binmx load

    import binmx
    import mxnet as mx
    import numpy as np
    from bench_resnet18 import _bind_executor, build

    shape = (1, 3, 224, 224)
    data = mx.nd.array(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    nets = {}
    for kind in ("binary", "float"):
        sym, params, aux = build(mx, np, binmx, 224, 1, kind == "binary")
        nets[kind] = _bind_executor(mx, sym, params, aux, data)

    def forward_ms(ex) -> float:
        t0 = time.perf_counter()
        ex.forward(is_train=False)[0].wait_to_read()
        return (time.perf_counter() - t0) * 1e3

    def busy(ms: float) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < ms / 1e3:
            pass

    flush = np.zeros(16 << 20, dtype=np.float32)

    def write() -> None:
        flush[:] += 1.0

    for ex in nets.values():
        for _ in range(5):
            forward_ms(ex)
    print(f"median ms of {args.reps} forwards, each after the case's work (1 thread, {shape})")
    print(f"{'before each forward':<22} {'binary ms':>10} {'float ms':>10}")
    cases = [
        ("nothing", lambda other: None),
        ("busy 1 ms", lambda other: busy(1)),
        ("busy 5 ms", lambda other: busy(5)),
        ("busy 25 ms", lambda other: busy(25)),
        ("sleep 5 ms", lambda other: time.sleep(0.005)),
        ("64 MiB write", lambda other: write()),
        ("other network", lambda other: forward_ms(other)),
    ]
    for name, before in cases:
        row = []
        for kind, other in (("binary", "float"), ("float", "binary")):
            times = []
            for _ in range(args.reps):
                before(nets[other])
                times.append(forward_ms(nets[kind]))
            row.append(float(np.median(times)))
        print(f"{name:<22} {row[0]:>10.3f} {row[1]:>10.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
