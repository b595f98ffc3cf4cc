// Element types. float32 is the compute type; float64 is for references and gradient
// checks; bfloat16/float16 are storage types for mixed precision; int64 holds labels and
// indices; uint8 holds decoded images.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fgvc {

enum class DType : uint8_t { Float32, Float64, BFloat16, Float16, Int64, UInt8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
bool is_floating(DType t);

// Compile-time map from C++ type to DType.
template <class T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::Float32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::Float64; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::Int64; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::UInt8; };

}  // namespace fgvc
