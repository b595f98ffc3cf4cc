// Reference-counted bytes on one device. A Storage is owned through std::shared_ptr by
// every tensor that views it; the last owner returns the bytes to the device's allocator.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "tensor/block_pool.h"
#include "tensor/device.h"

namespace fgvc {

class Storage {
 public:
  // `pinned` asks for page-locked host memory (async host<->device copies); it is honoured
  // when the CUDA runtime is usable and silently becomes pageable memory otherwise.
  Storage(size_t bytes, Device device, bool pinned = false);
  // Host bytes owned elsewhere (a mapped file): `release` runs when the last tensor goes.
  Storage(void* data, size_t bytes, std::function<void()> release);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  bool pinned() const { return pinned_; }
  // Page-locked host memory that an asynchronous copy on `device_index`'s stream reads or
  // writes: the copy is marked by an event, and the memory goes back to the pool (where the
  // next batch may take it) only once that event has passed.
  void record_async_copy(int device_index);

  // How many in-place writes these bytes have had (Tensor::copy_, fill_, an optimiser's
  // update, ...). Autograd keeps the version of every tensor it saves for a backward pass
  // and refuses to compute a gradient from one whose bytes changed since
  // (autograd/saved_tensor.h). Views share their storage, so they share this count.
  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  bool pinned_ = false;
  bool pooled_ = false;  // a large host block from the reuse pool
  std::function<void()> release_;  // set for bytes owned elsewhere
  void* copy_event_ = nullptr;     // cudaEvent_t of the last asynchronous copy (pinned only)
  int copy_event_device_ = -1;     // the device whose stream it was recorded on
  std::atomic<uint64_t> version_{0};
};

// Test aid: when on, every new allocation (CPU and CUDA) is filled with 0xFF bytes, which
// reads as NaN in float32/float64, so a kernel that leaves an output element unwritten
// fails its comparison instead of passing on leftover values.
void set_allocation_poison(bool on);
bool allocation_poison();

// Test aid: host allocations of more than `bytes` fail as if the memory had run out (the
// Storage error "out of host memory"), so that tests reach the paths of a failed allocation
// deep inside a kernel. 0 (the default): no limit.
void set_host_allocation_limit(size_t bytes);

// The host's pool of large (>= 1 MiB) blocks: bytes in use, and their peak since the last
// reset, as cuda_memory_stats gives them for a GPU (the activations a backward pass keeps).
PoolStats host_pool_stats();
void host_pool_reset_peak();

}  // namespace fgvc
