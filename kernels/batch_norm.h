// Batch normalisation over N (and H, W) per channel C, for [N, C] or [N, C, H, W] inputs.
// Training uses the batch's mean and biased variance (and hands back the unbiased variance
// for the running average); evaluation uses the running statistics. CPU: direct loops
// (batch_norm.cpp); CUDA: the same formulas in fused kernels (batch_norm.cu).
#pragma once
#include "tensor/tensor.h"

namespace fgvc {
namespace kernels {

struct BatchNormStats {
  Tensor y;          // normalised, scaled and shifted input
  Tensor mean;       // [C] batch mean
  Tensor invstd;     // [C] 1 / sqrt(var + eps), var biased
  Tensor var_unbiased;  // [C], for the running average
};

BatchNormStats batch_norm_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps);
// y = (x - mean) * invstd * gamma + beta with given per-channel statistics (evaluation).
Tensor batch_norm_apply(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                        const Tensor& invstd);

struct BatchNormGrads {
  Tensor dx, dgamma, dbeta;
};
// training: the statistics are functions of x (the full backward); otherwise they are
// constants and dx = grad * gamma * invstd.
BatchNormGrads batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                   const Tensor& invstd, bool training);

// CUDA: fused kernels (batch_norm.cu) by default; off, the same formulas composed from the
// generic elementwise and reduction kernels (several times the memory traffic), kept as a
// second implementation that the GPU tests and benchmarks compare against.
void set_cuda_batch_norm_fused(bool on);
bool cuda_batch_norm_fused();

namespace detail {
// CUDA implementations (contiguous operands, checked shapes): x (and grad) of a floating
// dtype, 16-bit included; gamma, beta and the statistics in compute_dtype(x): float32 beside
// 16-bit x.
BatchNormStats batch_norm_train_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps);
Tensor batch_norm_apply_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                             const Tensor& invstd);
BatchNormGrads batch_norm_backward_cuda(const Tensor& grad, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                        const Tensor& invstd, bool training);
}  // namespace detail

}  // namespace kernels
}  // namespace fgvc
