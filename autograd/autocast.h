// Mixed precision (fgvc-train --amp bf16|fp16): inside an AutocastGuard, convolutions run in a
// lower-precision dtype, and so does what follows them. A convolution casts its float32
// weight (and a float32 input: the network's first) down, differentiably; cuDNN convolves with
// float32 accumulation; the output stays 16-bit. Batch norm, ReLU, pooling, residual adds and
// concatenations then work on 16-bit activations (computed in float32, each op's float32 result
// rounded to 16 bits: tensor/half.h), which roughly halves the memory the backward pass keeps
// (0.48-0.61 of float32's, measured on the CPU), as in PyTorch's autocast. The parameters,
// their gradients (the "master" copy the optimizer updates), batch norm's statistics, the
// classifier (a small GEMM: linear() casts 16-bit features up; ResNet-v2's 1x1-convolution
// head runs outside autocast), dropout's scaling and the loss stay float32. Per thread, like
// NoGradGuard.
#pragma once
#include "tensor/dtype.h"
#include "tensor/tensor.h"

namespace fgvc {

class Autocast {
 public:
  // The dtype convolutions run in; Float32 when autocast is off.
  static DType dtype();
  static void set_dtype(DType dtype);
  static bool enabled() { return dtype() != DType::Float32; }
};

// The ops PyTorch's autocast runs in float32 whatever their input (sum, exp, log, pow; softmax,
// log-softmax and cross-entropy always do here) take a 16-bit input up to float32 inside an
// AutocastGuard, differentiably, so that a loss a user builds from them is not rounded to 16
// bits; outside one, and for other dtypes, `x` itself.
Tensor float32_under_autocast(const Tensor& x);

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
