// The value of element i of a random fill, shared by random.cpp and random.cu so that both
// devices compute it with the same operations (see philox.h on why this is bit-exact).
#pragma once
#include "tensor/philox.h"
#include "tensor/random.h"

namespace fgvc {
namespace detail {

FGVC_HD inline float fmul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
FGVC_HD inline float fadd_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

template <class T>
FGVC_HD inline T random_value(Distribution dist, uint64_t seed, uint64_t first_block, int64_t i, double a, double b) {
  if (dist == Distribution::Uniform) {
    if constexpr (sizeof(T) == 8) {
      const philox::U32x4 blk = philox::block(seed, first_block + static_cast<uint64_t>(i) / 2);
      const int w = 2 * static_cast<int>(i & 1);
      const double u = philox::uniform53(blk.v[w], blk.v[w + 1]);
      return static_cast<T>(philox::add(a, philox::mul(b - a, u)));
    } else {
      const philox::U32x4 blk = philox::block(seed, first_block + static_cast<uint64_t>(i) / 4);
      const float u = philox::uniform24(blk.v[i & 3]);
      const float lo = static_cast<float>(a), hi = static_cast<float>(b);
      return static_cast<T>(fadd_rn(lo, fmul_rn(hi - lo, u)));
    }
  }
  const philox::U32x4 blk = philox::block(seed, first_block + static_cast<uint64_t>(i) / 4);
  return static_cast<T>(philox::add(a, philox::mul(b, philox::normal(blk, static_cast<int>(i & 3)))));
}

}  // namespace detail
}  // namespace fgvc
