"""Integer k-bit layers (src/xnor_gemm/kbit.h) against MXNet's float Convolution, one process.

    .venv/bin/python benchmarks/bench_kbit.py            # ~2 min on the 2-core machine
    .venv/bin/python benchmarks/bench_kbit.py --quick    # fewer repetitions

1 thread, batch 1, MXNet's NaiveEngine, OMP_NUM_THREADS=1 (set in a worker subprocess before
MXNet is imported). Rows:
  ResNet-18's 3x3 layers (stride 1, pad 1; 56x56x64, 28x28x128, 14x14x256, 7x7x512) at
  act_bit/weight_bit (2,1), (2,2) (bit-serial kernel) and (8,8) (int8: VNNI where the CPU has it):
    float      mx.nd.Convolution (oneDNN) on the same input, float weights
    runtime    a one-layer QConvolution model in binmx_runtime (weights prepared at load):
               the inference path
    op         mx.nd.QConvolution with float weights: the training forward (weights
               re-quantised on every call, as before)
    fake-quant mx.nd.QConvolution at act_bit=weight_bit=9: no integer kernel, the im2col +
               OpenBLAS path on fake-quant floats that every k-bit layer ran before (its cost
               does not depend on the bit width)
  the 8-bit stem: conv 7x7/2 3->64 at 224x224 (+ relu + max-pool 3x3/2): MXNet's float
  Convolution + Activation + Pooling (oneDNN) vs the runtime's QConvolution(8, 8) + relu +
  max-pool, and vs the runtime's own float stem (conv + relu + pool fused);
  ResNet-18 end to end: MXNet's float resnet18_v1 vs the binary ResNet-18 (converted, folded,
  random weights) in the runtime, float stem and stem="int8".
Calls of the compared paths alternate after a warm-up; medians of N; ratios = float / other.
The minima are printed too: on a loaded machine they show what the code does when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

LAYERS = [(56, 64), (28, 128), (14, 256), (7, 512)]
PAIRS = [(2, 1), (2, 2), (8, 8)]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    want = ("avx2", "avx512f", "avx512_vpopcntdq", "avx512_vnni", "avx_vnni")
                    return " ".join(w for w in want if w in have)
    except OSError:
        pass
    return "?"


def _time(fns: dict, repeats: int) -> dict:
    import numpy as np

    for fn in fns.values():
        for _ in range(2):
            fn()
    samples: dict = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    out = {k: float(np.median(v)) * 1e3 for k, v in samples.items()}
    out.update({f"{k}_min": float(np.min(v)) * 1e3 for k, v in samples.items()})
    return out


def _runtime_model(tmp: str, name: str, sym, args: dict, shape):
    import binmx_runtime
    import mxnet as mx

    prefix = os.path.join(tmp, name)
    mx.model.save_checkpoint(prefix, 1, sym, {k: mx.nd.array(v) for k, v in args.items()}, {})
    return binmx_runtime.load(prefix, 1, input_shape=shape, threads=1)


def worker(repeats: int) -> dict:
    import binmx
    import mxnet as mx
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    tmp = tempfile.mkdtemp(prefix="bench_kbit_")
    data = mx.sym.var("data")
    for size, ch in LAYERS:
        x = rng.uniform(-0.1, 1.1, (1, ch, size, size)).astype(np.float32)
        w = (rng.standard_normal((ch, ch, 3, 3)) * 0.1).astype(np.float32)
        xn, wn = mx.nd.array(x), mx.nd.array(w)
        conv = dict(kernel=(3, 3), pad=(1, 1), num_filter=ch, no_bias=True)
        for act_bit, weight_bit in PAIRS:
            bits = dict(act_bit=act_bit, weight_bit=weight_bit)
            sym = mx.sym.QConvolution(data, name="q", **conv, **bits)
            model = _runtime_model(
                tmp, f"q{size}_{act_bit}{weight_bit}", sym, {"q_weight": w}, x.shape
            )
            kernel = binmx.xnor.kbit_path(act_bit, weight_bit, 9 * ch)
            fns = {
                "float": lambda xn=xn, wn=wn, conv=conv: mx.nd.Convolution(
                    xn, wn, **conv
                ).wait_to_read(),
                "runtime": lambda m=model, x=x: m.run(x),
                "op": lambda b=bits, xn=xn, wn=wn, conv=conv: mx.nd.QConvolution(
                    xn, wn, **conv, **b
                ).wait_to_read(),
                "fake": lambda xn=xn, wn=wn, conv=conv: mx.nd.QConvolution(
                    xn, wn, **conv, act_bit=9, weight_bit=9
                ).wait_to_read(),
            }
            t = _time(fns, repeats)
            rows.append(
                dict(
                    layer=f"{size}x{size}x{ch}",
                    bits=f"a{act_bit}/w{weight_bit}",
                    kernel=kernel,
                    **t,
                )
            )
    # The stem: conv 7x7/2, 3 -> 64, 224x224, + relu + max-pool 3x3/2.
    x = rng.uniform(0.0, 1.0, (1, 3, 224, 224)).astype(np.float32)
    w = (rng.standard_normal((64, 3, 7, 7)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(64) * 0.1).astype(np.float32)
    xn, wn, bn = mx.nd.array(x), mx.nd.array(w), mx.nd.array(b)
    conv = dict(kernel=(7, 7), stride=(2, 2), pad=(3, 3), num_filter=64)
    pool = dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")

    def stem(c):
        return mx.sym.Pooling(mx.sym.Activation(c, act_type="relu"), **pool)

    int8 = _runtime_model(
        tmp,
        "stem8",
        stem(mx.sym.QConvolution(data, name="s", act_bit=8, weight_bit=8, **conv)),
        {"s_weight": w, "s_bias": b},
        x.shape,
    )
    flt = _runtime_model(
        tmp,
        "stemf",
        stem(mx.sym.Convolution(data, name="s", **conv)),
        {"s_weight": w, "s_bias": b},
        x.shape,
    )

    def mx_stem():
        y = mx.nd.Convolution(xn, wn, bn, **conv)
        mx.nd.Pooling(mx.nd.Activation(y, act_type="relu"), **pool).wait_to_read()

    t = _time(
        {"float": mx_stem, "runtime": lambda: int8.run(x), "runtime_float": lambda: flt.run(x)},
        repeats,
    )
    return dict(rows=rows, stem=t, resnet=_resnet18(tmp, x, repeats), isa=binmx.xnor.current_isa())


def _resnet18(tmp: str, x, repeats: int) -> dict:
    """ResNet-18 at 224x224, batch 1: MXNet's float resnet18_v1 (bound executor, as
    bench_runtime.py) vs the binary ResNet-18 (binmx.models, converted + folded, random
    weights) in the runtime with the float stem and with stem="int8"."""
    import binmx_runtime
    from binmx import models
    from binmx.converter import convert

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_runtime as br
    import mxnet as mx
    import runtime_cases as rc

    fns = {}
    fex = br.float_resnet18_executor(mx, 1)
    fex.arg_dict["data"][:] = x
    fns["float"] = lambda: fex.forward(is_train=False)[0].wait_to_read()
    for stem in ("imagenet", "int8"):
        sym = models.resnet(depth=18, num_classes=1000, image_shape=(3, 224, 224), stem=stem)
        args, aux = rc.random_params(sym, x.shape, seed=0)
        sym, args, aux = convert(sym, args, aux, fold=True)
        prefix = os.path.join(tmp, f"resnet18_{stem}")
        rc.save(prefix, sym, args, aux)
        model = binmx_runtime.load(prefix, 1, input_shape=x.shape, threads=1)
        fns[stem] = lambda m=model: m.run(x)
    return _time(fns, max(5, repeats // 2))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="7 repeats instead of 25")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.worker:
        print("RESULT " + json.dumps(worker(ns.worker)))
        return 0
    repeats = 7 if ns.quick else 25
    env = dict(os.environ, OMP_NUM_THREADS="1", MXNET_ENGINE_TYPE="NaiveEngine")
    res = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if res.returncode != 0 or line is None:
        print(res.stdout[-3000:] + res.stderr[-3000:])
        return 1
    data = json.loads(line[7:])
    try:
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "?"
    print(
        f"CPU: {cpu_name()} [{cpu_flags()}]; binmx ISA {data['isa']}; 1 thread, batch 1; "
        f"load average {load}; median of {repeats}"
    )
    print(
        "| layer | bits | kernel | float ms | runtime ms | ratio | op ms | ratio | "
        "fake-quant op ms | op vs fake-quant | ratio of minima (runtime) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in data["rows"]:
        print(
            f"| {r['layer']} | {r['bits']} | {r['kernel']} | {r['float']:.3f} | "
            f"{r['runtime']:.3f} | {r['float'] / r['runtime']:.2f}x | {r['op']:.3f} | "
            f"{r['float'] / r['op']:.2f}x | {r['fake']:.3f} | {r['fake'] / r['op']:.2f}x | "
            f"{r['float_min']:.3f} / {r['runtime_min']:.3f} = "
            f"{r['float_min'] / r['runtime_min']:.2f}x |"
        )

    def table(title: str, t: dict, rows: list[tuple[str, str]]) -> None:
        print()
        print(f"| {title} | median ms | MXNet float / this | min ms | ratio of minima |")
        print("|---|---:|---:|---:|---:|")
        for label, key in rows:
            print(
                f"| {label} | {t[key]:.3f} | {t['float'] / t[key]:.2f}x | "
                f"{t[key + '_min']:.3f} | {t['float_min'] / t[key + '_min']:.2f}x |"
            )

    table(
        "stem (7x7/2 conv + relu + max-pool, 224x224)",
        data["stem"],
        [
            ("MXNet float (oneDNN, 3 ops)", "float"),
            ("runtime float stem (fused)", "runtime_float"),
            ("runtime int8 stem (QConvolution a8/w8, fused)", "runtime"),
        ],
    )
    table(
        "ResNet-18, 224x224, batch 1",
        data["resnet"],
        [
            ("MXNet float resnet18_v1 (bound executor)", "float"),
            ("binary ResNet-18, float stem, runtime", "imagenet"),
            ("binary ResNet-18, int8 stem, runtime", "int8"),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
