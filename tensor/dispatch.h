// dtype -> C++ type dispatch for kernels: FGVC_DISPATCH_FLOAT(dtype, "op", T, body) runs
// `body` with `T` bound to float or double and throws naming the op for any other dtype.
#pragma once
#include <cstdint>

#include "tensor/dtype.h"
#include "tensor/error.h"
#include "tensor/half.h"

#define FGVC_DISPATCH_CASE(enum_value, type, T, ...) \
  case ::fgvc::DType::enum_value: {                   \
    using T = type;                                   \
    __VA_ARGS__;                                      \
    break;                                            \
  }

#define FGVC_DISPATCH_FLOAT(dtype, op, T, ...)                                              \
  switch (dtype) {                                                                          \
    FGVC_DISPATCH_CASE(Float32, float, T, __VA_ARGS__)                                      \
    FGVC_DISPATCH_CASE(Float64, double, T, __VA_ARGS__)                                     \
    default:                                                                                \
      throw ::fgvc::Error(::fgvc::detail::concat(op, ": dtype ", ::fgvc::dtype_name(dtype), \
                                                 " is not supported (float32 or float64)")); \
  }

// float32, float64 and the 16-bit storage types (computed in float: tensor/half.h's widen and
// narrow), for the ops that mixed precision keeps in 16 bits.
#define FGVC_DISPATCH_FLOATING(dtype, op, T, ...)                                            \
  switch (dtype) {                                                                          \
    FGVC_DISPATCH_CASE(Float32, float, T, __VA_ARGS__)                                      \
    FGVC_DISPATCH_CASE(Float64, double, T, __VA_ARGS__)                                     \
    FGVC_DISPATCH_CASE(BFloat16, ::fgvc::BF16, T, __VA_ARGS__)                              \
    FGVC_DISPATCH_CASE(Float16, ::fgvc::FP16, T, __VA_ARGS__)                               \
    default:                                                                                \
      throw ::fgvc::Error(::fgvc::detail::concat(op, ": dtype ", ::fgvc::dtype_name(dtype), \
                                                 " is not supported (a floating dtype)"));  \
  }

#define FGVC_DISPATCH_ALL(dtype, op, T, ...)                                               \
  switch (dtype) {                                                                         \
    FGVC_DISPATCH_CASE(Float32, float, T, __VA_ARGS__)                                     \
    FGVC_DISPATCH_CASE(Float64, double, T, __VA_ARGS__)                                    \
    FGVC_DISPATCH_CASE(BFloat16, ::fgvc::BF16, T, __VA_ARGS__)                             \
    FGVC_DISPATCH_CASE(Float16, ::fgvc::FP16, T, __VA_ARGS__)                              \
    FGVC_DISPATCH_CASE(Int64, int64_t, T, __VA_ARGS__)                                     \
    FGVC_DISPATCH_CASE(UInt8, uint8_t, T, __VA_ARGS__)                                     \
    default:                                                                               \
      throw ::fgvc::Error(::fgvc::detail::concat(op, ": unknown dtype"));                  \
  }
