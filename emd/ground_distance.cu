// CUDA side of emd/ground_distance.h: one thread per (i, j) combines the cuBLAS Gram
// matrix with the norms, and recomputes the exact difference where the GEMM form cancels.
#include "emd/ground_distance.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"

namespace fgvc {
namespace emd {
namespace detail {

namespace {
__global__ void combine_kernel(const double* a, const double* b, const double* gram, const double* na,
                               const double* nb, int64_t m, int64_t n, int64_t d, double* out) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < m * n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = k / n, j = k % n;
    const double scale = na[i] + nb[j];
    double d2 = scale - 2.0 * gram[k];
    if (d2 < kCancellation * scale) {
      d2 = 0.0;
      for (int64_t c = 0; c < d; ++c) {
        const double diff = a[i * d + c] - b[j * d + c];
        d2 += diff * diff;
      }
    }
    out[k] = sqrt(d2 > 0.0 ? d2 : 0.0);
  }
}
}  // namespace

void combine_distances_cuda(const Tensor& a, const Tensor& b, const Tensor& gram, const Tensor& na, const Tensor& nb,
                            const Tensor& out) {
  const int dev = a.device().index;
  cuda::DeviceGuard guard(dev);
  const int64_t m = a.size(0), n = b.size(0);
  combine_kernel<<<cuda::blocks_for(m * n), 256, 0, cuda::stream(dev)>>>(
      a.data<double>(), b.data<double>(), gram.data<double>(), na.data<double>(), nb.data<double>(), m, n, a.size(1),
      out.data<double>());
  FGVC_CHECK_LAUNCH();
}

}  // namespace detail
}  // namespace emd
}  // namespace fgvc
