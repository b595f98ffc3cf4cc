// CUDA side of tensor/random.h: one thread per element, same formula as the CPU.
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/dispatch.h"
#include "tensor/random_value.h"

namespace fgvc {
namespace detail {

namespace {
template <class T>
__global__ void random_fill_kernel(T* p, int64_t n, RandomFill f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = random_value<T>(f.dist, f.seed, f.first_block, i, f.a, f.b);
}
}  // namespace

void random_fill_cuda(const Tensor& t, const RandomFill& f) {
  const int dev = t.device().index;
  cuda::DeviceGuard guard(dev);
  const int64_t n = t.numel();
  FGVC_DISPATCH_FLOAT(t.dtype(), "random", T, {
    random_fill_kernel<T><<<cuda::blocks_for(n), 256, 0, cuda::stream(dev)>>>(static_cast<T*>(t.data_ptr()), n, f);
    FGVC_CHECK_LAUNCH();
  });
}

}  // namespace detail
}  // namespace fgvc
