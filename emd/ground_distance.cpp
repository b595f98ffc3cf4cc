#include "emd/ground_distance.h"

#include <cmath>

#include "fgvc/config.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"

namespace fgvc {
namespace emd {

namespace detail {

void combine_distances_cpu(const Tensor& a, const Tensor& b, const Tensor& gram, const Tensor& na, const Tensor& nb,
                           const Tensor& out) {
  const int64_t m = a.size(0), n = b.size(0), d = a.size(1);
  const double *pa = a.data<double>(), *pb = b.data<double>(), *g = gram.data<double>();
  const double *pna = na.data<double>(), *pnb = nb.data<double>();
  double* o = out.data<double>();
#pragma omp parallel for if (m * n > 4096) schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const double scale = pna[i] + pnb[j];
      double d2 = scale - 2.0 * g[i * n + j];
      if (d2 < kCancellation * scale) {  // cancellation: recompute exactly
        d2 = 0.0;
        for (int64_t k = 0; k < d; ++k) {
          const double diff = pa[i * d + k] - pb[j * d + k];
          d2 += diff * diff;
        }
      }
      o[i * n + j] = std::sqrt(d2 > 0.0 ? d2 : 0.0);
    }
  }
}

#if !FGVC_WITH_CUDA
void combine_distances_cuda(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
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
  const Tensor gram = kernels::matmul(a, b, false, true);
  const Tensor na = kernels::sum(kernels::unary(kernels::UnaryOp::Square, a), {1});
  const Tensor nb = kernels::sum(kernels::unary(kernels::UnaryOp::Square, b), {1});
  Tensor out = Tensor::empty({a.size(0), b.size(0)}, DType::Float64, a.device());
  if (out.numel() == 0) return out;
  if (a.device().is_cpu()) detail::combine_distances_cpu(a, b, gram, na, nb, out);
  else detail::combine_distances_cuda(a, b, gram, na, nb, out);
  return out;
}

}  // namespace emd
}  // namespace fgvc
