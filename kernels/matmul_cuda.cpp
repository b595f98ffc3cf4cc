// CUDA side of kernels/matmul.h: cuBLAS, column-major, so the row-major product
// C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T with the operands swapped.
// FP32 math by default (no TF32), so results match the CPU reference to float rounding.
//
// cuBLAS is opened on first use (dlopen) instead of being linked: a linked libcublas costs
// every process about 0.1 s at start-up, CPU-only runs and command-line tools included.
#include <cublas_v2.h>
#include <dlfcn.h>

#include <mutex>
#include <vector>

#include "kernels/matmul.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_runtime.h"

#define FGVC_CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                          \
    cublasStatus_t fgvc_st_ = (expr);                                                           \
    if (fgvc_st_ != CUBLAS_STATUS_SUCCESS)                                                      \
      throw ::fgvc::Error(::fgvc::detail::concat("cuBLAS error: ", #expr, " failed at ", __FILE__, \
                                                 ":", __LINE__, ": ", cublas().status_string(fgvc_st_))); \
  } while (0)

namespace fgvc {
namespace kernels {
namespace detail {

namespace {

struct Cublas {
  decltype(&cublasCreate_v2) create;
  decltype(&cublasSetStream_v2) set_stream;
  decltype(&cublasSgemmStridedBatched) sgemm_strided_batched;
  decltype(&cublasDgemmStridedBatched) dgemm_strided_batched;
  decltype(&cublasGetStatusString) status_string;
};

const Cublas& cublas() {
  static const Cublas api = [] {
    void* lib = nullptr;
    for (const char* name : {"libcublas.so." FGVC_CUBLAS_SOVERSION, FGVC_CUBLAS_PATH, "libcublas.so"})
      if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
    FGVC_CHECK(lib, "cuBLAS", "cannot load libcublas.so." FGVC_CUBLAS_SOVERSION " (", dlerror(),
               "); add the CUDA library folder to LD_LIBRARY_PATH");
    auto sym = [lib](const char* name) {
      void* p = dlsym(lib, name);
      FGVC_CHECK(p, "cuBLAS", "libcublas has no symbol ", name);
      return p;
    };
    Cublas c;
    c.create = reinterpret_cast<decltype(c.create)>(sym("cublasCreate_v2"));
    c.set_stream = reinterpret_cast<decltype(c.set_stream)>(sym("cublasSetStream_v2"));
    c.sgemm_strided_batched = reinterpret_cast<decltype(c.sgemm_strided_batched)>(sym("cublasSgemmStridedBatched"));
    c.dgemm_strided_batched = reinterpret_cast<decltype(c.dgemm_strided_batched)>(sym("cublasDgemmStridedBatched"));
    c.status_string = reinterpret_cast<decltype(c.status_string)>(sym("cublasGetStatusString"));
    return c;
  }();
  return api;
}

cublasHandle_t handle(int device) {
  static std::mutex mu;
  static std::vector<cublasHandle_t> handles;
  std::lock_guard<std::mutex> lock(mu);
  if (handles.empty()) handles.assign(static_cast<size_t>(cuda_device_count()), nullptr);
  if (!handles.at(device)) {
    cuda::DeviceGuard guard(device);
    FGVC_CUBLAS_CHECK(cublas().create(&handles[device]));
    FGVC_CUBLAS_CHECK(cublas().set_stream(handles[device], cuda::stream(device)));
  }
  return handles[device];
}
}  // namespace

void gemm_cuda(const GemmProblem& p) {
  const int dev = p.device.index;
  cuda::DeviceGuard guard(dev);
  cublasHandle_t h = handle(dev);
  const cublasOperation_t ta = p.a.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = p.b.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = static_cast<int>(p.m), n = static_cast<int>(p.n), k = static_cast<int>(p.k);
  if (p.dtype == DType::Float32) {
    const float alpha = static_cast<float>(p.alpha), beta = static_cast<float>(p.beta);
    FGVC_CUBLAS_CHECK(cublas().sgemm_strided_batched(
        h, tb, ta, n, m, k, &alpha, static_cast<const float*>(p.b.ptr), static_cast<int>(p.b.ld), p.b.batch_stride,
        static_cast<const float*>(p.a.ptr), static_cast<int>(p.a.ld), p.a.batch_stride, &beta,
        static_cast<float*>(p.c), static_cast<int>(p.ldc), p.c_batch_stride, static_cast<int>(p.batch)));
  } else {
    FGVC_CUBLAS_CHECK(cublas().dgemm_strided_batched(
        h, tb, ta, n, m, k, &p.alpha, static_cast<const double*>(p.b.ptr), static_cast<int>(p.b.ld),
        p.b.batch_stride, static_cast<const double*>(p.a.ptr), static_cast<int>(p.a.ld), p.a.batch_stride, &p.beta,
        static_cast<double*>(p.c), static_cast<int>(p.ldc), p.c_batch_stride, static_cast<int>(p.batch)));
  }
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
