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
// The dtype a floating type's values are computed in: float32 for the 16-bit storage types
// (and the dtype of the float32 parameters beside their activations), t itself otherwise.
DType compute_dtype(DType t);

// Compile-time map from C++ type to DType.
struct BF16;  // tensor/half.h
struct FP16;
template <class T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::Float32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::Float64; };
template <> struct DTypeOf<BF16> { static constexpr DType value = DType::BFloat16; };
template <> struct DTypeOf<FP16> { static constexpr DType value = DType::Float16; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::Int64; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::UInt8; };

}  // namespace fgvc
