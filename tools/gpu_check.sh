#!/usr/bin/env bash
# GPU check in one run (< 5 minutes on an H100): build libbinmx_cuda.so, run the GPU-vs-reference
# exactness tests (tests/test_cuda.py; NumPy references, no MXNet needed) and the GPU benchmark
# (benchmarks/bench_cuda.py: xnor GEMM and binary conv vs cuBLAS SGEMM through CuPy, ResNet-18
# shapes, batch 1 and 16). Needs: an NVIDIA GPU + driver, nvcc, python3 with numpy, CuPy and
# pytest. CMake is used when present, else nvcc is called directly. No network.
#
#   bash tools/gpu_check.sh            # from the repository root (or anywhere)
#   PYTHON=python3.12 bash tools/gpu_check.sh
#
# Writes (when $OUT is set): $OUT/gpu_bench.md (the table), $OUT/gpu_tests.log, $OUT/gpu_build.log.
# Exit status: 0 when the build and every test passed and the benchmark ran; else non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
BUILD=${BINMX_GPU_BUILD:-$ROOT/build/gpu-check}
OUTDIR=${OUT:-$BUILD/out}
mkdir -p "$BUILD" "$OUTDIR"
T0=$(date +%s)
say() { printf '\n=== [%3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf '\ngpu_check: FAILED: %s\n' "$*" >&2; exit 1; }

say "environment"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi not found"
NVCC=$(command -v nvcc || true)
[[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]] && NVCC=/usr/local/cuda/bin/nvcc
[[ -n "$NVCC" ]] || die "nvcc not found (put the CUDA toolkit's bin on PATH)"
"$NVCC" --version | tail -2
command -v "$PY" >/dev/null || die "python '$PY' not found (set PYTHON=...)"
"$PY" - <<'EOF' || die "python needs numpy, cupy and pytest"
import sys, numpy, cupy, pytest
print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, cupy {cupy.__version__}, pytest {pytest.__version__}")
EOF

# Architectures: the GPU's own (fast build), else sm_80 + sm_90.
ARCH=""
if command -v nvidia-smi >/dev/null; then
  ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .' || true)
fi
[[ "$ARCH" =~ ^[0-9]+$ ]] || ARCH="80;90"
LIB=""

say "build libbinmx_cuda.so for sm_${ARCH}"
if command -v cmake >/dev/null && [[ "${BINMX_GPU_NO_CMAKE:-0}" != 1 ]]; then
  if cmake -S . -B "$BUILD/cmake" -DBINMX_PYTHON=OFF -DBINMX_WITH_CUDA=ON \
       -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_BUILD_TYPE=Release \
       >"$OUTDIR/gpu_build.log" 2>&1 &&
     cmake --build "$BUILD/cmake" -j "$(nproc)" --target binmx_cuda >>"$OUTDIR/gpu_build.log" 2>&1; then
    LIB="$BUILD/cmake/src/xnor_gemm/cuda/libbinmx_cuda.so"
  else
    tail -30 "$OUTDIR/gpu_build.log"
    echo "CMake build failed (log above); falling back to nvcc directly"
  fi
fi
if [[ -z "$LIB" ]]; then
  GENCODE=()
  for a in ${ARCH//;/ }; do GENCODE+=("-gencode=arch=compute_$a,code=sm_$a"); done
  SRC=src/xnor_gemm/cuda
  pids=()
  for f in api gemm_simt gemm_tensor train; do
    "$NVCC" -std=c++17 -O3 -Xcompiler=-fPIC,-fvisibility=hidden "${GENCODE[@]}" \
      -c "$SRC/$f.cu" -o "$BUILD/$f.o" >>"$OUTDIR/gpu_build.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { tail -40 "$OUTDIR/gpu_build.log"; die "nvcc compile failed"; }; done
  "$NVCC" -shared -cudart static "${GENCODE[@]}" -o "$BUILD/libbinmx_cuda.so" \
    "$BUILD/api.o" "$BUILD/gemm_simt.o" "$BUILD/gemm_tensor.o" "$BUILD/train.o" >>"$OUTDIR/gpu_build.log" 2>&1 \
    || { tail -40 "$OUTDIR/gpu_build.log"; die "nvcc link failed"; }
  LIB="$BUILD/libbinmx_cuda.so"
fi
[[ -f "$LIB" ]] || die "library not built: $LIB"
export BINMX_CUDA_LIB="$LIB"
echo "built $LIB"
"$PY" - <<'EOF' || die "the library does not see a usable GPU"
import importlib.util
spec = importlib.util.spec_from_file_location("c", "python/binmx/cuda.py")
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
r = m.unavailable_reason()
if r is not None:
    raise SystemExit(f"binmx.cuda: {r}")
print(f"devices: {m.device_count()}, sm_{m.device_capability()}, auto algo: {m.resolve_algo('auto')}")
EOF

say "exactness tests (tests/test_cuda.py, GPU vs NumPy references; includes the C API calls of the operators' \"gpu\" path)"
TEST_RC=0
# Only this file; the slow nvcc-compile test is deselected (the build above did that work).
# If tests/conftest.py cannot be imported here, give the tests the seed/rng fixtures directly.
PYTEST_ARGS=(-q -rs -p no:cacheprovider -m "not slow" tests/test_cuda.py)
if ! "$PY" -c "import importlib.util as u, sys; s = u.spec_from_file_location('conftest', 'tests/conftest.py'); m = u.module_from_spec(s); s.loader.exec_module(m)" 2>/dev/null; then
  echo "tests/conftest.py does not import here; using built-in seed/rng fixtures"
  cat >"$BUILD/binmx_gpu_fixtures.py" <<'EOF'
import zlib
import numpy as np
import pytest

@pytest.fixture
def seed(request):
    return zlib.crc32(request.node.nodeid.encode()) % (2**31)

@pytest.fixture
def rng(seed):
    return np.random.default_rng(seed)
EOF
  PYTEST_ARGS=(--noconftest -p binmx_gpu_fixtures "${PYTEST_ARGS[@]}")
  export PYTHONPATH="$BUILD${PYTHONPATH:+:$PYTHONPATH}"
fi
set +e
timeout 150 "$PY" -m pytest "${PYTEST_ARGS[@]}" 2>&1 | tee "$OUTDIR/gpu_tests.log"
TEST_RC=${PIPESTATUS[0]}
set -e
[[ $TEST_RC -eq 0 ]] && echo "exactness tests: PASSED" || echo "exactness tests: FAILED (rc=$TEST_RC)"

say "benchmark (benchmarks/bench_cuda.py)"
set +e
PYTHONUNBUFFERED=1 timeout 150 "$PY" benchmarks/bench_cuda.py ${BINMX_GPU_BENCH_ARGS:-} --out "$OUTDIR/gpu_bench.md"
BENCH_RC=$?
set -e

say "summary"
echo "library:   $LIB"
echo "tests:     $([[ $TEST_RC -eq 0 ]] && echo PASSED || echo "FAILED (rc=$TEST_RC, log $OUTDIR/gpu_tests.log)")"
echo "benchmark: $([[ $BENCH_RC -eq 0 ]] && echo "ran, table in $OUTDIR/gpu_bench.md" || echo "FAILED (rc=$BENCH_RC)")"
[[ $TEST_RC -eq 0 && $BENCH_RC -eq 0 ]]
