// A pool of memory blocks that keeps freed blocks for reuse, shared by the CUDA allocator
// (tensor/cuda_allocator.cpp) and the CPU allocator for large tensors (tensor/storage.cpp):
// without it every large tensor costs a cudaMalloc/cudaFree on the GPU, and a fresh mmap
// with a page fault per 4 KiB on the CPU.
//
// Sizes are rounded (512 B below 1 MiB, 2 MiB above); a cached block is reused for any
// request between half its size and its size. When the backend cannot provide a block,
// the cache is handed back and the request retried once. At most `max_cached` bytes stay
// cached; beyond that freed blocks go straight back to the backend.
#pragma once
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

namespace fgvc {

struct PoolStats {
  size_t allocated = 0;       // bytes handed out and not yet freed (rounded)
  size_t peak_allocated = 0;  // maximum of `allocated` since start or reset_peak
  size_t reserved = 0;        // bytes obtained from the backend (allocated + cached)
  size_t num_backend_allocations = 0;
  size_t num_allocations = 0;
};

class BlockPool {
 public:
  // obtain(bytes) returns nullptr on failure; give_back(ptr, bytes) frees a block; flush()
  // runs before cached blocks are given back (e.g. a stream synchronisation).
  BlockPool(std::function<void*(size_t)> obtain, std::function<void(void*, size_t)> give_back,
            std::function<void()> flush = nullptr, size_t max_cached = static_cast<size_t>(-1));
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  static size_t round_size(size_t bytes);
  void* allocate(size_t bytes);  // nullptr when the backend has no memory even after a flush
  void release(void* ptr);
  void empty_cache();
  PoolStats stats() const;
  void reset_peak();

 private:
  void empty_cache_locked();

  std::function<void*(size_t)> obtain_;
  std::function<void(void*, size_t)> give_back_;
  std::function<void()> flush_;
  size_t max_cached_;
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_blocks_;  // size -> block
  std::unordered_map<void*, size_t> live_;     // block -> size
  PoolStats stats_;
};

}  // namespace fgvc
