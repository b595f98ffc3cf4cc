// Ground distances of the EMD: pairwise Euclidean distances between class means, in
// float64, by GEMM: d_ij^2 = |a_i|^2 + |b_j|^2 - 2 a_i.b_j, clamped at 0. Where the two
// norms nearly cancel (d^2 below 1e-3 of |a|^2 + |b|^2, e.g. near-duplicate classes) the
// GEMM form has lost digits, and that distance is recomputed from exact differences.
// CPU: blocks of source rows over the threads, each widened to float64, multiplied by
// OpenBLAS dgemm and finished in cache; CUDA: cuBLAS dgemm plus one combining kernel
// (ground_distance.cu).
#pragma once
#include "tensor/tensor.h"

namespace fgvc {
namespace emd {

// a [m, d], b [n, d] (float32 or float64, same device) -> [m, n] float64 on that device.
Tensor pairwise_distances(const Tensor& a, const Tensor& b);

namespace detail {
constexpr double kCancellation = 1e-3;
// a [m, d] float32 or float64 contiguous, b [n, d] -> [m, n] float64.
Tensor pairwise_distances_cpu(const Tensor& a, const Tensor& b);
// max |x| over float64 features (0 for none).
double largest_magnitude(const Tensor& t);
// a [m, d], b [n, d] float64 contiguous; `dist` holds the Gram matrix a b^T on entry and
// the distances on return (in place: no second m x n buffer).
void gram_to_distances_cuda(const Tensor& a, const Tensor& b, const Tensor& dist);
}  // namespace detail

}  // namespace emd
}  // namespace fgvc
