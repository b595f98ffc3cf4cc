// Element conversion between every pair of dtypes, identical on host and device.
// Floating -> integer conversions saturate (NaN -> 0) instead of being undefined behaviour.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "tensor/dispatch.h"
#include "tensor/half.h"
#include "tensor/macros.h"

namespace fgvc {

template <class S> FGVC_HD inline double to_double(S s) { return static_cast<double>(s); }
template <> FGVC_HD inline double to_double<BF16>(BF16 s) { return bf16_to_float(s.bits); }
template <> FGVC_HD inline double to_double<FP16>(FP16 s) { return fp16_to_float(s.bits); }

// double -> float rounded to odd: toward zero, with the last bit set when anything was cut
// off. Rounding that float once more, to nearest even at 16 bits, gives the correctly rounded
// 16-bit value (float keeps more than two bits beyond bfloat16's 8 and float16's 11); rounding
// to the nearest float first rounds twice where that lands on a 16-bit tie (1 + 2^-11 + 2^-40
// came out as 1 in float16, not 1 + 2^-10).
FGVC_HD inline float to_float_odd(double v) {
  const float f = static_cast<float>(v);
  if (f != f || static_cast<double>(f) == v) return f;  // NaN, or exact (infinities too)
  uint32_t bits = float_to_bits(f);
  if (fabs(static_cast<double>(f)) > fabs(v)) bits -= 1;  // rounded away from zero: one step back
  return bits_to_float(bits | 1u);
}

// int64 -> double rounded to odd likewise (above 2^53 a double cannot hold every integer), so
// that an integer reaches 16 bits through one rounding too.
FGVC_HD inline double to_double_odd(int64_t v) {
  uint64_t u = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  int shift = 0;
  uint64_t cut = 0;
  while (u >> 53) cut |= u & 1u, u >>= 1, ++shift;
  const double d = ldexp(static_cast<double>(u | cut), shift);  // exact: u < 2^53
  return v < 0 ? -d : d;
}

template <class D> FGVC_HD inline D from_double(double v) {
  if constexpr (std::is_floating_point<D>::value) {
    return static_cast<D>(v);
  } else if constexpr (std::is_same<D, BF16>::value) {
    return BF16{float_to_bf16(to_float_odd(v))};
  } else if constexpr (std::is_same<D, FP16>::value) {
    return FP16{float_to_fp16(to_float_odd(v))};
  } else {
    if (!(v == v)) return D(0);
    const double lo = std::is_same<D, uint8_t>::value ? 0.0 : -9223372036854775808.0;
    const double hi = std::is_same<D, uint8_t>::value ? 255.0 : 9223372036854774784.0;
    return static_cast<D>(v < lo ? lo : (v > hi ? hi : v));
  }
}

template <class D, class S> FGVC_HD inline D cast_value(S s) {
  if constexpr (std::is_same<D, S>::value) {
    return s;
  } else if constexpr (std::is_integral<D>::value && std::is_integral<S>::value) {
    return static_cast<D>(s);  // exact for int64 <-> uint8 within range, wraps like C++ otherwise
  } else if constexpr (std::is_integral<S>::value && std::is_floating_point<D>::value) {
    return static_cast<D>(s);  // rounded once (through double, int64 -> float would round twice above 2^53)
  } else if constexpr (std::is_same<S, float>::value && std::is_same<D, BF16>::value) {
    return BF16{float_to_bf16(s)};
  } else if constexpr (std::is_same<S, float>::value && std::is_same<D, FP16>::value) {
    return FP16{float_to_fp16(s)};
  } else if constexpr (std::is_same<S, int64_t>::value && (std::is_same<D, BF16>::value || std::is_same<D, FP16>::value)) {
    return from_double<D>(to_double_odd(s));
  } else {
    return from_double<D>(to_double<S>(s));
  }
}

}  // namespace fgvc
