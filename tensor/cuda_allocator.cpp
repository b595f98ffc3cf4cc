// The CUDA caching allocator: one BlockPool (tensor/block_pool.h) per device over
// cudaMalloc/cudaFree, so a training step does no cudaMalloc/cudaFree after the first. All
// work is ordered on one stream per device, so a freed block can be handed out again at
// once; cached blocks go back to the driver only after that stream has drained. A request
// the driver cannot meet, even after the cache is returned, throws an error that names the
// request and what is in use.
//
// FGVC_CUDA_NO_CACHE=1 in the environment turns the caching off (every block straight back to
// cudaFree), so compute-sanitizer sees out-of-bounds accesses that would land in a cached block.
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include "tensor/block_pool.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_runtime.h"

namespace fgvc {
namespace {

std::string mib(size_t bytes) { return detail::concat(static_cast<double>(bytes) / (1 << 20), " MiB"); }

BlockPool& pool(int device) {
  static std::mutex mu;
  static auto* pools = new std::map<int, std::unique_ptr<BlockPool>>();  // never destroyed: outlives statics
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<BlockPool>& p = (*pools)[device];
  if (!p) {
    const char* no_cache = std::getenv("FGVC_CUDA_NO_CACHE");
    const size_t max_cached = no_cache && no_cache[0] == '1' ? 0 : static_cast<size_t>(-1);
    p = std::make_unique<BlockPool>(
        [device](size_t bytes) -> void* {
          cuda::DeviceGuard guard(device);
          void* ptr = nullptr;
          const cudaError_t err = cudaMalloc(&ptr, bytes);
          // Only a lack of memory is "out of memory" (the pool then frees its cache and tries
          // again). Any other error, e.g. an earlier kernel's illegal address, which every call
          // after it returns, is that error: reported as one, it is not caught as an OutOfMemory
          // (convolution falls back to smaller workspaces on those).
          if (err == cudaErrorMemoryAllocation) {
            cudaGetLastError();
            return nullptr;
          }
          FGVC_CUDA_CHECK(err);
          return ptr;
        },
        [device](void* ptr, size_t) {
          cuda::DeviceGuard guard(device);
          FGVC_CUDA_CHECK_NOTHROW(cudaFree(ptr));
        },
        [device] {
          cuda::DeviceGuard guard(device);
          FGVC_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(cuda::stream(device)));
        },
        max_cached);
  }
  return *p;
}

}  // namespace

namespace cuda {

void* allocate(size_t bytes, int device) {
  BlockPool& p = pool(device);
  void* ptr = p.allocate(bytes);
  if (!ptr) {
    const PoolStats s = p.stats();
    size_t free_b = 0, total_b = 0;
    {
      DeviceGuard guard(device);
      cudaMemGetInfo(&free_b, &total_b);
      cudaGetLastError();
    }
    throw OutOfMemory(detail::concat("CUDA out of memory: tried to allocate ", mib(BlockPool::round_size(bytes)),
                               " on cuda:", device, "; fgvc has ", mib(s.allocated), " in use (peak ",
                               mib(s.peak_allocated), "), ", mib(s.reserved), " reserved; the device has ",
                               mib(free_b), " free of ", mib(total_b)));
  }
  return ptr;
}

void release(void* ptr, int device) { pool(device).release(ptr); }

}  // namespace cuda

CudaMemoryStats cuda_memory_stats(int device) {
  const PoolStats s = pool(device).stats();
  return {s.allocated, s.peak_allocated, s.reserved, s.num_backend_allocations, s.num_allocations};
}
void cuda_reset_peak(int device) { pool(device).reset_peak(); }
void cuda_empty_cache() {
  for (int d = 0; d < cuda_device_count(); ++d) pool(d).empty_cache();
}

}  // namespace fgvc
