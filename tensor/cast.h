// Element conversion between every pair of dtypes, identical on host and device.
// Floating -> integer conversions saturate (NaN -> 0) instead of being undefined behaviour.
#pragma once
#include <cstdint>
#include <type_traits>

#include "tensor/dispatch.h"
#include "tensor/half.h"
#include "tensor/macros.h"

namespace fgvc {

template <class S> FGVC_HD inline double to_double(S s) { return static_cast<double>(s); }
template <> FGVC_HD inline double to_double<BF16>(BF16 s) { return bf16_to_float(s.bits); }
template <> FGVC_HD inline double to_double<FP16>(FP16 s) { return fp16_to_float(s.bits); }

template <class D> FGVC_HD inline D from_double(double v) {
  if constexpr (std::is_floating_point<D>::value) {
    return static_cast<D>(v);
  } else if constexpr (std::is_same<D, BF16>::value) {
    return BF16{float_to_bf16(static_cast<float>(v))};
  } else if constexpr (std::is_same<D, FP16>::value) {
    return FP16{float_to_fp16(static_cast<float>(v))};
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
  } else {
    return from_double<D>(to_double<S>(s));
  }
}

}  // namespace fgvc
