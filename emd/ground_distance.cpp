#include "emd/ground_distance.h"

#include <cmath>
#include <vector>

#include "fgvc/config.h"
#include "kernels/matmul.h"

namespace fgvc {
namespace emd {

namespace detail {

namespace {
std::vector<double> squared_norms(const double* x, int64_t rows, int64_t d) {
  std::vector<double> out(static_cast<size_t>(rows));
#pragma omp parallel for if (rows * d > 65536) schedule(static)
  for (int64_t i = 0; i < rows; ++i) {
    double s = 0;
    for (int64_t k = 0; k < d; ++k) s += x[i * d + k] * x[i * d + k];
    out[i] = s;
  }
  return out;
}
}  // namespace

void gram_to_distances_cpu(const Tensor& a, const Tensor& b, const Tensor& dist) {
  const int64_t m = a.size(0), n = b.size(0), d = a.size(1);
  const double *pa = a.data<double>(), *pb = b.data<double>();
  const std::vector<double> na = squared_norms(pa, m, d), nb = squared_norms(pb, n, d);
  double* g = dist.data<double>();
#pragma omp parallel for if (m * n > 4096) schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const double scale = na[i] + nb[j];
      double d2 = scale - 2.0 * g[i * n + j];
      if (d2 < kCancellation * scale) {  // cancellation: recompute exactly
        d2 = 0.0;
        for (int64_t k = 0; k < d; ++k) {
          const double diff = pa[i * d + k] - pb[j * d + k];
          d2 += diff * diff;
        }
      }
      g[i * n + j] = std::sqrt(d2 > 0.0 ? d2 : 0.0);
    }
  }
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
  const Tensor a = a_in.to(DType::Float64).contiguous(), b = b_in.to(DType::Float64).contiguous();
  Tensor dist = kernels::matmul(a, b, false, true);  // the Gram matrix, turned into distances in place
  if (dist.numel() == 0) return dist;
  if (a.device().is_cpu()) detail::gram_to_distances_cpu(a, b, dist);
  else detail::gram_to_distances_cuda(a, b, dist);
  return dist;
}

}  // namespace emd
}  // namespace fgvc
