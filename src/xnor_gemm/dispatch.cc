/*
 * binmx core: run-time choice of the CPU kernel path and of the thread count.
 *
 * A path is available when its kernel file was compiled in (BINMX_BUILT_AVX2 /
 * BINMX_BUILT_AVX512 / BINMX_BUILT_NEON, set by CMake) AND the CPU reports the instructions it
 * uses (AVX2: avx2+popcnt; AVX-512: avx512f+avx512bw+avx512vl+avx512vpopcntdq, with OS support
 * for the wider register state; NEON: the kernel's HWCAP_ASIMD bit, mandatory in ARMv8-A but
 * still asked of the kernel). The x86 kernels are built only for x86-64 and the NEON kernels
 * only for aarch64, so one library has either {scalar, avx2, avx512} or {scalar, neon}.
 * BINMX_ISA=scalar|avx2|avx512|neon caps the default; it is read on every call
 * (docs/design.md §6).
 */
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include "kernels.h"
#include "xnor_gemm.h"

namespace binmx {

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kNeon:
      return "neon";
  }
  return "unknown";
}

namespace {
constexpr Isa kAllIsas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kNeon};
}  // namespace

bool ParseIsa(const std::string& name, Isa* out) {
  for (Isa isa : kAllIsas) {
    if (name == IsaName(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

bool IsaBuilt(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
#ifdef BINMX_BUILT_AVX2
      return true;
#else
      return false;
#endif
    case Isa::kAvx512:
#ifdef BINMX_BUILT_AVX512
      return true;
#else
      return false;
#endif
    case Isa::kNeon:
#ifdef BINMX_BUILT_NEON
      return true;
#else
      return false;
#endif
  }
  return false;
}

bool IsaSupportedByCpu(Isa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq");
    case Isa::kNeon:
      return false;
  }
  return false;
#elif defined(__aarch64__) && defined(__linux__)
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kNeon:
      return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0;
    case Isa::kAvx2:
    case Isa::kAvx512:
      return false;
  }
  return false;
#elif defined(__aarch64__)
  // Not Linux (no getauxval): Advanced SIMD is mandatory in ARMv8-A.
  return isa == Isa::kScalar || isa == Isa::kNeon;
#else
  return isa == Isa::kScalar;
#endif
}

std::vector<Isa> AvailableIsas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas) {
    if (IsaBuilt(isa) && IsaSupportedByCpu(isa)) out.push_back(isa);
  }
  return out;
}

void RequireIsa(Isa isa) {
  if (!IsaBuilt(isa)) {
    const char* why = "";
#if defined(__x86_64__)
    if (isa == Isa::kNeon) why = " (NEON kernels are built only for aarch64)";
#elif defined(__aarch64__)
    if (isa == Isa::kAvx2 || isa == Isa::kAvx512) why = " (x86 kernels are built only for x86-64)";
#endif
    throw std::runtime_error(std::string("ISA path '") + IsaName(isa) +
                             "' was not built into this binmx library" + why);
  }
  if (!IsaSupportedByCpu(isa)) {
    throw std::runtime_error(std::string("ISA path '") + IsaName(isa) +
                             "' is not supported by this CPU");
  }
}

namespace {

Isa ComputeDefaultIsa() {
  Isa best = AvailableIsas().back();
  const char* env = std::getenv("BINMX_ISA");
  if (env == nullptr || *env == '\0') return best;
  Isa cap;
  if (!ParseIsa(env, &cap)) {
    throw std::runtime_error(std::string("BINMX_ISA='") + env +
                             "' is not one of scalar, avx2, avx512, neon");
  }
  try {
    RequireIsa(cap);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string("BINMX_ISA='") + env + "': " + e.what());
  }
  return cap;
}

}  // namespace

Isa DefaultIsa() {
  // Not cached in a static: a throw must repeat on every call, and the cost is a getenv.
  return ComputeDefaultIsa();
}

int DefaultThreads() {
  const char* env = std::getenv("OMP_NUM_THREADS");
  if (env != nullptr) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0 && v <= 1024) return static_cast<int>(v);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

GemmConfig DefaultGemmConfig() { return GemmConfig{DefaultIsa(), DefaultThreads()}; }

namespace internal {

// The kernel of a built path (callers check availability with RequireIsa first).
KernelSpec KernelFor(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      break;
    case Isa::kAvx2:
#ifdef BINMX_BUILT_AVX2
      return Avx2Kernel();
#else
      break;
#endif
    case Isa::kAvx512:
#ifdef BINMX_BUILT_AVX512
      return Avx512Kernel();
#else
      break;
#endif
    case Isa::kNeon:
#ifdef BINMX_BUILT_NEON
      return NeonKernel();
#else
      break;
#endif
  }
  return ScalarKernel();
}

}  // namespace internal

}  // namespace binmx
