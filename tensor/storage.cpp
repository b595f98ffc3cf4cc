#include "tensor/storage.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include <sys/mman.h>

#include "fgvc/config.h"
#include "tensor/block_pool.h"
#include "tensor/cuda_runtime.h"
#include "tensor/error.h"

#if FGVC_WITH_CUDA
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#endif

namespace fgvc {

namespace {
std::atomic<bool> g_poison{false};
std::atomic<size_t> g_host_limit{0};  // set_host_allocation_limit's; 0: none
constexpr size_t kAlign = 64;  // a cache line, and enough for AVX-512 loads
constexpr size_t kPooledFrom = 1 << 20;  // host tensors this large come from the pool

void* host_alloc(size_t bytes) { return std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign + kAlign); }

// The pool's blocks (1 MiB and more, sizes in whole 2 MiB) are mappings of their own on a
// 2 MiB boundary, unmapped whole when given back, so that a tensor's whole 2 MiB stretches can
// be transparent huge pages (use_huge_pages). The extra kAlign is host_alloc's slack past the end.
constexpr size_t kHugePage = size_t(2) << 20;  // x86-64's
size_t mapped_length(size_t bytes) { return (bytes + kAlign + kHugePage - 1) / kHugePage * kHugePage; }

void* map_block(size_t bytes) {
  const size_t length = mapped_length(bytes);
  void* raw = ::mmap(nullptr, length + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const auto at = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t start = (at + kHugePage - 1) / kHugePage * kHugePage;
  if (start > at) ::munmap(raw, start - at);  // the mapping's ends outside the aligned block
  if (start + length < at + length + kHugePage)
    ::munmap(reinterpret_cast<void*>(start + length), at + length + kHugePage - (start + length));
  return reinterpret_cast<void*>(start);
}

// Marks the whole 2 MiB stretches of a tensor's pooled block for transparent huge pages (Linux
// gives them only where asked, in its default "madvise" mode): a first touch then takes one
// page fault per 2 MiB instead of 512, which under virtualisation is costly (fgvc-similarity
// of 6089 x 200 classes: 8,700 faults and 0.21 s before, 2,000 and 0.17-0.20 s after). The
// stretches the tensor fills, and its last, partial one where it fills a quarter of it: backing
// a huge page costs about as much as 100 small-page faults here (2 MiB in 0.37 ms, a 4 KiB
// fault 4 us), so a shorter tail stays in small pages and a longer one is cheaper whole
// (fgvc-similarity of 1000 x 200: 1,650 fewer faults in the distances' first call).
void use_huge_pages(void* block, size_t bytes) {
  size_t huge = bytes / kHugePage * kHugePage;
  if (bytes - huge >= kHugePage / 4) huge += kHugePage;  // inside the block: its mapping is whole 2 MiB
  if (huge > 0) ::madvise(block, huge, MADV_HUGEPAGE);  // advice only
}

void unmap_block(void* p, size_t bytes) { ::munmap(p, mapped_length(bytes)); }

// Large host blocks are kept for reuse (tensor/block_pool.h): a fresh one costs page faults,
// which for a 64 MB tensor is several times the cost of the op that fills it.
BlockPool& host_pool() {
  static auto* pool = new BlockPool(map_block, unmap_block, nullptr, size_t(1) << 30 /* at most 1 GiB cached */);
  return *pool;
}
#if FGVC_WITH_CUDA
// Page-locked host blocks are slower still to get (cudaHostAlloc), and the loader asks for
// one per batch: they are pooled too.
BlockPool& pinned_pool() {
  static auto* pool = new BlockPool(
      [](size_t bytes) -> void* {
        void* p = nullptr;
        // On the home device's context (a loader worker thread has no current device, and
        // would otherwise create one on GPU 0); portable: pinned for every context.
        const int home = cuda::home_device();
        if ((home >= 0 && cudaSetDevice(home) != cudaSuccess) ||
            cudaHostAlloc(&p, bytes, cudaHostAllocPortable) != cudaSuccess) {
          cudaGetLastError();
          return nullptr;
        }
        return p;
      },
      [](void* p, size_t) { FGVC_CUDA_CHECK_NOTHROW(cudaFreeHost(p)); }, nullptr, size_t(1) << 30);
  return *pool;
}
#endif
}  // namespace

PoolStats host_pool_stats() { return host_pool().stats(); }
void host_pool_reset_peak() { host_pool().reset_peak(); }

void set_allocation_poison(bool on) { g_poison = on; }
bool allocation_poison() { return g_poison; }
void set_host_allocation_limit(size_t bytes) { g_host_limit = bytes; }

Storage::Storage(size_t bytes, Device device, bool pinned) : bytes_(bytes), device_(device) {
  if (device.is_cpu()) {
#if FGVC_WITH_CUDA
    if (pinned && cuda_available()) {
      data_ = pinned_pool().allocate(bytes);
      FGVC_CHECK(data_, "Storage", "cannot allocate ", bytes, " bytes of page-locked host memory");
      pinned_ = true;
    }
#else
    (void)pinned;
#endif
    if (!data_) {
      pooled_ = bytes >= kPooledFrom;
      const size_t limit = g_host_limit.load(std::memory_order_relaxed);
      if (limit == 0 || bytes <= limit) data_ = pooled_ ? host_pool().allocate(bytes) : host_alloc(bytes);
      if (!data_) throw Error(detail::concat("Storage: out of host memory allocating ", bytes, " bytes"));
      if (pooled_) use_huge_pages(data_, bytes);
    }
    if (g_poison) std::memset(data_, 0xFF, bytes);
    return;
  }
#if FGVC_WITH_CUDA
  FGVC_CHECK(cuda_available(), "Storage", "cannot allocate on ", device.str(), ": ",
             cuda_unavailable_reason());
  data_ = cuda::allocate(bytes, device.index);
  if (g_poison) {
    cuda::DeviceGuard guard(device.index);
    FGVC_CUDA_CHECK(cudaMemsetAsync(data_, 0xFF, bytes, cuda::stream(device.index)));
  }
#else
  throw Error(detail::concat("Storage: cannot allocate on ", device.str(), ": ", cuda_unavailable_reason()));
#endif
}

Storage::Storage(void* data, size_t bytes, std::function<void()> release)
    : data_(data), bytes_(bytes), device_(Device::cpu()), release_(std::move(release)) {}

void Storage::record_async_copy(int device_index) {
#if FGVC_WITH_CUDA
  if (!pinned_) return;
  cudaEvent_t event = static_cast<cudaEvent_t>(copy_event_);
  if (event && copy_event_device_ != device_index) {  // an event belongs to one device: wait, then a new one
    cuda::DeviceGuard old(copy_event_device_);
    FGVC_CUDA_CHECK(cudaEventSynchronize(event));
    FGVC_CUDA_CHECK(cudaEventDestroy(event));
    copy_event_ = event = nullptr;
  }
  cuda::DeviceGuard guard(device_index);
  if (!event) {
    FGVC_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    copy_event_ = event;
    copy_event_device_ = device_index;
  }
  FGVC_CUDA_CHECK(cudaEventRecord(event, cuda::stream(device_index)));
#else
  (void)device_index;
#endif
}

Storage::~Storage() {
#if FGVC_WITH_CUDA
  if (copy_event_) {  // an asynchronous copy may still be reading or writing these bytes
    FGVC_CUDA_CHECK_NOTHROW(cudaEventSynchronize(static_cast<cudaEvent_t>(copy_event_)));
    FGVC_CUDA_CHECK_NOTHROW(cudaEventDestroy(static_cast<cudaEvent_t>(copy_event_)));
  }
#endif
  if (release_) {
    release_();
    return;
  }
  if (!data_) return;
  if (device_.is_cpu()) {
#if FGVC_WITH_CUDA
    if (pinned_) {
      pinned_pool().release(data_);
      return;
    }
#endif
    if (pooled_) host_pool().release(data_);
    else std::free(data_);
    return;
  }
#if FGVC_WITH_CUDA
  cuda::release(data_, device_.index);
#endif
}

}  // namespace fgvc
