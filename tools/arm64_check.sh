#!/usr/bin/env bash
# ARM64 check: cross-build binmx for aarch64 (core, its self-tests, the runtime; nothing that
# needs MXNet or Python) with Debian's g++-aarch64-linux-gnu and cmake/aarch64-linux-gnu.cmake,
# then run the self-tests under user-mode emulation on two CPU models:
#   qemu-aarch64 -cpu cortex-a53   (ARMv8.0-A, the Raspberry Pi 3 class core)
#   qemu-aarch64 -cpu max          (every feature qemu emulates, ARMv8.2+ dotprod included)
# Tests (each exact, ==, NEON against the portable reference and a naive one):
#   xnor_gemm_test  -- sign packing and xnor GEMM of every path, K = 0..10, 31, 63-65, 127-129,
#                      200, 511-513, 576, 2000, 4608, 262145; threads 1, 2, 3, 7
#   bconv_test      -- direct binary convolution + dense layer: the boundary grid (K = 1..10,
#                      63-65, 127-129, 511-513, 576, 4608; every pad value, strides, dilations,
#                      groups; packed in/out; residual) + 600 random configurations, threads 1, 2
#   bconv_test env  -- BINMX_ISA: neon / scalar accepted, avx2 / unknown names are errors
#   kbit_test --quick -- integer k-bit convolution + dense layer (the NEON direct bit-serial
#                      convolution, the portable int8 / im2col paths) against a plain
#                      reference: every pad value, strides, dilations, groups, C at word
#                      boundaries, threads 1, 2
#   bench_arm64 --quick (float and packed in/out) -- ResNet-18's binary layers, NEON output
#                      compared bit for bit with the scalar path's (its times mean nothing here:
#                      qemu gives no timing; the benchmark is for a real board)
#
#   bash tools/arm64_check.sh                 # from anywhere; ~5 minutes on 2 cores
#   BINMX_ARM64_BUILD=/tmp/b bash tools/arm64_check.sh
#   BINMX_ARM64_CPUS="max" bash tools/arm64_check.sh
#
# Needs: cmake >= 3.18, g++-aarch64-linux-gnu, qemu-user (qemu-aarch64). When they are missing
# and this runs as root with apt-get, it installs them; otherwise it stops with a message
# (exit 1), or with BINMX_ARM64_SKIP_MISSING=1 says SKIPPED and why (exit 0; .ci/run uses it).
# Exit status: 0 when the build and every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BINMX_ARM64_BUILD:-$ROOT/build-arm64}
JOBS=${BINMX_JOBS:-2}
CPUS=${BINMX_ARM64_CPUS:-cortex-a53 max}
SYSROOT=/usr/aarch64-linux-gnu
T0=$(date +%s)
say() { printf '\n=== [%3ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf '\narm64_check: FAILED: %s\n' "$*" >&2; exit 1; }
missing() {  # a tool is missing and cannot be installed here
  if [[ "${BINMX_ARM64_SKIP_MISSING:-0}" == 1 ]]; then
    printf '\narm64_check: SKIPPED: %s\n' "$*" >&2
    exit 0
  fi
  die "$*"
}

say "tools"
need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if (( ${#need[@]} )); then
  if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
    echo "installing ${need[*]} with apt-get"
    apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${need[@]}" >/dev/null; } \
      || missing "apt-get install ${need[*]} failed (no network?)"
  else
    missing "${need[*]} not installed (Debian/Ubuntu: sudo apt-get install ${need[*]})"
  fi
fi
CMAKE=${CMAKE:-$(command -v cmake || true)}
[[ -z "$CMAKE" && -x "$ROOT/.venv/bin/cmake" ]] && CMAKE=$ROOT/.venv/bin/cmake
[[ -n "$CMAKE" ]] || missing "cmake not found (apt-get install cmake, or pip install cmake)"
aarch64-linux-gnu-g++ --version | head -1
qemu-aarch64 --version | head -1
"$CMAKE" --version | head -1

say "cross-build into $BUILD"
"$CMAKE" -S "$ROOT" -B "$BUILD" -DCMAKE_TOOLCHAIN_FILE="$ROOT/cmake/aarch64-linux-gnu.cmake" \
  -DBINMX_PYTHON=OFF -DBINMX_TESTS=ON >"$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log"; die "cmake configure"; }
"$CMAKE" --build "$BUILD" -j"$JOBS" 2>&1 | grep -Ev '^\[ *[0-9]+%\]' || true
"$CMAKE" --build "$BUILD" -j"$JOBS" >/dev/null 2>&1 \
  || die "cmake build (run it again to see the error)"
GEMM_TEST=$BUILD/src/xnor_gemm/xnor_gemm_test
BCONV_TEST=$BUILD/src/xnor_gemm/bconv_test
KBIT_TEST=$BUILD/src/xnor_gemm/kbit_test
BENCH=$BUILD/src/xnor_gemm/bench_arm64
for exe in "$GEMM_TEST" "$BCONV_TEST" "$KBIT_TEST" "$BENCH"; do
  [[ -x "$exe" ]] || die "$exe was not built"
  file -b "$exe" 2>/dev/null | grep -q "aarch64" || [[ ! -x "$(command -v file)" ]] \
    || die "$exe is not an aarch64 executable"
done
# The x86 kernel files must not be in an aarch64 build, the NEON ones must.
objs=$(find "$BUILD/src/xnor_gemm" -name '*.o' -printf '%f\n')
grep -q 'avx' <<<"$objs" && die "x86 kernel objects in the aarch64 build: $(grep avx <<<"$objs")"
grep -q 'kernel_neon' <<<"$objs" || die "kernel_neon.cc was not compiled"
grep -q 'bconv_kernel_neon' <<<"$objs" || die "bconv_kernel_neon.cc was not compiled"
grep -q 'bsconv_kernel_neon' <<<"$objs" || die "bsconv_kernel_neon.cc was not compiled"
echo "built: $(cd "$BUILD" && find . -maxdepth 4 -type f \( -perm -u+x -o -name "libbinmx*" \) \
  ! -path '*/CMakeFiles/*' | sort | tr '\n' ' ')"

run() {  # run CPU EXE ARGS...: the executable under qemu-aarch64 on that CPU model
  local cpu=$1
  shift
  qemu-aarch64 -cpu "$cpu" -L "$SYSROOT" "$@"
}

for cpu in $CPUS; do
  say "qemu-aarch64 -cpu $cpu: xnor_gemm_test"
  out=$(run "$cpu" "$GEMM_TEST" 2>&1) || { echo "$out" | tail -30; die "xnor_gemm_test on $cpu"; }
  echo "$out" | tail -2
  grep -q '^available: scalar neon$' <<<"$out" || die "neon was not available on -cpu $cpu"

  say "qemu-aarch64 -cpu $cpu: bconv_test"
  out=$(run "$cpu" "$BCONV_TEST" 2>&1) || { echo "$out" | tail -30; die "bconv_test on $cpu"; }
  echo "$out" | tail -2
  grep -q 'available: scalar neon$' <<<"$out" || die "neon was not available on -cpu $cpu"

  say "qemu-aarch64 -cpu $cpu: kbit_test --quick"
  out=$(run "$cpu" "$KBIT_TEST" --quick 2>&1) || { echo "$out" | tail -30; die "kbit_test on $cpu"; }
  echo "$out" | tail -1
  grep -q 'available: scalar neon$' <<<"$out" || die "neon was not available on -cpu $cpu"
  grep -q ' 0 failures$' <<<"$out" || die "kbit_test on $cpu"

  say "qemu-aarch64 -cpu $cpu: BINMX_ISA"
  for isa in "" neon scalar avx2 avx512 bogus; do
    BINMX_ISA=$isa run "$cpu" "$BCONV_TEST" env || die "BINMX_ISA='$isa' handled wrongly"
  done

  say "qemu-aarch64 -cpu $cpu: bench_arm64 --quick (ResNet-18 layers; bits only, no timing)"
  for packed in 0 1; do
    out=$(run "$cpu" "$BENCH" --quick --threads 2 --packed $packed 2>&1) \
      || { echo "$out" | tail -20; die "bench_arm64 --packed $packed on $cpu"; }
    echo "--packed $packed: $(grep -c 'same bits' <<<"$out") layers with the scalar path's bits"
  done

  # ---- runtime checks on aarch64 ----------------------------------------------------------
  # The stored fixtures (converted on x86 by tools/make_runtime_fixtures.py: LeNet, ResNets,
  # a Gluon export, every supported operator, a binary layer with integer outputs) with their
  # x86 MXNet outputs, through the runtime's C API at 1 and 2 threads: the binary layer exact,
  # whole networks within 1e-4 x max |output| with the same argmax. Then the runtime's own
  # self-tests (file readers, float kernels).
  say "qemu-aarch64 -cpu $cpu: runtime fixtures (aarch64 outputs vs x86 MXNet outputs)"
  out=$(run "$cpu" "$BUILD/src/runtime/rt_fixtures_test" "$ROOT/runtime/tests/fixtures" 2>&1) \
    || { echo "$out" | tail -30; die "rt_fixtures_test on $cpu"; }
  echo "$out" | tail -1
  # The float kernels' grid (~45 s of CPU under qemu) on the first CPU model only.
  tests="rt_formats_test"
  [[ "$cpu" == "${CPUS%% *}" ]] && tests="$tests rt_float_ops_test"
  for t in $tests; do
    out=$(run "$cpu" "$BUILD/src/runtime/$t" 2>&1) || { echo "$out" | tail -30; die "$t on $cpu"; }
    echo "$t: $(echo "$out" | tail -1)"
  done
done

say "arm64_check: all passed ($(( $(date +%s) - T0 )) s)"
