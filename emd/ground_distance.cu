// CUDA side of emd/ground_distance.h: squared row norms, then one thread per (i, j) turns
// the cuBLAS Gram matrix into distances, recomputing the exact difference where the GEMM
// form cancels.
#include "emd/ground_distance.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"

namespace fgvc {
namespace emd {
namespace detail {

namespace {
__global__ void squared_norms_kernel(const double* x, int64_t rows, int64_t d, double* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows; i += int64_t(gridDim.x) * blockDim.x) {
    double s = 0;
    for (int64_t k = 0; k < d; ++k) s += x[i * d + k] * x[i * d + k];
    out[i] = s;
  }
}

__global__ void combine_kernel(const double* a, const double* b, const double* na, const double* nb, int64_t m,
                               int64_t n, int64_t d, double* dist) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < m * n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = k / n, j = k % n;
    const double scale = na[i] + nb[j];
    double d2 = scale - 2.0 * dist[k];
    if (!(d2 >= kCancellation * scale)) {  // cancellation, or inf - inf: the differences themselves
      d2 = 0.0;
      for (int64_t c = 0; c < d; ++c) {
        const double diff = a[i * d + c] - b[j * d + c];
        d2 += diff * diff;
      }
    }
    dist[k] = sqrt(d2 < 0.0 ? 0.0 : d2);  // rounding below 0 clamped; a NaN (of NaN features) kept
  }
}
}  // namespace

void gram_to_distances_cuda(const Tensor& a, const Tensor& b, const Tensor& dist) {
  const int dev = a.device().index;
  cuda::DeviceGuard guard(dev);
  cudaStream_t s = cuda::stream(dev);
  const int64_t m = a.size(0), n = b.size(0), d = a.size(1);
  Tensor norms = Tensor::empty({m + n}, DType::Float64, a.device());
  double* na = norms.data<double>();
  squared_norms_kernel<<<cuda::blocks_for(m), 256, 0, s>>>(a.data<double>(), m, d, na);
  FGVC_CHECK_LAUNCH();
  squared_norms_kernel<<<cuda::blocks_for(n), 256, 0, s>>>(b.data<double>(), n, d, na + m);
  FGVC_CHECK_LAUNCH();
  combine_kernel<<<cuda::blocks_for(m * n), 256, 0, s>>>(a.data<double>(), b.data<double>(), na, na + m, m, n, d,
                                                         dist.data<double>());
  FGVC_CHECK_LAUNCH();
}

}  // namespace detail
}  // namespace emd
}  // namespace fgvc
