// Matrix products: OpenBLAS sgemm/dgemm on the CPU, cuBLAS on CUDA, both with transposes.
// Row-major throughout. An operand whose last two axes are a transposed view (stride 1 on
// the second-to-last axis) is handed to BLAS as a transposed operand without a copy.
#pragma once
#include "tensor/tensor.h"

namespace fgvc {
namespace kernels {

// op(a) @ op(b). 2-D: a [M,K] ([K,M] when trans_a), b [K,N] ([N,K] when trans_b) -> [M,N].
// 3-D: a [Bt,M,K] with b [Bt,K,N] or a 2-D b shared by every batch -> [Bt,M,N].
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// In place, 2-D: c = alpha * op(a) @ op(b) + beta * c (c row-major with unit inner stride).
// With beta = 0, c's previous contents are ignored (NaN included).
void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, double alpha, double beta, const Tensor& c);

namespace detail {
// A matrix as BLAS sees it: row-major with leading dimension ld, possibly transposed, with
// `batch_stride` elements between consecutive matrices (0: the same matrix for all).
struct GemmOperand {
  const void* ptr;
  int64_t ld;
  bool trans;
  int64_t batch_stride;
  Tensor keep_alive;  // the contiguous copy when one had to be made
};
struct GemmProblem {
  int64_t batch, m, n, k;
  GemmOperand a, b;
  void* c;
  int64_t ldc, c_batch_stride;
  double alpha, beta;
  DType dtype;
  Device device;
};
void gemm_cpu(const GemmProblem& p);
void gemm_cuda(const GemmProblem& p);
}  // namespace detail

}  // namespace kernels
}  // namespace fgvc
