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

// The uniforms of a whole Philox block at once: elements first .. first + count - 1 of the
// fill, where block k holds elements k * per_block .. (per_block: 2 for float64, else 4), by
// random_value's operations, so the same bits, with the block computed once, not per element.
// (The CPU's normals go many pairs at a time, detail::normal_pairs in random.cpp.)
template <class T>
inline void uniform_block(uint64_t seed, uint64_t first_block, int64_t block, double a, double b, T* out, int count) {
  const philox::U32x4 blk = philox::block(seed, first_block + static_cast<uint64_t>(block));
  if constexpr (sizeof(T) == 8) {
    for (int k = 0; k < count; ++k)
      out[k] = static_cast<T>(philox::add(a, philox::mul(b - a, philox::uniform53(blk.v[2 * k], blk.v[2 * k + 1]))));
  } else {
    const float lo = static_cast<float>(a), hi = static_cast<float>(b);
    for (int k = 0; k < count; ++k) out[k] = static_cast<T>(fadd_rn(lo, fmul_rn(hi - lo, philox::uniform24(blk.v[k]))));
  }
}

}  // namespace detail
}  // namespace fgvc
