// float <-> bfloat16 / float16 conversion, round to nearest even, identical on host and
// device (bit manipulation only), so a tensor cast on the CPU and on the GPU agree bit
// for bit.
#pragma once
#include <cstdint>
#include <cstring>

#include "tensor/macros.h"

namespace fgvc {

// Storage-only 16-bit floating types: values are loaded into float, computed on, and rounded
// back on the store (widen / narrow below).
struct BF16 { uint16_t bits; };
struct FP16 { uint16_t bits; };

FGVC_HD inline uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

FGVC_HD inline float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// Branch-free (a select), so that CPU loops over bfloat16 vectorise.
FGVC_HD inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);  // NaN stays a (quiet) NaN
}

FGVC_HD inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

FGVC_HD inline uint16_t float_to_fp16(float f) {
  uint32_t x = float_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u) return static_cast<uint16_t>(sign | (x > 0x7F800000u ? 0x7E00u : 0x7C00u));
  if (x >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 rounds to inf
  if (x < 0x38800000u) {                                              // below 2^-14: subnormal or 0
    if (x < 0x33000000u) return static_cast<uint16_t>(sign);          // <= 2^-25 rounds to 0
    const uint32_t e = x >> 23;
    const uint32_t m = (x & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - e;  // in [14, 24]
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  uint32_t r = (x - 0x38000000u) >> 13;  // rebias the exponent from 127 to 15
  const uint32_t rem = x & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;  // a carry correctly bumps the exponent
  return static_cast<uint16_t>(sign | r);
}

FGVC_HD inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-08f;  // m * 2^-24, exact
    return sign ? -v : v;
  }
  if (e == 31) return bits_to_float(sign | 0x7F800000u | (m << 13));
  return bits_to_float(sign | ((e + 112u) << 23) | (m << 13));
}

// The type an element of T is computed in: float for the 16-bit types, T itself otherwise. A
// kernel templated on T reads with widen(), computes in compute_t<T>, writes with narrow<T>(),
// so a bfloat16 result is the float32 result rounded to bfloat16. Casts agree bit for bit on the
// CPU and the GPU; computed results to about one 16-bit step (the GPU's exp and the like, and
// its order of summation, differ from the CPU's: CudaParity.SixteenBitKernels). Results
// accumulated in double (sums) go double -> float -> 16 bits, as float32's result rounded
// would; in a rare near-tie that is one 16-bit step from rounding double directly.
template <class T> struct ComputeType { using type = T; };
template <> struct ComputeType<BF16> { using type = float; };
template <> struct ComputeType<FP16> { using type = float; };
template <class T> using compute_t = typename ComputeType<T>::type;

template <class T> FGVC_HD inline T widen(T v) { return v; }
FGVC_HD inline float widen(BF16 v) { return bf16_to_float(v.bits); }
FGVC_HD inline float widen(FP16 v) { return fp16_to_float(v.bits); }

template <class T> FGVC_HD inline T narrow(compute_t<T> v) { return v; }
template <> FGVC_HD inline BF16 narrow<BF16>(float v) { return BF16{float_to_bf16(v)}; }
template <> FGVC_HD inline FP16 narrow<FP16>(float v) { return FP16{float_to_fp16(v)}; }

}  // namespace fgvc
