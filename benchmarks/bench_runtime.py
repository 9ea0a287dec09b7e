"""The binmx runtime against what a user would run instead, measured in one process.

    .venv/bin/python benchmarks/bench_runtime.py            # ~3 min on the 2-core machine
    .venv/bin/python benchmarks/bench_runtime.py --quick    # fewer repetitions

Networks (random weights, BatchNorm statistics far from the identity):
  binary ResNet-18  binmx.models.resnet(depth=18) at 224x224 (BMXNet layout: float stem and
                    classifier, BN -> sign -> binary conv blocks, binary 1x1 shortcuts),
                    converted with fold=True, run by binmx_runtime
  float ResNet-18   MXNet's model-zoo resnet18_v1 (conv -> BN -> relu, projection shortcuts),
                    hybridized and exported, a bound executor (MXNet 1.9.1 with oneDNN and its
                    default inference subgraph fusion): what a user runs instead
  LeNet             binmx.models.binary_lenet converted + folded (the demo's model) vs the
                    same LeNet in float (binary=False), bound executor
Each thread count runs in its own subprocess with OMP_NUM_THREADS set before MXNet is imported
(MXNet's oneDNN then uses that many threads; the runtime gets the same count). Forwards of the
networks compared alternate (float, binary, float, ...) after a warm-up; medians; the ratio is
printed. Also: the runtime at 2 threads against 1 (batch 1 and 16), the per-run overhead of
the engine (a one-layer model, `binmx-run --bench`, no Python), load time and the peak memory
of a `binmx-run` process, and OpenVINO (when benchmarks/openvino_binary.py and openvino are
available) on the same binary network and weights, its output checked against the runtime's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def p90(v: list[float]) -> float:
    s = sorted(v)
    return s[min(len(s) - 1, int(0.9 * len(s)))]


def make_models(tmp: str) -> dict:
    """Write the converted binary models; return their prefixes."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import runtime_cases as rc
    from binmx import models
    from binmx.converter import convert

    out = {}
    sym = models.resnet(depth=18, num_classes=1000, image_shape=(3, 224, 224), width=64)
    args, aux = rc.random_params(sym, (1, 3, 224, 224), seed=0)
    sym, args, aux = convert(sym, args, aux, fold=True)
    rc.save(os.path.join(tmp, "resnet18"), sym, args, aux)
    out["resnet18"] = os.path.join(tmp, "resnet18")
    sym = models.binary_lenet()
    args, aux = rc.random_params(sym, (1, 1, 28, 28), seed=1)
    sym, args, aux = convert(sym, args, aux, fold=True)
    rc.save(os.path.join(tmp, "lenet"), sym, args, aux)
    out["lenet"] = os.path.join(tmp, "lenet")
    # One layer: relu of one value (what a run costs besides the work).
    graph = {
        "nodes": [
            {"op": "null", "name": "data", "inputs": []},
            {
                "op": "Activation",
                "name": "relu",
                "attrs": {"act_type": "relu"},
                "inputs": [[0, 0, 0]],
            },
        ],
        "arg_nodes": [0],
        "heads": [[1, 0, 0]],
    }
    with open(os.path.join(tmp, "one-symbol.json"), "w") as f:
        json.dump(graph, f)
    with open(os.path.join(tmp, "one-0001.params"), "wb") as f:
        f.write((0x112).to_bytes(8, "little") + bytes(24))  # no arrays, no names
    out["one"] = os.path.join(tmp, "one")
    return out


def float_resnet18_executor(mx, batch: int):
    from mxnet.gluon.model_zoo import vision

    net = vision.resnet18_v1(pretrained=False, classes=1000)
    net.initialize(mx.init.Xavier(magnitude=2.0))
    net.hybridize(static_alloc=True, static_shape=True)
    net(mx.nd.zeros((batch, 3, 224, 224)))
    tmp = tempfile.mkdtemp()
    net.export(os.path.join(tmp, "f"), 0)
    sym, args, aux = mx.model.load_checkpoint(os.path.join(tmp, "f"), 0)
    shutil.rmtree(tmp)
    data = mx.nd.zeros((batch, 3, 224, 224))
    values = {**args, "data": data}
    return sym.bind(
        mx.cpu(),
        {k: values[k] for k in sym.list_arguments()},
        aux_states={k: aux[k] for k in sym.list_auxiliary_states()},
        grad_req="null",
    )


def float_lenet_executor(mx, binmx, batch: int):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import runtime_cases as rc

    sym = binmx.models.binary_lenet(binary=False)
    args, aux = rc.random_params(sym, (batch, 1, 28, 28), seed=2)
    values = {
        **args,
        "data": mx.nd.zeros((batch, 1, 28, 28)),
        "softmax_label": mx.nd.zeros((batch,)),
    }
    return sym.bind(
        mx.cpu(),
        {k: values[k] for k in sym.list_arguments()},
        aux_states={k: aux[k] for k in sym.list_auxiliary_states()},
        grad_req="null",
    )


