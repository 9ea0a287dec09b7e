"""End-to-end inference: binarized ResNet-18 (converted + folded) vs the float ResNet-18 in MXNet.

Both networks come from ``binmx.models.resnet(depth=18)`` (pre-activation, BMXNet layout: float
conv0 and fc, every conv inside the residual units binary, 1x1 binary downsampling shortcuts):

  binary  binmx.models.resnet(binary=True), random weights, then
          ``binmx.convert(sym, args, aux, fold=True)``: packed 1-bit weights, the BatchNorm
          before each sign folded into the QConvolution's input affine, QActivations dropped
  float   binmx.models.resnet(binary=False): the same graph with Convolution + BatchNorm +
          relu, run by MXNet as it comes (oneDNN, and its default inference subgraph pass that
          fuses Convolution + BatchNorm + relu)

Both are bound as ``mx.mod.Module(for_training=False)`` and, again, as plain executors
(``Symbol.bind``, no Module bookkeeping around the forward), under the default (threaded) engine,
and timed in the same process, alternating the four so machine noise hits all alike:
``forward(is_train=False)`` + ``wait_to_read()`` of the output; median of N after a warm-up.
A second table gives the steady state: rounds of consecutive forwards of one network (the
first after each switch not timed), the four taking turns round by round. On these machines
any 25 ms of other work (the float network, or a Python busy loop) slows the next binary
forward by 0.6-1.0 ms and the next float one by about 0.3 ms, so the alternating figure is
the one with that penalty in it.
Inputs 224x224 (ImageNet stem 7x7/2 + max-pool, 1000 classes) and 32x32 (CIFAR stem 3x3/1,
10 classes), batch 1 and 16. Each thread count runs in its own subprocess with
OMP_NUM_THREADS set before MXNet and binmx are imported.

Per-layer table: each node of the two graphs is run alone as a one-node executor on its real
input values, under ``MXNET_ENGINE_TYPE=NaiveEngine`` (synchronous: no thread hand-off) and
without the subgraph pass, median of N. MXNet's profiler cannot give per-layer times for a
bound inference executor (it bulks the whole graph into one engine op), so this is the
reliable way; the float column therefore shows Convolution, BatchNorm and relu unfused, each
row includes the one-node executor's call overhead (printed as "empty"), and every input is a
plain NCHW array (so the sum is an estimate, not the end-to-end time). Per-layer times
are the CPU time of the calling thread (NaiveEngine runs the op there; 1 thread), so other
processes on a shared machine slow them less than wall-clock times.

    python benchmarks/bench_resnet18.py            # full: ~2.5 min (measured on a loaded 2-core VM)
    python benchmarks/bench_resnet18.py --quick    # fewer repetitions, < 1 min
    python benchmarks/bench_resnet18.py --threads 1 --cases 224x1 --no-layers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

CASES = {  # name: (image size, batch)
    "224x1": (224, 1),
    "224x16": (224, 16),
    "32x1": (32, 1),
    "32x16": (32, 16),
}


def _reps(batch: int, image: int, quick: bool) -> tuple[int, int]:
    """(warm-up, timed) forwards per network for a case."""
    heavy = batch * image * image >= 16 * 224 * 224
    if quick:
        return (1, 3) if heavy else (3, 10)
    return (3, 11) if heavy else (10, 60)


def build(mx, np, binmx, image: int, batch: int, binary: bool, seed: int = 0):
    """(sym, arg_params, aux_params) of the network to time (binary: converted + folded)."""
    classes = 1000 if image >= 64 else 10
    sym = binmx.models.resnet(
        depth=18, num_classes=classes, image_shape=(3, image, image), binary=binary
    )
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["softmax_label"], context=mx.cpu())
    mod.bind(
        data_shapes=[("data", (batch, 3, image, image))],
        label_shapes=[("softmax_label", (batch,))],
        for_training=False,
    )
    mx.random.seed(seed)
    mod.init_params(mx.init.Xavier(magnitude=2.0))
    args, aux = mod.get_params()
    rng = np.random.default_rng(seed)
    # Trained-looking BatchNorm statistics (the defaults 0 / 1 would make folding trivial).
    for name, value in aux.items():
        lo, hi = (0.5, 2.0) if name.endswith("var") else (-0.5, 0.5)
        aux[name] = mx.nd.array(rng.uniform(lo, hi, value.shape).astype(np.float32))
    if binary:
        sym, args, aux = binmx.convert(sym, args, aux, fold=True)
    return sym, args, aux


def _bind(mx, sym, args, aux, shape):
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["softmax_label"], context=mx.cpu())
    mod.bind(
        data_shapes=[("data", shape)],
        label_shapes=[("softmax_label", shape[:1])],
        for_training=False,
    )
    mod.set_params(args, aux, allow_missing=False, allow_extra=False)
    return mod


def _forward(mx, mod, batch) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one forward."""
    c0, t0 = time.process_time(), time.perf_counter()
    mod.forward(batch, is_train=False)
    mod.get_outputs()[0].wait_to_read()
    return time.perf_counter() - t0, time.process_time() - c0


