// Mixed precision (fgvc-train --amp bf16|fp16): inside an AutocastGuard, convolutions of
// float32 tensors run in a lower-precision dtype. The input and the float32 weight are cast
// down (differentiably), cuDNN convolves with float32 accumulation, and the output is cast back
// to float32, so batch norm, the loss and every other op stay in float32, and the weights and
// their gradients (the "master" copy the optimizer updates) remain float32.
// Per thread, like NoGradGuard. The classifier (a small GEMM) stays in float32.
#pragma once
#include "tensor/dtype.h"

namespace fgvc {

class Autocast {
 public:
  // The dtype convolutions run in; Float32 when autocast is off.
  static DType dtype();
  static void set_dtype(DType dtype);
  static bool enabled() { return dtype() != DType::Float32; }
};

class AutocastGuard {
 public:
  explicit AutocastGuard(DType dtype) : previous_(Autocast::dtype()) { Autocast::set_dtype(dtype); }
  ~AutocastGuard() { Autocast::set_dtype(previous_); }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  DType previous_;
};

}  // namespace fgvc
