// CUDA side of kernels/cross_entropy.h: one block per sample for the forward (block
// reductions in double), one thread per logit for the backward. Out-of-range labels are
// counted on the device and reported by the host after the kernel.
#include <cmath>

#include "kernels/block_reduce.cuh"
#include "kernels/cross_entropy.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/dispatch.h"

namespace fgvc {
namespace kernels {
namespace detail {

namespace {

template <class T>
__global__ void ce_forward_kernel(const T* x, const int64_t* y, int64_t c, double e, T* loss, double* lse_out,
                                  unsigned long long* bad) {
  const int64_t i = blockIdx.x;
  const T* row = x + i * c;
  const int64_t label = y[i];
  if (label < 0 || label >= c) {
    if (threadIdx.x == 0) {
      atomicAdd(&bad[0], 1ull);
      atomicMin(&bad[1], static_cast<unsigned long long>(i));
      loss[i] = static_cast<T>(NAN);
      lse_out[i] = NAN;
    }
    return;
  }
  double mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) mx = fmax(mx, static_cast<double>(row[j]));
  mx = block_max(mx);
  double total = 0.0, sum = 0.0;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    total += exp(static_cast<double>(row[j]) - mx);
    sum += row[j];
  }
  total = block_sum(total);
  sum = block_sum(sum);
  if (threadIdx.x == 0) {
    const double lse = mx + log(total);
    lse_out[i] = lse;
    const double smoothing_term = e == 0 ? 0.0 : e / static_cast<double>(c) * sum;  // as on the CPU: no 0 x (-inf)
    loss[i] = static_cast<T>(lse - (1.0 - e) * static_cast<double>(row[label]) - smoothing_term);
  }
}

template <class T>
__global__ void ce_backward_kernel(const T* g, const T* x, const int64_t* y, const double* lse, int64_t n, int64_t c,
                                   double e, T* out) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n * c; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = k / c, j = k % c;
    const double p = exp(static_cast<double>(x[k]) - lse[i]);
    const double target = (j == y[i] ? 1.0 - e : 0.0) + e / static_cast<double>(c);
    out[k] = static_cast<T>(static_cast<double>(g[i]) * (p - target));
  }
}

}  // namespace

int64_t cross_entropy_cuda(const Tensor& logits, const Tensor& labels, double smoothing, const CrossEntropyOutput& out,
                           int64_t* bad_row) {
  const int dev = logits.device().index;
  cuda::DeviceGuard guard(dev);
  cudaStream_t s = cuda::stream(dev);
  const int64_t n = logits.size(0), c = logits.size(1);
  FGVC_CHECK(n <= 2147483647, "cross_entropy", "too many rows: ", n);
  // bad[0]: count of bad labels, bad[1]: first bad row.
  Tensor bad = Tensor::from_vector(std::vector<int64_t>{0, n}, {2}, logits.device());
  auto* pbad = static_cast<unsigned long long*>(bad.data_ptr());
  FGVC_DISPATCH_FLOAT(logits.dtype(), "cross_entropy", T, {
    ce_forward_kernel<T><<<static_cast<unsigned>(n), kBlockReduceThreads, 0, s>>>(
        static_cast<const T*>(logits.data_ptr()), static_cast<const int64_t*>(labels.data_ptr()), c, smoothing,
        static_cast<T*>(out.loss.data_ptr()), static_cast<double*>(out.lse.data_ptr()), pbad);
    FGVC_CHECK_LAUNCH();
  });
  const std::vector<int64_t> host = bad.to_vector<int64_t>();
  *bad_row = host[1];
  return host[0];
}

void cross_entropy_backward_cuda(const Tensor& grad_loss, const Tensor& logits, const Tensor& labels, const Tensor& lse,
                                 double smoothing, const Tensor& out) {
  const int dev = logits.device().index;
  cuda::DeviceGuard guard(dev);
  const int64_t n = logits.size(0), c = logits.size(1);
  FGVC_DISPATCH_FLOAT(logits.dtype(), "cross_entropy_backward", T, {
    ce_backward_kernel<T><<<cuda::blocks_for(n * c), 256, 0, cuda::stream(dev)>>>(
        static_cast<const T*>(grad_loss.data_ptr()), static_cast<const T*>(logits.data_ptr()),
        static_cast<const int64_t*>(labels.data_ptr()), static_cast<const double*>(lse.data_ptr()), n, c, smoothing,
        static_cast<T*>(out.data_ptr()));
    FGVC_CHECK_LAUNCH();
  });
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
