"""Benchmark: binmx xnor GEMM vs float32 numpy.matmul on the ResNet-18 conv shapes.

For each available ISA, each shape (M filters, N output pixels, K = C*kh*kw) and each thread
count: median time, Gbit-ops/s and the speed ratio against ``numpy.matmul`` of float32
(M, K) x (K, N) measured in the same process with the same thread count. One bit-op is one
xnor or one popcount-accumulate of a bit pair, so a GEMM is 2*M*N*K bit-ops (as a float GEMM
is 2*M*N*K flops). Both sides write into preallocated outputs.

Each thread count runs in its own subprocess with OPENBLAS_NUM_THREADS / OMP_NUM_THREADS /
MKL_NUM_THREADS set before numpy is imported (threadpoolctl is used as well when installed).
``--openblas-coretype NAME`` adds a second float baseline measured with OPENBLAS_CORETYPE=NAME
(useful where OpenBLAS misdetects the CPU and falls back to a slow generic kernel).

Usage: python benchmarks/bench_xnor_gemm.py [--quick] [--repeats N] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import time

SHAPES = [(64, 3136, 576), (128, 784, 1152), (256, 196, 2304), (512, 49, 4608)]


def cpu_info() -> tuple[str, list[str]]:
    model, flags = platform.processor() or "unknown", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    wanted = ("popcnt", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vpopcntdq")
    return model, [f for f in wanted if f in flags]


def blas_info() -> str:
    """BLAS library and, for OpenBLAS, the kernel core it picked (after numpy is imported)."""
    try:
        from threadpoolctl import threadpool_info

        return "; ".join(
            f"{d.get('internal_api')} {d.get('version')} core={d.get('architecture')} "
            f"threads={d.get('num_threads')}"
            for d in threadpool_info()
            if d.get("user_api") == "blas"
        )
    except ImportError:
        pass
    import ctypes
    import glob

    import numpy as np

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return f"OpenBLAS ({os.path.basename(path)}) core={fn().decode()}"
    return "unknown BLAS"


def median_time(fn, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def worker(threads: int, repeats: int, warmup: int, numpy_only: bool) -> None:
    """Runs in a subprocess whose BLAS thread variables are already set; prints JSON lines."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    print(json.dumps({"blas": blas_info()}), flush=True)
    for m, n, k in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        t_np = median_time(lambda a=a, b=b, c=c: np.matmul(a, b, out=c), repeats, warmup)
        print(json.dumps({"shape": [m, n, k], "isa": "numpy", "t": t_np}), flush=True)
        if numpy_only:
            continue
        from binmx import xnor

        pa = xnor.pack_bits(a)
        pb = xnor.pack_bits(np.ascontiguousarray(b.T))
        ci = np.empty((m, n), np.int32)
        for isa in xnor.available_isas():
            fn = functools.partial(xnor.xnor_gemm, pa, pb, k, isa=isa, threads=threads, out=ci)
            t = median_time(fn, repeats, warmup)
            print(json.dumps({"shape": [m, n, k], "isa": isa, "t": t}), flush=True)


def run_config(script: str, threads: int, args: argparse.Namespace, coretype: str | None):
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [
        sys.executable,
        script,
        "--worker",
        "--threads",
        str(threads),
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
    ]
    if coretype:
        env["OPENBLAS_CORETYPE"] = coretype
        cmd.append("--numpy-only")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"benchmark worker failed (threads={threads}):\n{res.stderr}")
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    blas = next(r["blas"] for r in rows if "blas" in r)
    times = {(tuple(r["shape"]), r["isa"]): r["t"] for r in rows if "shape" in r}
    return blas, times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few repeats (smoke run)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per point (median)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument(
        "--openblas-coretype",
        default=None,
        help="also time numpy with OPENBLAS_CORETYPE=NAME (e.g. SkylakeX)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--numpy-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.repeats is None:
        args.repeats = 5 if args.quick else 31
    if args.quick:
        args.warmup = 1
    thread_counts = [int(t) for t in args.threads.split(",")]
    if args.worker:
        worker(thread_counts[0], args.repeats, args.warmup, args.numpy_only)
        return

    model, flags = cpu_info()
    print(f"CPU: {model} ({os.cpu_count()} logical CPUs); flags: {' '.join(flags)}")
    results, alt = {}, {}
    for t in thread_counts:
        blas, results[t] = run_config(__file__, t, args, None)
        print(f"threads={t}: numpy BLAS: {blas}")
        if args.openblas_coretype:
            blas2, alt[t] = run_config(__file__, t, args, args.openblas_coretype)
            print(
                f"threads={t}: numpy BLAS with OPENBLAS_CORETYPE={args.openblas_coretype}: {blas2}"
            )
    print(
        f"median of {args.repeats} runs after {args.warmup} warm-up; "
        "Gbop/s = 2*M*N*K bit-ops per second; ratio = numpy float32 time / xnor time"
    )
    alt_head = f" | x vs numpy({args.openblas_coretype})" if alt else ""
    print(
        f"\n| ISA | threads | M | N | K | time (us) | Gbop/s | numpy f32 (us) | x vs numpy"
        f"{alt_head} | speedup vs 1 thread |"
    )
    print("|---|---|---|---|---|---|---|---|---" + ("|---" if alt else "") + "|---|")
    isas = [isa for (_, isa) in results[thread_counts[0]] if isa != "numpy"]
    isas = list(dict.fromkeys(isas))
    for isa in isas:
        for t in thread_counts:
            for shape in SHAPES:
                m, n, k = shape
                tx = results[t][(shape, isa)]
                tn = results[t][(shape, "numpy")]
                alt_col = f" | {alt[t][(shape, 'numpy')] / tx:.1f}" if alt else ""
                base = results[thread_counts[0]][(shape, isa)]
                speedup = f"{base / tx:.2f}" if t != thread_counts[0] else "-"
                print(
                    f"| {isa} | {t} | {m} | {n} | {k} | {tx * 1e6:.0f} | "
                    f"{2 * m * n * k / tx / 1e9:.0f} | {tn * 1e6:.0f} | {tn / tx:.1f}{alt_col} | "
                    f"{speedup} |"
                )


if __name__ == "__main__":
    main()
