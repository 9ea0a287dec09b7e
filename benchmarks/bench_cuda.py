"""GPU benchmark: binmx's xnor GEMM and binary conv vs cuBLAS SGEMM (CuPy), ResNet-18 shapes.

For each ResNet-18 3x3 layer (56x56x64, 28x28x128, 14x14x256, 7x7x512; pad 1) at batch 1 and 16:
  - GEMM: M = filters, N = batch * H * W, K = 9 * C. cuBLAS SGEMM (cupy.matmul, float32, TF32
    off) vs binmx's xnor GEMM with float output (simt and tensor kernels), the same M, N, K.
  - conv: binmx.cuda binary_conv2d (sign-packing of the float NCHW input + xnor conv + border
    correction + float NCHW output) vs the SGEMM of the same size (what a float im2col
    convolution spends in its GEMM alone, im2col itself not counted), once per conv kernel mode
    (`--conv-modes`, BINMX_CUDA_CONV: im2col = bit im2col + dense xnor GEMM, table = implicit
    GEMM with a tap table, legacy = the API version 2 implicit GEMM); all outputs must agree.
Times: CUDA events around a CUDA graph of `--inner` calls (plain back-to-back calls if capture
fails), median of `--repeat` samples after warm-up; ratio = SGEMM time / binmx time, measured in
the same run. Each GEMM shape is also checked once: xnor GEMM == SGEMM on the +-1 matrices.

Imports binmx.cuda standalone (no MXNet): python/binmx/cuda.py by path, library from
BINMX_CUDA_LIB. Usage: python benchmarks/bench_cuda.py [--quick] [--out table.md]
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("CUPY_TF32", "0")  # cuBLAS SGEMM in true FP32, not TF32

import cupy as cp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("binmx_cuda_bench", ROOT / "python/binmx/cuda.py")
assert _spec is not None and _spec.loader is not None
bc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bc)

LAYERS = [(56, 64), (28, 128), (14, 256), (7, 512)]  # (H = W, C = F), 3x3, pad 1, stride 1


class Timer:
    def __init__(self, stream: cp.cuda.Stream, inner: int, repeat: int) -> None:
        self.stream, self.inner, self.repeat = stream, inner, repeat
        self.mode = "graph"

    def __call__(self, fn: Callable[[], None]) -> float:
        """Median milliseconds per call of fn (enqueued on self.stream)."""
        launch = self._graph(fn) if self.mode == "graph" else None
        if launch is None:
            self.mode = "loop"

            def launch() -> None:
                for _ in range(self.inner):
                    fn()

        for _ in range(2):  # warm-up
            launch()
        self.stream.synchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        samples = []
        for _ in range(self.repeat):
            start.record(self.stream)
            launch()
            end.record(self.stream)
            end.synchronize()
            samples.append(cp.cuda.get_elapsed_time(start, end) / self.inner)
        return statistics.median(samples)

    def _graph(self, fn: Callable[[], None]) -> Callable[[], None] | None:
        try:
            fn()  # first call outside capture (lazy initialisation, cuBLAS handle, ...)
            self.stream.synchronize()
            self.stream.begin_capture()
            try:
                for _ in range(self.inner):
                    fn()
            finally:
                graph = self.stream.end_capture()
            return lambda: graph.launch(self.stream)
        except Exception as exc:
            print(f"  (graph capture unavailable: {type(exc).__name__}: {exc}; timing plain calls)")
            self.stream.synchronize()
            return None


def check(rc: int) -> None:
    if rc != 0:
        raise RuntimeError(bc._lib.binmx_cuda_last_error().decode())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--inner", type=int, default=20)
    ap.add_argument("--out", type=str, default=None, help="also write the table (markdown)")
    ap.add_argument(
        "--conv-modes",
        type=str,
        default="im2col,table,legacy",
        help="comma-separated BINMX_CUDA_CONV values to time the conv with (auto, im2col, table, "
        "legacy); outputs are checked equal across modes and algos",
    )
    args = ap.parse_args()
    repeat = args.repeat or (5 if args.quick else 15)
    conv_modes = [m.strip() for m in args.conv_modes.split(",") if m.strip()]
    saved_mode = os.environ.get("BINMX_CUDA_CONV")

    reason = bc.unavailable_reason()
    if reason is not None:
        print(f"bench_cuda: cannot run: {reason}", file=sys.stderr)
        return 2
    lib = bc._load()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    cap = bc.device_capability()
    algos = ["simt", "tensor"] if cap >= 80 else ["simt"]
    header = [
        f"device: {name} (sm_{cap}), {props['multiProcessorCount']} SMs; "
        f"CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, CuPy {cp.__version__}, "
        f"CUPY_TF32={os.environ.get('CUPY_TF32')}; auto algo = {bc.resolve_algo('auto')}",
        f"timing: median of {repeat} samples of {args.inner} calls, CUDA events",
    ]
    for line in header:
        print(line)

    stream = cp.cuda.Stream(non_blocking=True)
    timer = Timer(stream, args.inner, repeat)
    rows = []
    codes = {"simt": 1, "tensor": 2}
    rng = np.random.default_rng(0)
    t_start = time.time()
    with stream:
        sp = ctypes.c_void_p(stream.ptr)
        for batch in (1, 16):
            for hw, c in LAYERS:
                f, k = c, 9 * c
                n = batch * hw * hw
                words = (k + 63) // 64
                # ---- GEMM: SGEMM (f x k) @ (k x n) vs xnor (f rows) x (n rows) -------------
                a_f = cp.asarray(np.where(rng.random((f, k)) < 0.5, -1.0, 1.0).astype(np.float32))
                b_f = cp.asarray(np.where(rng.random((n, k)) < 0.5, -1.0, 1.0).astype(np.float32))
                b_t = cp.ascontiguousarray(b_f.T)
                c_f = cp.empty((f, n), cp.float32)
                a_w = bc.pack_bits(a_f)
                b_w = bc.pack_bits(b_f)
                c_x = cp.empty((f, n), cp.float32)
                t_sgemm = timer(lambda a_f=a_f, b_t=b_t, c_f=c_f: cp.matmul(a_f, b_t, out=c_f))
                stream.synchronize()
                want = c_f.copy()
                times = {}
                for algo in algos:

                    def call(algo=algo, a_w=a_w, b_w=b_w, c_x=c_x, f=f, n=n, k=k, words=words):
                        check(
                            lib.binmx_cuda_xnor_gemm_f32(
                                ctypes.c_void_p(a_w.data.ptr), ctypes.c_void_p(b_w.data.ptr),
                                f, n, words, k, None, None, ctypes.c_void_p(c_x.data.ptr), n,
                                codes[algo], sp,
                            )
                        )  # fmt: skip

                    call()
                    stream.synchronize()
                    if not bool(cp.all(c_x == want)):
                        bad = int(cp.count_nonzero(c_x != want))
                        raise SystemExit(f"MISMATCH gemm {algo} f={f} n={n} k={k}: {bad} elements")
                    times[algo] = timer(call)
                rows.append(("gemm", f"M={f} N={n} K={k}", batch, t_sgemm, times))
                print(_fmt(rows[-1], algos))
                del a_f, b_f, b_t, c_f, a_w, b_w, c_x, want
                # ---- conv: binary_conv2d (pack + conv) vs the same-size SGEMM -------------
                x = cp.asarray(rng.standard_normal((batch, c, hw, hw)).astype(np.float32))
                w_f = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
                w_p = bc.pack_weight(cp.asarray(w_f))
                out = cp.empty((batch, f, hw, hw), cp.float32)
                params = bc.Conv2dParams(batch, c, hw, hw, f, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0)
                first = None
                for mode in conv_modes:
                    os.environ["BINMX_CUDA_CONV"] = mode  # read by the library at every call
                    need = lib.binmx_cuda_binary_conv2d_workspace(ctypes.byref(params))
                    ws = cp.empty((max(need, 1),), cp.uint8)
                    ctimes = {}
                    for algo in algos:

                        def conv(algo=algo, x=x, w_p=w_p, out=out, params=params, ws=ws, need=need):
                            check(
                                lib.binmx_cuda_binary_conv2d(
                                    ctypes.byref(params), ctypes.c_void_p(x.data.ptr),
                                    ctypes.c_void_p(w_p.data.ptr), None, None,
                                    ctypes.c_void_p(out.data.ptr), ctypes.c_void_p(ws.data.ptr),
                                    need, codes[algo], sp,
                                )
                            )  # fmt: skip

                        conv()  # every mode and algo must agree bit for bit
                        stream.synchronize()
                        if first is None:
                            first = out.copy()
                        elif not bool(cp.all(out.view(cp.int32) == first.view(cp.int32))):
                            bad = int(cp.count_nonzero(out.view(cp.int32) != first.view(cp.int32)))
                            raise SystemExit(
                                f"MISMATCH conv {mode}/{algo} vs {conv_modes[0]}/{algos[0]} "
                                f"{hw}x{hw}x{c} batch {batch}: {bad} elements"
                            )
                        ctimes[algo] = timer(conv)
                    label = "conv" if len(conv_modes) == 1 else f"conv {mode}"
                    shape = f"{hw}x{hw}x{c} -> {f}, 3x3 pad 1"
                    rows.append((label, shape, batch, t_sgemm, ctimes))
                    print(_fmt(rows[-1], algos))
                if saved_mode is None:
                    os.environ.pop("BINMX_CUDA_CONV", None)
                else:
                    os.environ["BINMX_CUDA_CONV"] = saved_mode
                del x, w_p, out, ws
    print(f"total benchmark time {time.time() - t_start:.1f} s, timing mode: {timer.mode}")

    table = _table(rows, algos, header + [f"timing mode: {timer.mode}"])
    print()
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
        print(f"wrote {args.out}")
    return 0


def _fmt(row: tuple, algos: list[str]) -> str:
    kind, shape, batch, t_ref, times = row
    best = min(times.values())
    parts = " ".join(f"{a}={times[a] * 1e3:8.1f}us" for a in algos)
    return (
        f"{kind:4s} b={batch:2d} {shape:28s} sgemm={t_ref * 1e3:8.1f}us {parts} "
        f"sgemm/best={t_ref / best:5.2f}x"
    )


def _table(rows: list[tuple], algos: list[str], header: list[str]) -> str:
    lines = [f"- {h}" for h in header] + [""]
    cols = ["op", "shape", "batch", "SGEMM (us)"] + [f"binmx {a} (us)" for a in algos]
    cols += [f"SGEMM / {a}" for a in algos]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for kind, shape, batch, t_ref, times in rows:
        cells = [kind, shape, str(batch), f"{t_ref * 1e3:.1f}"]
        cells += [f"{times[a] * 1e3:.1f}" for a in algos]
        cells += [f"{t_ref / times[a]:.2f}x" for a in algos]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
