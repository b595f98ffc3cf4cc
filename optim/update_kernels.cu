// CUDA side of optim/update_kernels.h: one thread per element (grid-stride), the element
// functions of update_rules.h.
#include "optim/update_kernels.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"

namespace fgvc {
namespace optim {
namespace detail {

namespace {

__global__ void rmsprop_kernel(float* w, const float* g, float* ms, float* mom, int64_t n, RMSPropRule r) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    rmsprop_element(w[i], g[i], ms[i], mom[i], r);
}

__global__ void sgd_kernel(float* w, const float* g, float* v, int64_t n, SGDRule r) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    sgd_element(w[i], g[i], v[i], r);
}

__global__ void ema_kernel(float* shadow, const float* w, int64_t n, double decay) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    ema_element(shadow[i], w[i], decay);
}

}  // namespace

void rmsprop_update_cuda(float* w, const float* g, float* ms, float* mom, int64_t n, const RMSPropRule& r, int device) {
  if (n == 0) return;
  cuda::DeviceGuard guard(device);
  rmsprop_kernel<<<cuda::blocks_for(n), 256, 0, cuda::stream(device)>>>(w, g, ms, mom, n, r);
  FGVC_CHECK_LAUNCH();
}

void sgd_update_cuda(float* w, const float* g, float* v, int64_t n, const SGDRule& r, int device) {
  if (n == 0) return;
  cuda::DeviceGuard guard(device);
  sgd_kernel<<<cuda::blocks_for(n), 256, 0, cuda::stream(device)>>>(w, g, v, n, r);
  FGVC_CHECK_LAUNCH();
}

void ema_update_cuda(float* shadow, const float* w, int64_t n, double decay, int device) {
  if (n == 0) return;
  cuda::DeviceGuard guard(device);
  ema_kernel<<<cuda::blocks_for(n), 256, 0, cuda::stream(device)>>>(shadow, w, n, decay);
  FGVC_CHECK_LAUNCH();
}

}  // namespace detail
}  // namespace optim
}  // namespace fgvc