def _bind_executor(mx, sym, args, aux, data):
    """The same network as a plain bound executor (no Module bookkeeping around forward)."""
    values = {**args, "data": data, "softmax_label": mx.nd.zeros(data.shape[0])}
    return sym.bind(
        mx.cpu(),
        {k: values[k] for k in sym.list_arguments()},
        aux_states={k: aux[k] for k in sym.list_auxiliary_states()},
        grad_req="null",
    )


def _forward_executor(ex) -> tuple[float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    ex.forward(is_train=False)[0].wait_to_read()
    return time.perf_counter() - t0, time.process_time() - c0


def _worker(cases: list[str], quick: bool) -> None:
    import binmx
    import mxnet as mx
    import numpy as np

    rows = []
    for case in cases:
        image, batch = CASES[case]
        shape = (batch, 3, image, image)
        data = mx.nd.array(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
        dbatch = mx.io.DataBatch(data=[data], label=[mx.nd.zeros(batch)])
        mods, exes = {}, {}
        for kind in ("binary", "float"):
            sym, args, aux = build(mx, np, binmx, image, batch, kind == "binary")
            mods[kind] = _bind(mx, sym, args, aux, shape)
            exes[kind] = _bind_executor(mx, sym, args, aux, data)
        runs = {
            **{k: (lambda m=m, b=dbatch: _forward(mx, m, b)) for k, m in mods.items()},
            **{f"exec_{k}": (lambda e=e: _forward_executor(e)) for k, e in exes.items()},
        }
        warm, reps = _reps(batch, image, quick)
        for _ in range(warm):
            for run in runs.values():
                run()
        samples = {k: [] for k in runs}
        for _ in range(reps):
            for kind, run in runs.items():
                samples[kind].append(run())
        med = {k: float(np.median([w for w, _ in v])) * 1e3 for k, v in samples.items()}
        cpu = {k: float(np.median([c for _, c in v])) * 1e3 for k, v in samples.items()}
        # Steady state: rounds of consecutive forwards of one network (the first after each
        # switch is not timed), the networks taking turns round by round.
        steady: dict[str, list[float]] = {k: [] for k in runs}
        rounds, block = _blocks(batch, image, quick)
        for r in range(rounds):
            kinds = list(runs)
            kinds = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            for kind in kinds:
                runs[kind]()
                steady[kind] += [runs[kind]()[0] for _ in range(block)]
        st = {k: float(np.median(v)) * 1e3 for k, v in steady.items()}
        rows.append(
            dict(
                case=case,
                reps=reps,
                binary_ms=med["binary"],
                float_ms=med["float"],
                speedup=med["float"] / med["binary"],
                binary_cpu_ms=cpu["binary"],
                float_cpu_ms=cpu["float"],
                cpu_speedup=cpu["float"] / cpu["binary"],
                exec_binary_ms=med["exec_binary"],
                exec_float_ms=med["exec_float"],
                exec_speedup=med["exec_float"] / med["exec_binary"],
                steady_reps=rounds * block,
                steady_binary_ms=st["binary"],
                steady_float_ms=st["float"],
                steady_speedup=st["float"] / st["binary"],
                steady_exec_binary_ms=st["exec_binary"],
                steady_exec_float_ms=st["exec_float"],
                steady_exec_speedup=st["exec_float"] / st["exec_binary"],
            )
        )
    print(json.dumps(rows))


def _blocks(batch: int, image: int, quick: bool) -> tuple[int, int]:
    """(rounds, timed forwards per round) per network for the steady-state measurement."""
    heavy = batch * image * image >= 16 * 224 * 224
    if quick:
        return (2, 2) if heavy else (4, 5)
    return (3, 4) if heavy else (8, 10)


# ---------------------------------------------------------------------------- per-layer table
def _one_node_symbol(mx, node: dict, input_names: list[str]):
    nodes = [{"op": "null", "name": n, "inputs": []} for n in input_names]
    op = dict(node)
    op["inputs"] = [[i, 0, 0] for i in range(len(input_names))]
    nodes.append(op)
    graph = {
        "nodes": nodes,
        "arg_nodes": list(range(len(input_names))),
        "heads": [[len(input_names), 0, 0]],
        "attrs": {"mxnet_version": ["int", 10901]},
    }
    return mx.sym.load_json(json.dumps(graph))


def layer_times(mx, np, sym, args, aux, data, reps: int) -> list[tuple[str, str, tuple, float]]:
    """[(node name, op, output shape, median ms)] for every op node, each run alone."""
    label = mx.nd.zeros(data.shape[0])
    values = {**args, **aux, "data": data, "softmax_label": label}
    internals = sym.get_internals()
    ex = internals.bind(
        mx.cpu(),
        {k: values[k] for k in internals.list_arguments()},
        aux_states={k: values[k] for k in internals.list_auxiliary_states()},
        grad_req="null",
    )
    # Plain NCHW copies: an array left in oneDNN's blocked layout would be re-ordered on every
    # read by a one-node executor (~0.4 ms at 56x56x64), a cost the whole graph does not pay.
    outs = {
        k: mx.nd.array(v.asnumpy(), dtype=v.dtype)  # int64 for packed sign words
        for k, v in zip(internals.list_outputs(), ex.forward(is_train=False), strict=True)
    }
    nodes = json.loads(sym.tojson())["nodes"]
    rows = []
    for node in nodes:
        if node["op"] == "null":
            continue
        inputs = []
        for src, idx, _ in node["inputs"]:
            s = nodes[src]
            if s["op"] == "null":
                inputs.append((s["name"], values[s["name"]]))
            else:
                key = (
                    f"{s['name']}_output"
                    if f"{s['name']}_output" in outs
                    else f"{s['name']}_output{idx}"
                )
                inputs.append((f"in{len(inputs)}", outs[key]))
        names = [n for n, _ in inputs]
        if len(set(names)) != len(names):  # the same tensor read twice: distinct variables
            names = [f"in{i}" for i in range(len(names))]
        one = _one_node_symbol(mx, node, names)
        arrays = dict(zip(names, (v for _, v in inputs), strict=True))
        oex = one.bind(
            mx.cpu(),
            {k: arrays[k] for k in one.list_arguments()},
            aux_states={k: arrays[k] for k in one.list_auxiliary_states()},
            grad_req="null",
        )
        t = []
        for i in range(reps + 2):
            t0 = time.thread_time()
            out = oex.forward(is_train=False)[0]
            out.wait_to_read()
            if i >= 2:
                t.append(time.thread_time() - t0)
        rows.append((node["name"], node["op"], tuple(out.shape), float(np.median(t)) * 1e3))
    return rows


def _empty_ms(mx, np, reps: int) -> float:
    x = mx.sym.Variable("x")
    ex = mx.sym.identity(x).bind(mx.cpu(), {"x": mx.nd.zeros((1,))}, grad_req="null")
    t = []
    for _ in range(reps + 2):
        t0 = time.thread_time()
        ex.forward(is_train=False)[0].wait_to_read()
        t.append(time.thread_time() - t0)
    return float(np.median(t[2:])) * 1e3


def _layers_worker(case: str, quick: bool) -> None:
    import binmx
    import mxnet as mx
    import numpy as np

    image, batch = CASES[case]
    shape = (batch, 3, image, image)
    data = mx.nd.array(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    reps = 7 if quick else 41
    result = {"empty_ms": _empty_ms(mx, np, reps)}
    for kind in ("binary", "float"):
        sym, args, aux = build(mx, np, binmx, image, batch, kind == "binary")
        result[kind] = layer_times(mx, np, sym, args, aux, data, reps)
    print(json.dumps(result))


def _print_layers(case: str, res: dict) -> None:
    binary = {r[0]: r for r in res["binary"]}
    floating = {r[0]: r for r in res["float"]}
    order = [r[0] for r in res["float"]] + [r[0] for r in res["binary"] if r[0] not in floating]
    print(
        f"\nper-layer, {case}, 1 thread, NaiveEngine, one-node executors, median CPU time of "
        f"the calling thread (each row includes the empty-op call, {res['empty_ms']:.3f} ms)"
    )
    print(
        f"{'layer':<22} {'float op':<16} {'binary op':<14} {'output':<18} {'float ms':>9} "
        f"{'binary ms':>9} {'ratio':>6}"
    )
    tot_f = tot_b = 0.0
    for name in order:
        f, b = floating.get(name), binary.get(name)
        fms = f[3] if f else 0.0
        bms = b[3] if b else 0.0
        tot_f += fms
        tot_b += bms
        shape = (f or b)[2]
        ratio = f"{fms / bms:6.1f}" if f and b else "     -"
        print(
            f"{name:<22} {(f[1] if f else '-'):<16} {(b[1] if b else '(folded)'):<14} "
            f"{shape!s:<18} {fms:9.3f} {bms:9.3f} {ratio}"
        )
    print(f"{'sum':<22} {'':<16} {'':<14} {'':<18} {tot_f:9.3f} {tot_b:9.3f} {tot_f / tot_b:6.1f}")
    groups: dict[str, list[float]] = {}
    for kind, rows in (("float", res["float"]), ("binary", res["binary"])):
        for _, op, _, ms in rows:
            g = groups.setdefault(op, [0.0, 0.0])
            g[0 if kind == "float" else 1] += ms
    print(
        "by operator: "
        + ", ".join(
            f"{op} {v[0]:.2f}/{v[1]:.2f}"
            for op, v in sorted(groups.items(), key=lambda kv: -max(kv[1]))
        )
    )
    print("  (float ms / binary ms)")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _run(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"worker {args} failed with exit code {proc.returncode}")
    return proc.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (< 2 min)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument(
        "--layers",
        nargs="*",
        choices=list(CASES),
        default=None,
        help="cases for the per-layer table (default 224x1; full run also 32x1)",
    )
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    ap.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_layers", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        _worker(args.cases, args.quick)
        return 0
    if args._layers:
        _layers_worker(args._layers, args.quick)
        return 0

    t_start = time.perf_counter()
    env0 = dict(os.environ)
    info = _run_info(env0)
    print(
        f"CPU: {_cpu_name()} ({os.cpu_count()} logical cores); binmx ISA {info['isa']}; "
        f"mxnet {info['mxnet']}; load average {_load()}"
    )
    print(
        "end to end: Module(for_training=False), default engine, forward + wait_to_read, "
        "median; speedup = float ms / binary ms (target >= 5 at 224x1, 1 thread)"
    )
    print("cpu = median process CPU time per forward (all threads; less sensitive to other load)")
    print(
        "exec = the same two networks as plain bound executors (Symbol.bind, no Module), timed "
        "in the same loop"
    )
    print(
        f"{'threads':>7} {'case':<7} {'reps':>4} {'binary ms':>10} {'float ms':>10} "
        f"{'speedup':>8} {'binary cpu':>10} {'float cpu':>10} {'cpu ratio':>9} "
        f"{'exec bin':>9} {'exec flt':>9} {'exec spd':>8}"
    )
    quick = ["--quick"] if args.quick else []
    all_rows = []
    for threads in args.threads:
        env = dict(env0, OMP_NUM_THREADS=str(threads))
        rows = json.loads(_run(["--_worker", *quick, "--cases", *args.cases], env))
        for r in rows:
            all_rows.append((threads, r))
            print(
                f"{threads:>7} {r['case']:<7} {r['reps']:>4} {r['binary_ms']:>10.2f} "
                f"{r['float_ms']:>10.2f} {r['speedup']:>8.2f} {r['binary_cpu_ms']:>10.2f} "
                f"{r['float_cpu_ms']:>10.2f} {r['cpu_speedup']:>9.2f} "
                f"{r['exec_binary_ms']:>9.2f} {r['exec_float_ms']:>9.2f} {r['exec_speedup']:>8.2f}",
                flush=True,
            )
    print(
        "\nsteady state, the same networks in the same processes: rounds of consecutive forwards "
        "of one network\n(the first after a switch not timed), the four taking turns; median. "
        "Above, every binary forward\nfollows a float one, and on these machines any 25 ms of "
        "other work before a forward slows it by\n0.6-1.0 ms (binary) and 0.3 ms (float) "
        "(see benchmarks/README.md)."
    )
    print(
        f"{'threads':>7} {'case':<7} {'reps':>4} {'binary ms':>10} {'float ms':>10} "
        f"{'speedup':>8} {'exec bin':>9} {'exec flt':>9} {'exec spd':>8}"
    )
    for threads, r in all_rows:
        print(
            f"{threads:>7} {r['case']:<7} {r['steady_reps']:>4} {r['steady_binary_ms']:>10.2f} "
            f"{r['steady_float_ms']:>10.2f} {r['steady_speedup']:>8.2f} "
            f"{r['steady_exec_binary_ms']:>9.2f} {r['steady_exec_float_ms']:>9.2f} "
            f"{r['steady_exec_speedup']:>8.2f}"
        )
    if not args.no_layers:
        layer_cases = (
            args.layers
            if args.layers is not None
            else (["224x1"] if args.quick else ["224x1", "32x1"])
        )
        env = dict(
            env0,
            OMP_NUM_THREADS="1",
            MXNET_ENGINE_TYPE="NaiveEngine",
            MXNET_SUBGRAPH_BACKEND="NONE",
        )
        for case in layer_cases:
            _print_layers(case, json.loads(_run(["--_layers", case, *quick], env)))
    print(f"\nload average {_load()}; total {time.perf_counter() - t_start:.0f} s")
    return 0


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def _run_info(env: dict[str, str]) -> dict[str, str]:
    code = (
        "import json, mxnet, binmx; print(json.dumps({'isa': binmx.xnor.current_isa(), "
        "'mxnet': mxnet.__version__}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
