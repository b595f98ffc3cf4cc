#include "emd/ground_distance.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "fgvc/config.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"
#include "tensor/region_errors.h"

namespace fgvc {
namespace emd {

namespace detail {

namespace {

// Eight running sums: a single one is a chain of dependent additions, 4 cycles each, which
// made the rows' norms a tenth of the distances' time (1000 x 200, d = 2048: 1.4 ms of ~16).
double squared_norm(const double* x, int64_t d) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= d; k += 8)
    for (int lane = 0; lane < 8; ++lane) s[lane] += x[k + lane] * x[k + lane];
  for (; k < d; ++k) s[0] += x[k] * x[k];
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

double exact_squared_distance(const double* x, const double* y, int64_t d) {
  double s = 0;
  for (int64_t k = 0; k < d; ++k) {
    const double diff = x[k] - y[k];
    s += diff * diff;
  }
  return s;
}

// One block of rows: `g` holds their Gram rows (a_i . b_j) on entry, distances on return.
void finish_block(const double* a, int64_t rows, const double* b, const double* b_norms, int64_t n, int64_t d,
                  double* g) {
  for (int64_t i = 0; i < rows; ++i) {
    const double* ai = a + i * d;
    const double na = squared_norm(ai, d);
    for (int64_t j = 0; j < n; ++j) {
      const double scale = na + b_norms[j];
      double d2 = scale - 2.0 * g[i * n + j];
      // Cancellation, or no number at all (inf - inf): the differences themselves.
      if (!(d2 >= kCancellation * scale)) d2 = exact_squared_distance(ai, b + j * d, d);
      g[i * n + j] = std::sqrt(d2 < 0.0 ? 0.0 : d2);  // rounding below 0 clamped; a NaN (of NaN features) kept
    }
  }
}

}  // namespace

// The source rows in blocks spread over the threads: each thread widens its block to
// float64 in its own buffer (float32 features never exist as a whole float64 copy: at
// 6089 x 2048 that copy alone is 100 MB of fresh pages), multiplies it by the targets with
// a single-threaded dgemm, and finishes the block's distances while it is in cache.
Tensor pairwise_distances_cpu(const Tensor& a, const Tensor& b_any) {
  const int64_t m = a.size(0), n = b_any.size(0), d = a.size(1);
  const Tensor b = b_any.to(DType::Float64).contiguous();
  const double* pb = b.data<double>();
  std::vector<double> b_norms(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) b_norms[j] = squared_norm(pb + j * d, d);
  Tensor dist = Tensor::empty({m, n}, DType::Float64);
  double* out = dist.data<double>();
  const bool wide = a.dtype() == DType::Float64;
  const int threads = omp_get_max_threads();
  // One block a thread up to 512 rows: each dgemm packs all of b again, so blocks of fewer
  // rows pay that more often (1000 x 200 at d = 2048 on 2 threads: 125-row blocks took
  // 28-40 ms, 500-row ones 17-18 ms); the work is even, so no smaller blocks are needed to
  // balance it.
  const int64_t block = std::clamp<int64_t>((m + threads - 1) / threads, 16, 512);
  const int64_t blocks = (m + block - 1) / block;
  RegionErrors errors;  // a thread's scratch may fail to allocate
#pragma omp parallel if (blocks > 1 && m * n * d > (1 << 20))
  {
    // Not zero-filled: every element is written before it is read. A tensor's storage: from
    // the host pool, in huge pages where it is large (tensor/storage.cpp).
    Tensor scratch;
    const bool ready = errors.run([&] {
      if (!wide) scratch = Tensor::empty({block * d}, DType::Float64);
    });
    double* const buffer = scratch.defined() ? scratch.data<double>() : nullptr;
#pragma omp for schedule(dynamic)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      if (!ready) continue;  // every thread still takes its part in the loop; the error follows it
      const int64_t r0 = blk * block, rows = std::min(block, m - r0);
      const double* pa;
      if (wide) {
        pa = a.data<double>() + r0 * d;
      } else {
        const float* src = a.data<float>() + r0 * d;
        for (int64_t k = 0; k < rows * d; ++k) buffer[k] = src[k];
        pa = buffer;
      }
      // Inside a parallel region OpenBLAS (its OpenMP build) runs on the calling thread.
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(n),
                  static_cast<int>(d), 1.0, pa, static_cast<int>(d), pb, static_cast<int>(d), 0.0, out + r0 * n,
                  static_cast<int>(n));
      finish_block(pa, rows, pb, b_norms.data(), n, d, out + r0 * n);
    }
  }
  errors.rethrow();
  return dist;
}

