#include "kernels/topk.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "fgvc/config.h"
#include "kernels/topk_order.h"
#include "tensor/dispatch.h"
#include "tensor/region_errors.h"

namespace fgvc {
namespace kernels {
namespace detail {

namespace {
template <class T>
void topk_cpu_typed(const Tensor& x, int64_t k, const TopK& out) {
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  const T* px = static_cast<const T*>(x.data_ptr());
  T* pv = static_cast<T*>(out.values.data_ptr());
  int64_t* pi = static_cast<int64_t*>(out.indices.data_ptr());
  RegionErrors errors;  // a row's index list may fail to allocate
#pragma omp parallel for if (rows * cols > (1 << 14)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    errors.run([&] {
      const T* row = px + r * cols;
      std::vector<int64_t> idx(static_cast<size_t>(cols));
      std::iota(idx.begin(), idx.end(), 0);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                        [&](int64_t a, int64_t b) { return topk_before(row[a], a, row[b], b); });
      for (int64_t j = 0; j < k; ++j) {
        pv[r * k + j] = row[idx[j]];
        pi[r * k + j] = idx[j];
      }
    });
  }
  errors.rethrow();
}
}  // namespace

void topk_cpu(const Tensor& x, int64_t k, const TopK& out) {
  FGVC_DISPATCH_FLOAT(x.dtype(), "topk", T, topk_cpu_typed<T>(x, k, out));
}

#if !FGVC_WITH_CUDA
void topk_cuda(const Tensor&, int64_t, const TopK&) { throw Error("topk: built without CUDA"); }
#endif

}  // namespace detail

TopK topk(const Tensor& x, int64_t k) {
  FGVC_CHECK(x.defined(), "topk", "undefined tensor");
  FGVC_CHECK(x.dtype() == DType::Float32 || x.dtype() == DType::Float64, "topk", "needs float32 or float64, got ",
             describe(x));
  FGVC_CHECK(x.dim() >= 1, "topk", "needs at least one axis, got ", describe(x));
  FGVC_CHECK(k >= 0 && k <= x.size(-1), "topk", "k = ", k, " out of range for ", describe(x));
  Shape shape = x.shape();
  shape.back() = k;
  TopK out{Tensor::empty(shape, x.dtype(), x.device()), Tensor::empty(shape, DType::Int64, x.device())};
  if (out.values.numel() == 0) return out;
  const Tensor xc = x.contiguous();
  if (x.device().is_cpu()) detail::topk_cpu(xc, k, out);
  else detail::topk_cuda(xc, k, out);
  return out;
}

}  // namespace kernels
}  // namespace fgvc
