// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011),
// plus the conversions to uniform and normal numbers. Everything here is FGVC_HD and uses
// only correctly rounded operations (+, *, /, sqrt, frexp; never a library exp/log/cos,
// never a fused multiply-add), so the CPU and the GPU produce the same bits for the same
// seed and counter, and a model initialised on either device is identical.
#pragma once
#include <cmath>
#include <cstdint>

#include "tensor/macros.h"

namespace fgvc {
namespace philox {

struct U32x4 {
  uint32_t v[4];
};

FGVC_HD inline U32x4 philox4x32_10(U32x4 ctr, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * ctr.v[0];
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * ctr.v[2];
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    ctr = U32x4{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return ctr;
}

// Block `index` of the stream for `seed`: 4 random 32-bit words.
FGVC_HD inline U32x4 block(uint64_t seed, uint64_t index) {
  U32x4 ctr{{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32), 0u, 0u}};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// [0, 1) with 24 random bits (exact in float).
FGVC_HD inline float uniform24(uint32_t u) { return static_cast<float>(u >> 8) * 5.9604644775390625e-08f; }
// [0, 1) with 53 random bits (exact in double).
FGVC_HD inline double uniform53(uint32_t hi, uint32_t lo) {
  const uint64_t x = (static_cast<uint64_t>(hi) << 21) ^ (lo >> 11);
  return static_cast<double>(x & ((1ull << 53) - 1)) * 1.1102230246251565e-16;
}

// Unfused double arithmetic: nvcc would otherwise contract a*b+c into an FMA on the device
// while the host rounds twice, and the two sides would differ in the last bit.
FGVC_HD inline double mul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
FGVC_HD inline double add(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// Natural log of x > 0 to about 1e-16 relative: x = m 2^e with m in [sqrt(1/2), sqrt(2)),
// log m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172, summed to s^23.
FGVC_HD inline double log(double x) {
  int e = 0;
  double m = frexp(x, &e);
  if (m < 0.70710678118654752) {
    m = m * 2.0;
    e -= 1;
  }
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = mul(s, s);
  double p = 1.0 / 23.0;
  for (int k = 21; k >= 1; k -= 2) p = add(mul(p, s2), 1.0 / k);
  return add(mul(static_cast<double>(e), 0.69314718055994530942), mul(2.0, mul(s, p)));
}

// cos and sin of 2*pi*u for u in [0, 1): quarter-turn reduction (exact for u = k 2^-24),
// then Taylor series on |x| <= pi/4 to x^18.
FGVC_HD inline void sincos_turns(double u, double* s, double* c) {
  const int q = static_cast<int>(floor(add(mul(u, 4.0), 0.5)));
  const double x = mul(add(u, -0.25 * q), 6.28318530717958647692);
  const double x2 = mul(x, x);
  double sp = 1.0, cp = 1.0;  // Horner from the highest term down
  for (int k = 18; k >= 2; k -= 2) {
    sp = add(1.0, -mul(sp, x2) / ((k + 1.0) * k));  // sin: x(1 - x^2/(2*3)(1 - x^2/(4*5)(...)))
    cp = add(1.0, -mul(cp, x2) / (k * (k - 1.0)));  // cos: 1 - x^2/(1*2)(1 - x^2/(3*4)(...))
  }
  const double sn = mul(x, sp), cs = cp;
  switch (q & 3) {
    case 0: *s = sn; *c = cs; break;
    case 1: *s = cs; *c = -sn; break;
    case 2: *s = -sn; *c = -cs; break;
    default: *s = -cs; *c = sn; break;
  }
}

// Standard normal number `lane` (0..3) of a block, by Box-Muller on the lane pair.
// Box-Muller on one pair of the block's words: the radius and the angle's sine and cosine,
// which give lanes 2 pair (cosine) and 2 pair + 1 (sine).
FGVC_HD inline void normal_pair(const U32x4& b, int pair, double* r, double* s, double* c) {
  const double u1 = static_cast<double>((b.v[2 * pair] >> 8) + 1u) * 5.9604644775390625e-08;  // (0, 1]
  const double u2 = static_cast<double>(b.v[2 * pair + 1] >> 8) * 5.9604644775390625e-08;     // [0, 1)
  *r = sqrt(mul(-2.0, log(u1)));
  sincos_turns(u2, s, c);
}

FGVC_HD inline double normal(const U32x4& b, int lane) {
  double r, s, c;
  normal_pair(b, lane >> 1, &r, &s, &c);
  return mul(r, (lane & 1) ? s : c);
}

}  // namespace philox
}  // namespace fgvc