// The largest |x| of float64 features: on the CPU a pass over them (an |x| copy of
// 6089 x 2048 features would be 100 MB of fresh pages); on a GPU through the reductions.
double largest_magnitude(const Tensor& t) {
  if (t.device().is_cuda()) return kernels::max(kernels::unary(kernels::UnaryOp::Abs, t), {}).item<double>();
  const Tensor c = t.contiguous();
  const double* p = c.data<double>();
  double largest = 0;
  for (int64_t i = 0; i < c.numel(); ++i) largest = std::max(largest, std::fabs(p[i]));
  return largest;
}

#if !FGVC_WITH_CUDA
void gram_to_distances_cuda(const Tensor&, const Tensor&, const Tensor&) {
  throw Error("pairwise_distances: built without CUDA");
}
#endif

}  // namespace detail

Tensor pairwise_distances(const Tensor& a_in, const Tensor& b_in) {
  FGVC_CHECK(a_in.defined() && b_in.defined(), "pairwise_distances", "undefined tensor");
  FGVC_CHECK(a_in.dim() == 2 && b_in.dim() == 2 && a_in.size(1) == b_in.size(1), "pairwise_distances",
             "needs [m, d] and [n, d] features, got ", describe(a_in), " and ", describe(b_in));
  FGVC_CHECK(a_in.device() == b_in.device(), "pairwise_distances", "device mismatch: ", describe(a_in), " and ",
             describe(b_in));
  FGVC_CHECK(a_in.dtype() == DType::Float32 || a_in.dtype() == DType::Float64, "pairwise_distances",
             "features must be float32 or float64, got ", describe(a_in));
  if (a_in.numel() == 0 || b_in.size(0) == 0) return Tensor::zeros({a_in.size(0), b_in.size(0)}, DType::Float64, a_in.device());
  // float64 features so small that squares of their differences underflow (below about
  // 2^-511, and differences are ~2^-52 of the values): scaled by a power of two that brings
  // the largest to [1, 2), which every product and sum carries exactly, and the distances
  // scaled back by its inverse, also exactly. float32 features never come near.
  if (a_in.dtype() == DType::Float64 && b_in.dtype() == DType::Float64) {
    const double largest = std::max(detail::largest_magnitude(a_in), detail::largest_magnitude(b_in));
    if (largest > 0 && largest < 0x1p-400) {
      const int exponent = std::ilogb(largest);  // largest in [2^exponent, 2^(exponent + 1))
      const double up = std::ldexp(1.0, -exponent);
      const Tensor d = pairwise_distances(kernels::binary(kernels::BinaryOp::Mul, a_in, up),
                                          kernels::binary(kernels::BinaryOp::Mul, b_in, up));
      return kernels::binary(kernels::BinaryOp::Mul, d, std::ldexp(1.0, exponent));
    }
  }
  if (a_in.device().is_cpu()) {
    return detail::pairwise_distances_cpu(a_in.contiguous(), b_in);
  }
  const Tensor a = a_in.to(DType::Float64).contiguous(), b = b_in.to(DType::Float64).contiguous();
  Tensor dist = kernels::matmul(a, b, false, true);  // the Gram matrix, turned into distances in place
  if (dist.numel() == 0) return dist;
  detail::gram_to_distances_cuda(a, b, dist);
  return dist;
}

}  // namespace emd
}  // namespace fgvc
