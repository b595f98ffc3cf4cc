// Division of 32-bit unsigned indices by a divisor fixed for a whole kernel, without a
// division instruction (GPUs have none: a 64-bit `/` is a long software routine, per element).
// The divisor d gets a magic multiplier m and a shift l with l = ceil(log2 d) and
// m = floor(2^32 (2^l - d) / d) + 1; then x / d = (umulhi(x, m) + x) >> l for every 32-bit x
// (Granlund and Montgomery, "Division by invariant integers using multiplication", 1994; the
// sum is taken in 64 bits, so it cannot overflow). Tested on the host against `/` and `%`.
#pragma once
#include <cstdint>

#include "tensor/error.h"
#include "tensor/macros.h"

namespace fgvc {
namespace kernels {

class FastDivmod {
 public:
  FastDivmod() = default;
  explicit FastDivmod(uint32_t d) : d_(d) {
    FGVC_CHECK(d > 0, "FastDivmod", "division by zero");
    while ((uint64_t(1) << l_) < d) ++l_;
    m_ = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << l_) - d)) / d + 1);
  }
  FGVC_HD uint32_t div(uint32_t x) const {
    return static_cast<uint32_t>((static_cast<uint64_t>(umulhi(x, m_)) + x) >> l_);
  }
  FGVC_HD uint32_t mod(uint32_t x) const { return x - div(x) * d_; }
  FGVC_HD uint32_t divisor() const { return d_; }

 private:
  FGVC_HD static uint32_t umulhi(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
    return __umulhi(a, b);
#else
    return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
  }
  uint32_t d_ = 1, m_ = 1, l_ = 0;
};

}  // namespace kernels
}  // namespace fgvc
