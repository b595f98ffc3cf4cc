// Per-device CUDA state shared by kernels: the stream all work is ordered on, and a guard
// that makes a tensor's device current. Internal header (CUDA-enabled units only).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>

namespace fgvc {
namespace cuda {

// The stream every fgvc kernel, copy and library call on `device` is issued to. One stream
// per device keeps the caching allocator's reuse of freed blocks safe without events.
cudaStream_t stream(int device);

// cuda_set_home_device's device, or -1 if none was set.
int home_device();

class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

// The caching allocator (tensor/cuda_allocator.cpp).
void* allocate(size_t bytes, int device);
void release(void* ptr, int device);

// Launch geometry for an elementwise kernel over n items.
inline unsigned blocks_for(long long n, int threads = 256) {
  long long b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > 65535LL * 32) b = 65535LL * 32;  // grid-stride loops cover the rest
  return static_cast<unsigned>(b);
}

}  // namespace cuda
}  // namespace fgvc
