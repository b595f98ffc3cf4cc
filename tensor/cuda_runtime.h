// The small part of the CUDA runtime the rest of the library and its users need, without
// including CUDA headers. In a build without CUDA every query answers "no device".
#pragma once
#include <cstddef>
#include <string>

namespace fgvc {

bool built_with_cuda();
// Number of visible devices; 0 when there is no driver or no device (any error from
// cudaGetDeviceCount counts as "none" and is cleared).
int cuda_device_count();
inline bool cuda_available() { return cuda_device_count() > 0; }
// Why there is no device ("built without CUDA", the driver's message, ...); "" if there is one.
std::string cuda_unavailable_reason();
// Waits for the work fgvc has queued on every device it has used.
void cuda_synchronize();
// Makes `device` the calling thread's current device and the process's home device, whose
// context pinned host buffers are then allocated in, from any thread (the data loader's
// workers). A process that drives one GPU of several (a rank under mpirun) calls it first,
// so that nothing creates a context on GPU 0 (a CUDA context costs hundreds of MB, and GPUs in
// exclusive-process mode refuse a second process).
void cuda_set_home_device(int device);

struct CudaMemoryStats {
  size_t allocated = 0;       // bytes handed out and not yet freed (block-rounded)
  size_t peak_allocated = 0;  // maximum of `allocated` since start or reset_peak
  size_t reserved = 0;        // bytes obtained from cudaMalloc (allocated + cached)
  size_t num_cuda_mallocs = 0;
  size_t num_allocations = 0;
};

CudaMemoryStats cuda_memory_stats(int device = 0);
void cuda_reset_peak(int device = 0);
// Returns cached, unused blocks to the driver.
void cuda_empty_cache();

}  // namespace fgvc
