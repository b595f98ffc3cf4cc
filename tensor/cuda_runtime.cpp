// Device queries, the per-device stream and the device guard; the no-CUDA build answers
// every query with "no device".
#include "tensor/cuda_runtime.h"

#include "fgvc/config.h"
#include "tensor/error.h"

#if FGVC_WITH_CUDA
#include <atomic>
#include <mutex>
#include <vector>

#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#endif

namespace fgvc {

bool built_with_cuda() { return FGVC_WITH_CUDA != 0; }

#if FGVC_WITH_CUDA

namespace {
struct DeviceQuery {
  int count = 0;
  std::string reason;
};
const DeviceQuery& query() {
  static const DeviceQuery q = [] {
    DeviceQuery r;
    const cudaError_t err = cudaGetDeviceCount(&r.count);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky error so later calls are not confused by it
      r.count = 0;
      r.reason = cudaGetErrorString(err);
    } else if (r.count == 0) {
      r.reason = "no CUDA device visible";
    }
    return r;
  }();
  return q;
}

// Each device's stream, made on first use (cuda::stream).
std::mutex streams_mu;
std::vector<cudaStream_t> streams;
std::atomic<int> home_device_index{-1};
}  // namespace

int cuda_device_count() { return query().count; }
std::string cuda_unavailable_reason() { return query().reason; }

// The devices fgvc has used only: touching another would create a context on it (under
// mpirun, every rank on every GPU).
void cuda_synchronize() {
  std::vector<int> used;
  {
    std::lock_guard<std::mutex> lock(streams_mu);
    for (size_t d = 0; d < streams.size(); ++d)
      if (streams[d]) used.push_back(static_cast<int>(d));
  }
  for (int d : used) {
    cuda::DeviceGuard guard(d);
    FGVC_CUDA_CHECK(cudaStreamSynchronize(cuda::stream(d)));
  }
}

void cuda_set_home_device(int device) {
  FGVC_CHECK(device >= 0 && device < cuda_device_count(), "cuda_set_home_device", "no CUDA device ", device, " (",
             cuda_device_count(), " visible", cuda_available() ? "" : ": " + cuda_unavailable_reason(), ")");
  home_device_index = device;
  FGVC_CUDA_CHECK(cudaSetDevice(device));
}

namespace cuda {

int home_device() { return home_device_index; }

cudaStream_t stream(int device) {
  std::lock_guard<std::mutex> lock(streams_mu);
  if (streams.empty()) streams.assign(static_cast<size_t>(cuda_device_count()), nullptr);
  FGVC_CHECK(device >= 0 && device < static_cast<int>(streams.size()), "cuda::stream",
             "no CUDA device ", device, " (", cuda_device_count(), " visible)");
  if (!streams[device]) {
    DeviceGuard guard(device);
    FGVC_CUDA_CHECK(cudaStreamCreateWithFlags(&streams[device], cudaStreamNonBlocking));
  }
  return streams[device];
}

DeviceGuard::DeviceGuard(int device) {
  FGVC_CUDA_CHECK(cudaGetDevice(&previous_));
  if (previous_ != device) FGVC_CUDA_CHECK(cudaSetDevice(device));
}
DeviceGuard::~DeviceGuard() {
  int now = -1;
  FGVC_CUDA_CHECK_NOTHROW(cudaGetDevice(&now));
  if (now != previous_) FGVC_CUDA_CHECK_NOTHROW(cudaSetDevice(previous_));
}

}  // namespace cuda

#else  // !FGVC_WITH_CUDA

int cuda_device_count() { return 0; }
std::string cuda_unavailable_reason() { return "fgvc was built without CUDA (FGVC_CUDA=OFF)"; }
void cuda_synchronize() {}
void cuda_set_home_device(int) { throw Error("cuda_set_home_device: fgvc was built without CUDA"); }
CudaMemoryStats cuda_memory_stats(int) { return {}; }
void cuda_reset_peak(int) {}
void cuda_empty_cache() {}

#endif

}  // namespace fgvc
