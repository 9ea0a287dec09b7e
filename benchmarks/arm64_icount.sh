#!/usr/bin/env bash
# Executed-instruction counts of the aarch64 binary convolution, per ResNet-18 layer, under
# qemu-aarch64 (no board needed; counts, not times). For each layer and path (neon, scalar):
# bench_arm64 runs the layer with 1 and with 3 timed calls while qemu logs every translated
# block executed in binmx's own code (-d in_asm,exec,nochain, -dfilter on the address ranges of
# the functions in namespace binmx and their std::function thunks); the difference / 2 is the
# instruction count of one BinaryConv2d call (packing pass, kernel, epilogue; libc memcpy /
# memset and libgomp are outside the filter and not counted). Prints MACs per instruction.
#
#   bash benchmarks/arm64_icount.sh [layer ...]      # default: all ResNet-18 binary layers
# Needs the cross build of tools/arm64_check.sh (build-arm64/, or BINMX_ARM64_BUILD) and
# qemu-aarch64. Logs go to a temporary directory (tens of MB per layer), removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BINMX_ARM64_BUILD:-$PWD/build-arm64}
BENCH=$BUILD/src/xnor_gemm/bench_arm64
[[ -x "$BENCH" ]] || { echo "build $BENCH first (bash tools/arm64_check.sh)" >&2; exit 1; }
LAYERS=("$@")
((${#LAYERS[@]})) \
  || LAYERS=(conv2_x conv3_1 conv3_x down3 conv4_1 conv4_x down4 conv5_1 conv5_x down5)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# qemu loads a PIE main executable at 0x5500000000; -dfilter takes base+size ranges.
BASE=$((0x5500000000))
FILTER=""
while read -r addr size type name; do
  case "$type" in t | T | w | W) ;; *) continue ;; esac
  case "$name" in _ZN5binmx* | _ZZN5binmx* | _ZNSt17_Function_handler*) ;; *) continue ;; esac
  FILTER+="${FILTER:+,}$(printf '0x%x+0x%x' $((BASE + 0x$addr)) $((0x$size)))"
done < <(aarch64-linux-gnu-nm -S "$BENCH" | awk 'NF == 4')

count() {  # count ISA LAYER REPS -> executed instructions inside the filter
  local log=$TMP/q.log
  qemu-aarch64 -cpu cortex-a53 -L /usr/aarch64-linux-gnu -d in_asm,exec,nochain \
    -dfilter "$FILTER" -D "$log" "$BENCH" --layer "$2" --baseline 0 --isa "$1" --reps "$3" \
    --warmup 1 --threads 1 >/dev/null
  awk '
    /^IN:/ { inblk = 1; pc = ""; n = 0; next }
    inblk && /^0x[0-9a-f]+:/ { if (pc == "") pc = substr($1, 1, length($1) - 1); n++; next }
    inblk && /^$/ { if (pc != "") size[pc] = n; inblk = 0; next }
    /^Trace/ { split($4, f, "/"); t = f[2]; sub(/^0*/, "", t); execs["0x" t]++ }
    END {
      total = 0
      for (p in execs) if (p in size) total += execs[p] * size[p]
      printf "%.0f\n", total
    }' "$log"
  rm -f "$log"
}

printf '%-8s %10s %14s %10s %14s %10s %8s\n' layer MMAC "neon instr" MAC/instr \
  "scalar instr" MAC/instr "ratio"
for layer in "${LAYERS[@]}"; do
  declare -A n
  for isa in neon scalar; do
    a=$(count $isa "$layer" 1)
    b=$(count $isa "$layer" 3)
    n[$isa]=$(((b - a) / 2))
  done
  mmac=$(qemu-aarch64 -L /usr/aarch64-linux-gnu "$BENCH" --layer "$layer" --baseline 0 \
    --isa neon --quick | awk -v l="$layer" '$1 == l { print $5 }')
  awk -v l="$layer" -v m="$mmac" -v a="${n[neon]}" -v b="${n[scalar]}" 'BEGIN {
    printf "%-8s %10.1f %14.0f %10.1f %14.0f %10.1f %8.2f\n",
           l, m, a, m * 1e6 / a, b, m * 1e6 / b, b / a }'
done
