// Caching CUDA allocator: freed blocks go back to a per-device pool and are reused for later
// requests of a similar size, so a training step does no cudaMalloc/cudaFree after the
// first. Sizes are rounded (512 B below 1 MiB, 2 MiB above) and a cached block is reused
// for any request between half its size and its size. When cudaMalloc fails, the cache is
// returned to the driver and the call retried once; a second failure throws an error that
// names the request and what is in use. All work is ordered on one stream per device, so a
// freed block can be handed out again at once.
#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_runtime.h"
#include "tensor/storage.h"

namespace fgvc {
namespace {

constexpr size_t kSmall = 1 << 20;
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = 2 << 20;

size_t round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  const size_t unit = bytes < kSmall ? kSmallRound : kLargeRound;
  return (bytes + unit - 1) / unit * unit;
}

std::string mib(size_t bytes) { return detail::concat(static_cast<double>(bytes) / (1 << 20), " MiB"); }

struct DevicePool {
  std::multimap<size_t, void*> free_blocks;     // size -> block
  std::unordered_map<void*, size_t> live;       // block -> size
  CudaMemoryStats stats;
};

class CachingAllocator {
 public:
  static CachingAllocator& instance() {
    static CachingAllocator* a = new CachingAllocator();  // never destroyed: outlives statics
    return *a;
  }

  void* allocate(size_t bytes, int device) {
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    DevicePool& pool = pools_[device];
    auto it = pool.free_blocks.lower_bound(size);
    void* ptr = nullptr;
    size_t got = size;
    if (it != pool.free_blocks.end() && it->first <= 2 * size) {
      ptr = it->second;
      got = it->first;
      pool.free_blocks.erase(it);
    } else {
      cuda::DeviceGuard guard(device);
      cudaError_t err = cudaMalloc(&ptr, size);
      if (err != cudaSuccess) {
        cudaGetLastError();
        release_cached(pool, device);
        err = cudaMalloc(&ptr, size);
      }
      if (err != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        cudaGetLastError();
        throw Error(detail::concat("CUDA out of memory: tried to allocate ", mib(size), " on cuda:",
                                   device, "; fgvc has ", mib(pool.stats.allocated),
                                   " in use (peak ", mib(pool.stats.peak_allocated), "), ",
                                   mib(pool.stats.reserved), " reserved; the device has ",
                                   mib(free_b), " free of ", mib(total_b), " (",
                                   cudaGetErrorString(err), ")"));
      }
      pool.stats.reserved += size;
      pool.stats.num_cuda_mallocs++;
    }
    pool.live[ptr] = got;
    pool.stats.allocated += got;
    pool.stats.num_allocations++;
    if (pool.stats.allocated > pool.stats.peak_allocated) pool.stats.peak_allocated = pool.stats.allocated;
    return ptr;
  }

  void release(void* ptr, int device) {
    std::lock_guard<std::mutex> lock(mu_);
    DevicePool& pool = pools_[device];
    auto it = pool.live.find(ptr);
    if (it == pool.live.end()) return;
    pool.stats.allocated -= it->second;
    pool.free_blocks.emplace(it->second, ptr);
    pool.live.erase(it);
  }

  CudaMemoryStats stats(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    return pools_[device].stats;
  }

  void reset_peak(int device) {
    std::lock_guard<std::mutex> lock(mu_);
    pools_[device].stats.peak_allocated = pools_[device].stats.allocated;
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [device, pool] : pools_) release_cached(pool, device);
  }

 private:
  void release_cached(DevicePool& pool, int device) {
    cuda::DeviceGuard guard(device);
    FGVC_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(cuda::stream(device)));
    for (auto& [size, ptr] : pool.free_blocks) {
      FGVC_CUDA_CHECK_NOTHROW(cudaFree(ptr));
      pool.stats.reserved -= size;
    }
    pool.free_blocks.clear();
  }

  std::mutex mu_;
  std::map<int, DevicePool> pools_;
};

}  // namespace

namespace cuda {
void* allocate(size_t bytes, int device) { return CachingAllocator::instance().allocate(bytes, device); }
void release(void* ptr, int device) { CachingAllocator::instance().release(ptr, device); }
}  // namespace cuda

CudaMemoryStats cuda_memory_stats(int device) { return CachingAllocator::instance().stats(device); }
void cuda_reset_peak(int device) { CachingAllocator::instance().reset_peak(device); }
void cuda_empty_cache() { CachingAllocator::instance().empty_cache(); }

}  // namespace fgvc
