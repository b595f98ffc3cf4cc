#include "tensor/storage.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "fgvc/config.h"
#include "tensor/cuda_runtime.h"
#include "tensor/error.h"

#if FGVC_WITH_CUDA
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#endif

namespace fgvc {

namespace {
std::atomic<bool> g_poison{false};
constexpr size_t kAlign = 64;  // a cache line, and enough for AVX-512 loads
}  // namespace

void set_allocation_poison(bool on) { g_poison = on; }
bool allocation_poison() { return g_poison; }

Storage::Storage(size_t bytes, Device device, bool pinned) : bytes_(bytes), device_(device) {
  if (device.is_cpu()) {
#if FGVC_WITH_CUDA
    if (pinned && cuda_available()) {
      FGVC_CUDA_CHECK(cudaHostAlloc(&data_, bytes ? bytes : 1, cudaHostAllocDefault));
      pinned_ = true;
    }
#else
    (void)pinned;
#endif
    if (!data_) {
      data_ = std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign + kAlign);
      if (!data_) throw Error(detail::concat("Storage: out of host memory allocating ", bytes, " bytes"));
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

Storage::~Storage() {
  if (!data_) return;
  if (device_.is_cpu()) {
#if FGVC_WITH_CUDA
    if (pinned_) {
      FGVC_CUDA_CHECK_NOTHROW(cudaFreeHost(data_));
      return;
    }
#endif
    std::free(data_);
    return;
  }
#if FGVC_WITH_CUDA
  cuda::release(data_, device_.index);
#endif
}

}  // namespace fgvc
