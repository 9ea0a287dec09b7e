/*
 * binmx core: portable direct bit-serial convolution kernel (base flags, __builtin_popcountll).
 * Contract in bsconv_kernels.h. Tile: 4 filters x 4 pixels of scalar sums.
 */
#include <cmath>

#include "bsconv_kernels.h"

namespace binmx {
namespace internal {
namespace {

constexpr int kFb = 4;
constexpr int kPb = 4;

void Tile(const BsconvTile& t) {
  const int64_t kwords = t.kwords;
  for (int64_t f = t.f0; f < t.f1; f += kFb) {
    const int fn = static_cast<int>(t.f1 - f < kFb ? t.f1 - f : kFb);
    for (int64_t q = t.q0; q < t.q1; q += kPb) {
      const int qn = static_cast<int>(t.q1 - q < kPb ? t.q1 - q : kPb);
      int64_t acc[kFb][kPb] = {};
      for (int64_t k = 0; k < kwords; ++k) {
        const uint64_t* xp = t.planes + t.koff[k] + q;
        for (int a = 0; a < t.ka; ++a) {
          for (int r = 0; r < fn; ++r) {
            for (int b = 0; b < t.kwb; ++b) {
              const uint64_t wv = t.w[((f + r) * t.kwb + b) * kwords + k];
              for (int c = 0; c < qn; ++c) {
                acc[r][c] += static_cast<int64_t>(__builtin_popcountll(wv & xp[a * t.pstride + c]))
                             << (a + b);
              }
            }
          }
        }
      }
      for (int r = 0; r < fn; ++r) {
        const int64_t fr = f + r;
        for (int c = 0; c < qn; ++c) {
          const int64_t qc = q + c;
          int64_t d = 2 * acc[r][c] - int64_t{t.b_max} * t.l[qc];
          if (t.pid != nullptr) d += t.ct[fr * t.ct_stride + t.pid[qc]];
          const int64_t o = fr * t.out_fstride + qc;
          if (t.out_dot != nullptr) {
            t.out_dot[o] = static_cast<int32_t>(d);
          } else {
            float v = static_cast<float>(static_cast<double>(d) * t.ds[fr]);
            if (t.bias != nullptr) v += t.bias[fr];
            t.out[o] = v;
          }
        }
      }
    }
  }
}

// la = rint(A * min(1, max(0, double(x)))), NaN -> 0 (as kbit_kernel_scalar.cc's Levels).
int Level(float x, double a_levels) {
  double d = static_cast<double>(x);
  if (!(d > 0.0)) d = 0.0;
  if (d > 1.0) d = 1.0;
  return static_cast<int>(std::nearbyint(a_levels * d));
}

void Pack(const float* x, int64_t ch_stride, int n_ch, int64_t width, int ka, const float*,
          uint64_t* out, int64_t out_stride, int32_t* sums) {
  const double a_levels = static_cast<double>((1 << ka) - 1);
  for (int a = 0; a < ka; ++a) {
    for (int64_t p = 0; p < width; ++p) out[a * out_stride + p] = 0;
  }
  for (int c = 0; c < n_ch; ++c) {
    const float* xc = x + c * ch_stride;
    for (int64_t p = 0; p < width; ++p) {
      const int la = Level(xc[p], a_levels);
      sums[p] += la;
      for (int a = 0; a < ka; ++a) {
        out[a * out_stride + p] |= static_cast<uint64_t>((la >> a) & 1) << c;
      }
    }
  }
}

}  // namespace

BsconvSpec ScalarBsconv() { return BsconvSpec{&Tile, &Pack}; }

}  // namespace internal
}  // namespace binmx
