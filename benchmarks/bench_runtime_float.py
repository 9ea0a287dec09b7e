"""The runtime's float layers (src/runtime/float_ops.h) against MXNet's oneDNN on the same shapes.

The runtime side is the C++ timing driver ``rt_float_bench`` (built into build/rt-tests when
missing); the baseline is a bound MXNet executor (Convolution + Activation + Pooling, or
FullyConnected) timed here, in two alternating rounds, so both sides see the same machine
state. Prints median and best milliseconds of each and the ratios MXNet / runtime.

    python benchmarks/bench_runtime_float.py [--threads 1] [--reps 100] [--quick]

MXNet reads OMP_NUM_THREADS when it is imported, so the thread count is set before the import.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "rt-tests"
DRIVER = BUILD / "src" / "runtime" / "rt_float_bench"

# rt_float_bench row -> ("conv", data shape, filters, kernel, stride, pad, relu, pool 3x3/2 pad 1)
#                  or ("fc", data shape, hidden)
LAYERS = {
    "resnet18 stem 7x7/2 3->64 224 +relu+pool": ("conv", (1, 3, 224, 224), 64, 7, 2, 3, True, True),
    "resnet18 stem 7x7/2 3->64 224 +relu": ("conv", (1, 3, 224, 224), 64, 7, 2, 3, True, False),
    "3x3 64->64 56x56 pad 1 +relu": ("conv", (1, 64, 56, 56), 64, 3, 1, 1, True, False),
    "1x1/2 128->256 28x28 (shortcut)": ("conv", (1, 128, 28, 28), 256, 1, 2, 0, False, False),
    "1x1 128->128 28x28 (no im2col)": ("conv", (1, 128, 28, 28), 128, 1, 1, 0, False, False),
    "lenet conv0 5x5 1->64 28x28 batch 1": ("conv", (1, 1, 28, 28), 64, 5, 1, 0, False, False),
    "lenet conv0 5x5 1->64 28x28 batch 64": ("conv", (64, 1, 28, 28), 64, 5, 1, 0, False, False),
    "fc 512->1000 rows 1": ("fc", (1, 512), 1000),
    "fc 512->1000 rows 16": ("fc", (16, 512), 1000),
}


def _driver() -> Path:
    if DRIVER.exists():
        return DRIVER
    cmake = Path(sys.executable).parent / "cmake"
    cmake_cmd = str(cmake) if cmake.exists() else shutil.which("cmake")
    if cmake_cmd is None:
        sys.exit("needs cmake to build rt_float_bench")
    subprocess.run(
        [cmake_cmd, "-S", str(ROOT), "-B", str(BUILD), "-DBINMX_PYTHON=OFF", "-DBINMX_TESTS=ON"],
        check=True,
    )
    subprocess.run(
        [cmake_cmd, "--build", str(BUILD), "-j2", "--target", "rt_float_bench"], check=True
    )
    return DRIVER


def _mxnet_times(mx, np, spec: tuple, reps: int) -> tuple[float, float]:
    """Median and best ms of one bound-executor forward."""
    data = mx.sym.var("data")
    if spec[0] == "conv":
        _, shape, filters, k, s, p, relu, pool = spec
        y = mx.sym.Convolution(
            data, kernel=(k, k), stride=(s, s), pad=(p, p), num_filter=filters, name="conv"
        )
        if relu:
            y = mx.sym.Activation(y, act_type="relu")
        if pool:
            y = mx.sym.Pooling(y, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    else:
        _, shape, hidden = spec
        y = mx.sym.FullyConnected(data, num_hidden=hidden, name="fc")
    ex = y.simple_bind(mx.cpu(), data=shape, grad_req="null")
    rng = np.random.default_rng(0)
    for arr in ex.arg_arrays:
        arr[:] = rng.uniform(-1, 1, arr.shape).astype(np.float32)
    times = []
    for i in range(reps + 5):
        t0 = time.perf_counter()
        ex.forward(is_train=False)
        ex.outputs[0].wait_to_read()
        if i >= 5:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2], times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="20 repetitions")
    args = parser.parse_args()
    reps = 20 if args.quick else args.reps
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import mxnet as mx
    import numpy as np

    cpu = platform.processor() or "?"
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    print(f"cpu: {cpu}, {os.cpu_count()} logical cores; threads={args.threads}, reps={reps}")
    # Two rounds of (MXNet, runtime); each side keeps its lower median and best of the two, so
    # a load change on this shared machine favours neither.
    driver = _driver()
    mx_rounds, rt_rounds = [], []
    for _ in range(2):
        mx_rounds.append({name: _mxnet_times(mx, np, spec, reps) for name, spec in LAYERS.items()})
        # MXNet's OpenMP threads spin for a while after its last region; on 2 cores they would
        # take the driver's second core (measured: 20-50 ms instead of 1.4 ms at 2 threads).
        time.sleep(2.0)
        out = subprocess.run(
            [str(driver), "--reps", str(reps)], check=True, capture_output=True, text=True
        ).stdout
        rt_rounds.append(out)
    print(rt_rounds[0].splitlines()[0])
    row = re.compile(r"^(.*?)\s+(\S+)\s+(\S+)\s+t=(\d+)\s+median\s+(\S+) ms.*best\s+(\S+) ms")
    print(
        f"{'layer':42} {'method':10} {'runtime med/best ms':>20} {'MXNet med/best ms':>18} "
        f"{'MXNet/runtime median':>20} {'best':>6}"
    )
    runtime: dict[str, tuple[str, float, float]] = {}
    for out in rt_rounds:
        for line in out.splitlines()[1:]:
            m = row.match(line)
            if m is None or int(m.group(4)) != args.threads:
                continue
            name, med, best = m.group(1).strip(), float(m.group(5)), float(m.group(6))
            if name in runtime:
                med, best = min(med, runtime[name][1]), min(best, runtime[name][2])
            runtime[name] = (m.group(3), med, best)
    for name, (method, med, best) in runtime.items():
        mx_med = min(r[name][0] for r in mx_rounds)
        mx_best = min(r[name][1] for r in mx_rounds)
        print(
            f"{name:42} {method:10} {med:9.3f}/{best:<9.3f} {mx_med:8.3f}/{mx_best:<8.3f} "
            f"{mx_med / med:20.2f} {mx_best / best:6.2f}"
        )


if __name__ == "__main__":
    main()