def alternate(fns: dict, reps: int, warm: int = 5) -> dict:
    """Median ms of each callable, the callables taking turns."""
    times = {k: [] for k in fns}
    for _ in range(warm):
        for fn in fns.values():
            fn()
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return times


def worker(threads: int, quick: bool, prefixes: dict) -> dict:
    """Runs in a subprocess with OMP_NUM_THREADS=threads."""
    import binmx
    import binmx_runtime
    import mxnet as mx
    import numpy as np

    res = {"threads": threads}
    reps = 20 if quick else 60
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    rt1 = binmx_runtime.load(prefixes["resnet18"], 1, input_shape=x1.shape, threads=threads)
    fex = float_resnet18_executor(mx, 1)
    fex.arg_dict["data"][:] = x1

    def float_fwd():
        fex.forward(is_train=False)[0].wait_to_read()

    t = alternate({"float": float_fwd, "binary": lambda: rt1.run(x1)}, reps)
    res["resnet18_b1"] = {k: (median(v), p90(v)) for k, v in t.items()}
    # Batch 16 (runtime only: the 2-thread scaling figure).
    x16 = rng.standard_normal((16, 3, 224, 224)).astype(np.float32)
    rt16 = binmx_runtime.load(prefixes["resnet18"], 1, input_shape=x16.shape, threads=threads)
    t = alternate({"binary": lambda: rt16.run(x16)}, max(5, reps // 6), warm=2)
    res["resnet18_b16"] = {k: (median(v), p90(v)) for k, v in t.items()}
    # LeNet batch 1 and 64.
    for batch in (1, 64):
        xl = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
        rtl = binmx_runtime.load(prefixes["lenet"], 1, input_shape=xl.shape, threads=threads)
        lex = float_lenet_executor(mx, binmx, batch)
        lex.arg_dict["data"][:] = xl

        def lenet_fwd(ex=lex):
            ex.forward(is_train=False)[0].wait_to_read()

        t = alternate({"float": lenet_fwd, "binary": lambda m=rtl, v=xl: m.run(v)}, reps * 3)
        res[f"lenet_b{batch}"] = {k: (median(v), p90(v)) for k, v in t.items()}
    # Load time.
    loads = []
    for _ in range(3 if quick else 7):
        t0 = time.perf_counter()
        binmx_runtime.load(prefixes["resnet18"], 1, input_shape=x1.shape, threads=threads)
        loads.append((time.perf_counter() - t0) * 1e3)
    res["load_ms"] = median(loads)
    res["arena_bytes"] = rt1.arena_bytes
    res["weight_bytes"] = rt1.weight_bytes
    # Per-layer profile at batch 1.
    res["profile"] = rt1.profile(x1, repeat=10 if quick else 30)
    # OpenVINO, when available.
    try:
        sys.path.insert(0, HERE)
        import openvino_binary as ovb

        prefix = prefixes["resnet18"]
        compiled = ovb.compile_openvino(
            ovb.build_openvino_model(prefix + "-symbol.json", prefix + "-0001.params", x1.shape),
            threads,
        )
        request = ovb._request(compiled, x1)
        y_ov, y_rt = ovb.run_openvino(compiled, x1), rt1.run(x1)
        res["openvino_check"] = {
            "max_abs_diff": float(np.abs(y_ov - y_rt).max()),
            "max_abs_output": float(np.abs(y_rt).max()),
            "argmax_equal": bool((y_ov.argmax(1) == y_rt.argmax(1)).all()),
        }
        t = alternate({"openvino": request.infer, "binary": lambda: rt1.run(x1)}, reps)
        res["openvino_b1"] = {k: (median(v), p90(v)) for k, v in t.items()}
    except ImportError as exc:
        res["openvino_missing"] = str(exc)
    return res


def bench_output(binmx_run: str, prefix: str, path: str, threads: int, n: int) -> list[str]:
    """The lines `binmx-run --bench n` prints for the model at prefix and the input at path."""
    args = ["--model", prefix, "--epoch", "1", "--input", path]
    args += ["--threads", str(threads), "--bench", str(n)]
    out = subprocess.run([binmx_run, *args], capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def engine_overhead(binmx_run: str, prefix: str, tmp: str, n: int) -> float:
    import numpy as np

    path = os.path.join(tmp, "one.npy")
    np.save(path, np.ones((1, 1), np.float32))
    lines = bench_output(binmx_run, prefix, path, 1, n)
    line = next(s for s in lines if s.startswith("bench:"))
    return float(line.split("median")[1].split("ms")[0]) * 1e3  # microseconds


def peak_memory(binmx_run: str, prefix: str, tmp: str) -> int:
    """Peak RSS (bytes) of a binmx-run process that loads ResNet-18 and runs it 20 times, as the
    process itself reads it (VmHWM: the exec'd program only, not the forking parent's pages)."""
    import numpy as np

    path = os.path.join(tmp, "x.npy")
    np.save(path, np.zeros((1, 3, 224, 224), np.float32))
    lines = bench_output(binmx_run, prefix, path, 2, 20)
    line = next(s for s in lines if s.startswith("peak resident memory:"))
    return int(float(line.split(":")[1].split("MiB")[0]) * 2**20)


def find_binmx_run() -> str:
    cand = os.path.join(os.path.dirname(sys.executable), "binmx-run")
    return cand if os.path.exists(cand) else (shutil.which("binmx-run") or "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.worker:
        spec = json.loads(ns.worker)
        print(json.dumps(worker(spec["threads"], spec["quick"], spec["prefixes"])))
        return 0
    binmx_run = find_binmx_run()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        prefixes = make_models(tmp)
        results = []
        for threads in [int(t) for t in ns.threads.split(",")]:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            spec = json.dumps({"threads": threads, "quick": ns.quick, "prefixes": prefixes})
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", spec],
                env=env,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-4000:])
                return 1
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        overhead = engine_overhead(binmx_run, prefixes["one"], tmp, 2000 if ns.quick else 20000)
        peak = peak_memory(binmx_run, prefixes["resnet18"], tmp)
    print()
    print("| case | threads | float (ms) | binmx runtime (ms) | ratio |")
    print("|---|---|---|---|---|")
    for r in results:
        for key, label in (
            ("resnet18_b1", "ResNet-18 224, batch 1"),
            ("lenet_b1", "LeNet, batch 1"),
            ("lenet_b64", "LeNet, batch 64"),
        ):
            f, b = r[key]["float"][0], r[key]["binary"][0]
            print(f"| {label} | {r['threads']} | {f:.3f} | {b:.3f} | {f / b:.2f}x |")
    by_t = {r["threads"]: r for r in results}
    if 1 in by_t and 2 in by_t:
        print()
        for key, label in (("resnet18_b1", "batch 1"), ("resnet18_b16", "batch 16")):
            t1, t2 = by_t[1][key]["binary"][0], by_t[2][key]["binary"][0]
            print(
                f"runtime ResNet-18 224 {label}: 1 thread {t1:.3f} ms, 2 threads {t2:.3f} ms, "
                f"speed-up {t1 / t2:.2f}x"
            )
    for r in results:
        if "openvino_b1" in r:
            o, b = r["openvino_b1"]["openvino"][0], r["openvino_b1"]["binary"][0]
            c = r["openvino_check"]
            print(
                f"OpenVINO binary ResNet-18, {r['threads']} thread(s): {o:.3f} ms, binmx runtime "
                f"{b:.3f} ms (OpenVINO / binmx {o / b:.2f}x); outputs max|diff| "
                f"{c['max_abs_diff']:.3g} of max|out| {c['max_abs_output']:.3g}, argmax equal "
                f"{c['argmax_equal']}"
            )
        elif "openvino_missing" in r:
            print(f"OpenVINO: not run ({r['openvino_missing']})")
    r1 = results[0]
    print()
    print(f"engine overhead (one-layer model, binmx-run --bench, 1 thread): {overhead:.2f} us/run")
    print(f"load ResNet-18: {r1['load_ms']:.1f} ms (median)")
    wa = r1["weight_bytes"] + r1["arena_bytes"]
    print(
        f"peak RSS of binmx-run (load + 20 runs, 2 threads): {peak / 2**20:.1f} MiB; weights "
        f"{r1['weight_bytes'] / 2**20:.2f} MiB + activations/scratch "
        f"{r1['arena_bytes'] / 2**20:.2f} MiB = {wa / 2**20:.2f} MiB; "
        f"excess {(peak - wa) / 2**20:.1f} MiB"
    )
    print()
    print(f"runtime per-layer profile, ResNet-18 224 batch 1, {r1['threads']} thread(s):")
    total = sum(p["ms"] for p in r1["profile"])
    groups: dict[str, float] = {}
    for p in r1["profile"]:
        groups[p["op"]] = groups.get(p["op"], 0.0) + p["ms"]
    for op, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {op:<16} {ms:8.3f} ms  {100 * ms / total:5.1f}%")
    print(f"  {'total':<16} {total:8.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
