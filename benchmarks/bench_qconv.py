"""QConvolution (packed weights, direct xnor convolution) vs MXNet's float Convolution (oneDNN).

ResNet-18's 3x3 layers (stride 1, pad 1): 56x56x64, 28x28x128, 14x14x256, 7x7x512, at batch 1
and 16, with 1 and 2 threads, under MXNet's NaiveEngine and its default threaded engine, one row
per binmx ISA path (BINMX_ISA). Each (engine, threads, isa) runs in its own subprocess, because
MXNet reads MXNET_ENGINE_TYPE and OMP_NUM_THREADS at start-up (binmx reads OMP_NUM_THREADS and
BINMX_ISA per call). Both ops run in the same process on the same inputs, interleaved (float,
binary, float, binary, ...) so that load from other processes hits both alike; we report the
median of N timed calls after a warm-up, and the ratio float / binary. The "steady" columns time
rounds of consecutive calls of one op instead (the first call after a switch not timed): on
these machines a call that follows other work is slower than one that follows itself, and more
so for the short binary call (benchmarks/README.md, run 5).

    python benchmarks/bench_qconv.py            # full table
    python benchmarks/bench_qconv.py --quick    # batch 1 only, fewer repeats
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time

LAYERS = [(56, 64), (28, 128), (14, 256), (7, 512)]  # (spatial size, channels)


def _worker(batches: list[int], repeats: int) -> None:
    import binmx
    import mxnet as mx
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        for size, ch in LAYERS:
            x = mx.nd.array(rng.standard_normal((batch, ch, size, size)).astype(np.float32))
            w = rng.standard_normal((ch, ch, 3, 3)).astype(np.float32)
            wf = mx.nd.array(w)
            wp = mx.nd.array(binmx.pack_weight(w), dtype=np.int64)
            conv = dict(kernel=(3, 3), pad=(1, 1), num_filter=ch, no_bias=True)

            def run_float(x=x, wf=wf, conv=conv):
                return mx.nd.Convolution(x, wf, **conv)

            def run_binary(x=x, wp=wp, conv=conv):
                return mx.nd.QConvolution(x, wp, binarized_weights_only=True, **conv)

            fns = {"float": run_float, "binary": run_binary}
            samples: dict[str, list[float]] = {name: [] for name in fns}
            for fn in fns.values():
                for _ in range(3):
                    fn().wait_to_read()
            for _ in range(repeats):
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    fn().wait_to_read()
                    samples[name].append(time.perf_counter() - t0)
            times = {name: float(np.median(v)) * 1e3 for name, v in samples.items()}
            # Steady state: rounds of consecutive calls of one op (the first after a switch
            # not timed), the two ops taking turns.
            steady: dict[str, list[float]] = {name: [] for name in fns}
            for _ in range(4):
                for name, fn in fns.items():
                    fn().wait_to_read()
                    for _ in range(max(1, repeats // 4)):
                        t0 = time.perf_counter()
                        fn().wait_to_read()
                        steady[name].append(time.perf_counter() - t0)
            st = {name: float(np.median(v)) * 1e3 for name, v in steady.items()}
            rows.append(
                dict(
                    batch=batch,
                    size=size,
                    channels=ch,
                    float_ms=times["float"],
                    binary_ms=times["binary"],
                    steady_float_ms=st["float"],
                    steady_binary_ms=st["binary"],
                )
            )
    print("ROWS " + json.dumps(dict(rows=rows, isa=binmx.xnor.current_isa())))


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
            else:
                name = platform.processor()
    except OSError:
        name = platform.processor()
    return name


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="batch 1 only, 5 repeats")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per op (median)")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--engines", default="NaiveEngine,ThreadedEnginePerDevice")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,16)")
    p.add_argument(
        "--isas",
        default=None,
        help="comma-separated binmx ISA paths (default: every available one)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    batches = [int(b) for b in (args.batches or ("1" if args.quick else "1,16")).split(",")]
    repeats = args.repeats or (5 if args.quick else 20)
    if args.worker:
        _worker(batches, repeats)
        return 0

    if args.isas:
        isas = args.isas.split(",")
    else:
        from binmx import xnor

        isas = list(reversed(xnor.available_isas()))
    try:
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "?"
    print(
        f"CPU: {_cpu_flags()}; {os.cpu_count()} CPUs; load average {load}; "
        f"repeats={repeats} (median), warm-up 3"
    )
    print(
        f"{'engine':24s} {'thr':>3s} {'batch':>5s} {'layer':>12s} {'float ms':>10s} "
        f"{'binary ms':>10s} {'ratio':>7s}   steady: {'float':>7s} {'binary':>7s} {'ratio':>6s}"
    )
    for engine, threads, isa in itertools.product(
        args.engines.split(","), args.threads.split(","), isas
    ):
        # one subprocess per (engine, threads, isa)
        env = dict(
            os.environ,
            MXNET_ENGINE_TYPE=engine,
            OMP_NUM_THREADS=threads,
            MXNET_SUBGRAPH_VERBOSE="0",
            BINMX_ISA=isa,
        )
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            "--batches",
            ",".join(map(str, batches)),
            "--repeats",
            str(repeats),
        ]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        line = next((ln for ln in res.stdout.splitlines() if ln.startswith("ROWS ")), None)
        if res.returncode != 0 or line is None:
            print(f"{engine} threads={threads} isa={isa}: worker failed\n{res.stderr[-2000:]}")
            return 1
        data = json.loads(line[5:])
        for r in data["rows"]:
            layer = f"{r['size']}x{r['size']}x{r['channels']}"
            print(
                f"{engine:24s} {threads:>3s} {r['batch']:5d} {layer:>12s} "
                f"{r['float_ms']:10.3f} {r['binary_ms']:10.3f} "
                f"{r['float_ms'] / r['binary_ms']:6.1f}x   steady: {r['steady_float_ms']:7.3f} "
                f"{r['steady_binary_ms']:7.3f} {r['steady_float_ms'] / r['steady_binary_ms']:5.1f}x"
                f"  [{data['isa']}]",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
