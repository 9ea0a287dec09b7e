"""One training step, binary vs float: the binary LeNet and a binary ResNet-18 (Module API).

A training step is ``Module.forward_backward(batch)`` + ``Module.update()`` (SGD with momentum)
followed by ``mx.nd.waitall()``. Each network is built twice with the same shape: binary
(QActivation backward_only -> QConvolution / QFullyConnected, as BMXNet) and float (the same
graph with Activation -> Convolution / FullyConnected). Both are bound and stepped in the same
process on the same batch, alternating binary and float steps so machine noise hits both; we
report the median of N timed steps after a warm-up and the ratio binary / float (target <= 1.0).

Networks
  lenet     BMXNet LeNet on 28x28x1: float conv 5x5x64 -> BN -> relu -> pool -> BN -> QAct ->
            QConv 5x5x64 -> pool -> BN -> QAct -> QFC 1000 -> BN -> tanh -> FC 10 (batch 64, 256)
  resnet18  pre-activation ResNet-18 (BMXNet layout: float conv0 and FC, BN -> QAct -> QConv in
            the units, 1x1 QConv shortcuts), width 64: 32x32x3 input (3x3 stem, stride 1) at
            batch 32, and 224x224x3 (7x7/2 stem + max-pool) at batch 4

Each thread count runs in its own subprocess: MXNet and binmx read OMP_NUM_THREADS at start-up.
``--profile`` prints MXNet's aggregate per-operator table for one network instead.

    python benchmarks/bench_train.py                 # full table, 1 and 2 threads
    python benchmarks/bench_train.py --quick         # fewer steps, no 224x224
    python benchmarks/bench_train.py --profile resnet18-32 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

CASES = {
    # name: (network, input shape (C, H, W), batch)
    "lenet-64": ("lenet", (1, 28, 28), 64),
    "lenet-256": ("lenet", (1, 28, 28), 256),
    "resnet18-32": ("resnet18", (3, 32, 32), 32),
    "resnet18-224": ("resnet18", (3, 224, 224), 4),
}


def lenet(mx, binary: bool):
    """BMXNet's LeNet (binmx.models.binary_lenet; binary=False: the float LeNet)."""
    import binmx

    return binmx.models.binary_lenet(binary=binary)


def resnet18(mx, binary: bool, image: int, classes: int = 10):
    """Pre-activation ResNet-18 (binmx.models.resnet: 7x7/2 + max-pool stem for 224x224
    inputs, 3x3/1 for 32x32; binary=False: the float network of the same shape)."""
    import binmx

    return binmx.models.resnet(
        depth=18, num_classes=classes, image_shape=(3, image, image), binary=binary
    )


def _module(mx, np, case: str, binary: bool):
    net, shape, batch = CASES[case]
    sym = lenet(mx, binary) if net == "lenet" else resnet18(mx, binary, shape[1])
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["softmax_label"], context=mx.cpu())
    mod.bind(data_shapes=[("data", (batch, *shape))], label_shapes=[("softmax_label", (batch,))])
    mx.random.seed(0)
    mod.init_params(mx.init.Xavier(magnitude=2.0))
    mod.init_optimizer(
        optimizer="sgd", optimizer_params={"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4}
    )
    rng = np.random.default_rng(0)
    data = mx.nd.array(rng.standard_normal((batch, *shape)).astype(np.float32))
    label = mx.nd.array(rng.integers(0, 10, batch).astype(np.float32))
    return mod, mx.io.DataBatch(data=[data], label=[label])


def _step(mx, mod, batch) -> float:
    t0 = time.perf_counter()
    mod.forward_backward(batch)
    mod.update()
    mx.nd.waitall()
    return time.perf_counter() - t0


def _worker(cases: list[str], steps: int, warmup: int) -> None:
    import binmx  # noqa: F401  (registers the Q ops)
    import mxnet as mx
    import numpy as np

    rows = []
    for case in cases:
        mods = {kind: _module(mx, np, case, kind == "binary") for kind in ("binary", "float")}
        for _ in range(warmup):
            for mod, batch in mods.values():
                _step(mx, mod, batch)
        samples = {"binary": [], "float": []}
        for _ in range(steps):
            for kind, (mod, batch) in mods.items():
                samples[kind].append(_step(mx, mod, batch))
        med = {k: float(np.median(v)) * 1e3 for k, v in samples.items()}
        rows.append(
            dict(
                case=case,
                batch=CASES[case][2],
                binary_ms=med["binary"],
                float_ms=med["float"],
                ratio=med["binary"] / med["float"],
                binary_min_ms=min(samples["binary"]) * 1e3,
                float_min_ms=min(samples["float"]) * 1e3,
            )
        )
    print(json.dumps(rows))


def _profile(case: str, steps: int) -> None:
    import binmx  # noqa: F401
    import mxnet as mx
    import numpy as np

    for kind in ("binary", "float"):
        mod, batch = _module(mx, np, case, kind == "binary")
        for _ in range(2):
            _step(mx, mod, batch)
        mx.profiler.set_config(
            profile_all=True, aggregate_stats=True, filename=f"/tmp/bench_train_{kind}.json"
        )
        mx.profiler.set_state("run")
        for _ in range(steps):
            _step(mx, mod, batch)
        mx.profiler.set_state("stop")
        print(f"==== {case} {kind}: {steps} steps")
        print(mx.profiler.dumps(reset=True, format="table", sort_by="total", ascending=False))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, no 224x224 case")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per network")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cases", nargs="+", choices=sorted(CASES), default=None)
    ap.add_argument(
        "--profile",
        choices=sorted(CASES),
        default=None,
        help="print MXNet's per-operator table for one case (first --threads value)",
    )
    ap.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    steps = args.steps or (5 if args.quick else 15)
    cases = args.cases or ([c for c in CASES if c != "resnet18-224"] if args.quick else list(CASES))
    if args._worker:
        _worker(cases, steps, warmup=2)
        return 0
    if args.profile:
        os.environ["OMP_NUM_THREADS"] = str(args.threads[0])
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
                f"import bench_train as b; b._profile({args.profile!r}, {steps})",
            ],
            check=True,
            env=dict(os.environ),
        )
        return 0

    import scipy_openblas32
    from binmx import xnor

    print(
        f"CPU: {_cpu_name()}; binmx ISA {xnor.available_isas()[-1]}; "
        f"BLAS: {scipy_openblas32.get_openblas_config()}"
    )
    print(f"median of {steps} steps after 2 warm-up steps; ratio = binary / float (target <= 1.0)")
    print(
        f"{'threads':>7} {'case':<14} {'batch':>5} {'binary ms':>10} {'float ms':>10} {'ratio':>6}"
    )
    for threads in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        out = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--_worker",
                "--steps",
                str(steps),
                "--cases",
                *cases,
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for r in json.loads(out.strip().splitlines()[-1]):
            print(
                f"{threads:>7} {r['case']:<14} {r['batch']:>5} {r['binary_ms']:>10.2f} "
                f"{r['float_ms']:>10.2f} {r['ratio']:>6.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
