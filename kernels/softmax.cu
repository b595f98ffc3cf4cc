// CUDA side of kernels/softmax.h: one block per row; the max, the sum of exponentials and
// the backward dot product are block reductions in double.
#include <cmath>

#include "kernels/block_reduce.cuh"
#include "kernels/softmax.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/dispatch.h"

namespace fgvc {
namespace kernels {
namespace detail {

namespace {

template <class T>
__global__ void softmax_kernel(const T* x, int64_t cols, bool log, T* out) {
  const T* in = x + blockIdx.x * cols;
  T* o = out + blockIdx.x * cols;
  double mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) mx = fmax(mx, static_cast<double>(in[c]));
  mx = block_max(mx);
  double total = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) total += exp(static_cast<double>(in[c]) - mx);
  total = block_sum(total);
  const double lse = mx + ::log(total);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    o[c] = log ? static_cast<T>(static_cast<double>(in[c]) - lse)
               : static_cast<T>(exp(static_cast<double>(in[c]) - mx) / total);
}

template <class T>
__global__ void softmax_backward_kernel(const T* grad, const T* y, int64_t cols, bool log, T* out) {
  const T* g = grad + blockIdx.x * cols;
  const T* yy = y + blockIdx.x * cols;
  T* o = out + blockIdx.x * cols;
  double dot = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    dot += log ? static_cast<double>(g[c]) : static_cast<double>(g[c]) * yy[c];
  dot = block_sum(dot);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    o[c] = log ? static_cast<T>(g[c] - exp(static_cast<double>(yy[c])) * dot) : static_cast<T>(yy[c] * (g[c] - dot));
}

}  // namespace

void softmax_cuda(const Tensor& x, bool log, const Tensor& out) {
  const int dev = x.device().index;
  cuda::DeviceGuard guard(dev);
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  FGVC_CHECK(rows <= 2147483647, "softmax", "too many rows: ", rows);
  FGVC_DISPATCH_FLOAT(x.dtype(), "softmax", T, {
    softmax_kernel<T><<<static_cast<unsigned>(rows), kBlockReduceThreads, 0, cuda::stream(dev)>>>(
        static_cast<const T*>(x.data_ptr()), cols, log, static_cast<T*>(out.data_ptr()));
    FGVC_CHECK_LAUNCH();
  });
}

void softmax_backward_cuda(const Tensor& grad, const Tensor& y, bool log, const Tensor& out) {
  const int dev = y.device().index;
  cuda::DeviceGuard guard(dev);
  const int64_t cols = y.size(-1), rows = y.numel() / cols;
  FGVC_CHECK(rows <= 2147483647, "softmax_backward", "too many rows: ", rows);
  FGVC_DISPATCH_FLOAT(y.dtype(), "softmax_backward", T, {
    softmax_backward_kernel<T><<<static_cast<unsigned>(rows), kBlockReduceThreads, 0, cuda::stream(dev)>>>(
        static_cast<const T*>(grad.data_ptr()), static_cast<const T*>(y.data_ptr()), cols, log,
        static_cast<T*>(out.data_ptr()));
    FGVC_CHECK_LAUNCH();
  });
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
