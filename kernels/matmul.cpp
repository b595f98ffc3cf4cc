#include "kernels/matmul.h"

#include <cblas.h>

#include <algorithm>

#include "fgvc/config.h"

namespace fgvc {
namespace kernels {
namespace detail {

namespace {

// The last two axes of t as a BLAS operand (logically transposed when `trans`).
GemmOperand as_operand(const Tensor& t, bool trans) {
  const int64_t r = t.dim();
  const int64_t rows = t.size(r - 2), cols = t.size(r - 1);
  const int64_t s_row = t.stride(r - 2), s_col = t.stride(r - 1);
  const int64_t batch_stride = r == 3 ? t.stride(0) : 0;
  if (s_col == 1 && (s_row >= std::max<int64_t>(cols, 1) || rows == 1))
    return {t.data_ptr(), std::max<int64_t>(s_row, std::max<int64_t>(cols, 1)), trans, batch_stride, Tensor()};
  if (s_row == 1 && (s_col >= std::max<int64_t>(rows, 1) || cols == 1))  // a transposed view
    return {t.data_ptr(), std::max<int64_t>(s_col, std::max<int64_t>(rows, 1)), !trans, batch_stride, Tensor()};
  Tensor c = t.contiguous();
  return {c.data_ptr(), std::max<int64_t>(cols, 1), trans, r == 3 ? rows * cols : 0, c};
}

}  // namespace

void gemm_cpu(const GemmProblem& p) {
  const CBLAS_TRANSPOSE ta = p.a.trans ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = p.b.trans ? CblasTrans : CblasNoTrans;
  for (int64_t i = 0; i < p.batch; ++i) {
    if (p.dtype == DType::Float32) {
      cblas_sgemm(CblasRowMajor, ta, tb, p.m, p.n, p.k, static_cast<float>(p.alpha),
                  static_cast<const float*>(p.a.ptr) + i * p.a.batch_stride, p.a.ld,
                  static_cast<const float*>(p.b.ptr) + i * p.b.batch_stride, p.b.ld, static_cast<float>(p.beta),
                  static_cast<float*>(p.c) + i * p.c_batch_stride, p.ldc);
    } else {
      cblas_dgemm(CblasRowMajor, ta, tb, p.m, p.n, p.k, p.alpha,
                  static_cast<const double*>(p.a.ptr) + i * p.a.batch_stride, p.a.ld,
                  static_cast<const double*>(p.b.ptr) + i * p.b.batch_stride, p.b.ld, p.beta,
                  static_cast<double*>(p.c) + i * p.c_batch_stride, p.ldc);
    }
  }
}

#if !FGVC_WITH_CUDA
void gemm_cuda(const GemmProblem&) { throw Error("matmul: built without CUDA"); }
#endif

GemmProblem make_problem(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
                         double alpha, double beta, const char* op) {
  FGVC_CHECK(a.defined() && b.defined() && c.defined(), op, "undefined tensor");
  FGVC_CHECK(a.dtype() == DType::Float32 || a.dtype() == DType::Float64, op,
             "needs float32 or float64, got ", describe(a));
  FGVC_CHECK(a.dtype() == b.dtype() && a.dtype() == c.dtype(), op, "dtype mismatch: ", describe(a), ", ",
             describe(b), ", ", describe(c));
  FGVC_CHECK(a.device() == b.device() && a.device() == c.device(), op, "device mismatch: ", describe(a), ", ",
             describe(b), ", ", describe(c));
  FGVC_CHECK((a.dim() == 2 && b.dim() == 2) || (a.dim() == 3 && (b.dim() == 2 || b.dim() == 3)), op,
             "needs 2-D operands or a 3-D batch, got ", describe(a), " and ", describe(b));
  const int64_t m = trans_a ? a.size(-1) : a.size(-2), ka = trans_a ? a.size(-2) : a.size(-1);
  const int64_t kb = trans_b ? b.size(-1) : b.size(-2), n = trans_b ? b.size(-2) : b.size(-1);
  FGVC_CHECK(ka == kb, op, "inner dimensions differ: ", describe(a), (trans_a ? " (transposed)" : ""), " @ ",
             describe(b), (trans_b ? " (transposed)" : ""));
  const int64_t batch = a.dim() == 3 ? a.size(0) : 1;
  FGVC_CHECK(b.dim() == 2 || b.size(0) == batch, op, "batch sizes differ: ", describe(a), " @ ", describe(b));
  const Shape want = a.dim() == 3 ? Shape{batch, m, n} : Shape{m, n};
  FGVC_CHECK(c.shape() == want, op, "output ", describe(c), " should be ", shape_str(want));
  FGVC_CHECK(c.stride(-1) == 1 && (c.stride(-2) >= n || m == 1) &&
                 (c.dim() == 2 || c.stride(0) >= m * c.stride(-2)),
             op, "output must be row-major with unit inner stride, got strides ", shape_str(c.strides()));
  GemmProblem p{batch, m, n, ka, as_operand(a, trans_a), as_operand(b, trans_b), c.data_ptr(),
                std::max<int64_t>(c.stride(-2), std::max<int64_t>(n, 1)), c.dim() == 3 ? c.stride(0) : 0,
                alpha, beta, a.dtype(), a.device()};
  if (b.dim() == 2) p.b.batch_stride = 0;
  // BLAS and cuBLAS take 32-bit sizes and leading dimensions.
  constexpr int64_t kIntMax = 2147483647;
  FGVC_CHECK(std::max({m, n, ka, batch, p.a.ld, p.b.ld, p.ldc}) <= kIntMax, op,
             "a size or leading dimension beyond 2^31 - 1 (BLAS takes 32-bit ones): ", describe(a), " @ ", describe(b));
  return p;
}

}  // namespace detail

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, double alpha, double beta, const Tensor& c) {
  FGVC_CHECK(a.dim() == 2 && b.dim() == 2, "gemm", "needs 2-D operands, got ", describe(a), " and ", describe(b));
  const detail::GemmProblem p = detail::make_problem(a, trans_a, b, trans_b, c, alpha, beta, "gemm");
  if (p.m == 0 || p.n == 0) return;
  if (p.device.is_cpu()) detail::gemm_cpu(p);
  else detail::gemm_cuda(p);
}

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  FGVC_CHECK(a.defined() && b.defined(), "matmul", "undefined tensor");
  FGVC_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul", "needs matrices, got ", describe(a), " and ", describe(b));
  const int64_t m = trans_a ? a.size(-1) : a.size(-2), n = trans_b ? b.size(-2) : b.size(-1);
  const Shape out_shape = a.dim() == 3 ? Shape{a.size(0), m, n} : Shape{m, n};
  Tensor c = Tensor::empty(out_shape, a.dtype(), a.device());
  const detail::GemmProblem p = detail::make_problem(a, trans_a, b, trans_b, c, 1.0, 0.0, "matmul");
  if (c.numel() == 0) return c;
  if (p.k == 0) return c.fill_(0.0);
  if (p.device.is_cpu()) detail::gemm_cpu(p);
  else detail::gemm_cuda(p);
  return c;
}

}  // namespace kernels
}  // namespace fgvc
