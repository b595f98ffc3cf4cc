// CUDA side of kernels/matmul.h: cuBLAS, column-major, so the row-major product
// C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T with the operands swapped.
// FP32 math by default (no TF32), so results match the CPU reference to float rounding.
#include <cublas_v2.h>

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
                                                 ":", __LINE__, ": ", cublasGetStatusString(fgvc_st_))); \
  } while (0)

namespace fgvc {
namespace kernels {
namespace detail {

namespace {
cublasHandle_t handle(int device) {
  static std::mutex mu;
  static std::vector<cublasHandle_t> handles;
  std::lock_guard<std::mutex> lock(mu);
  if (handles.empty()) handles.assign(static_cast<size_t>(cuda_device_count()), nullptr);
  if (!handles.at(device)) {
    cuda::DeviceGuard guard(device);
    FGVC_CUBLAS_CHECK(cublasCreate(&handles[device]));
    FGVC_CUBLAS_CHECK(cublasSetStream(handles[device], cuda::stream(device)));
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
    FGVC_CUBLAS_CHECK(cublasSgemmStridedBatched(
        h, tb, ta, n, m, k, &alpha, static_cast<const float*>(p.b.ptr), static_cast<int>(p.b.ld), p.b.batch_stride,
        static_cast<const float*>(p.a.ptr), static_cast<int>(p.a.ld), p.a.batch_stride, &beta,
        static_cast<float*>(p.c), static_cast<int>(p.ldc), p.c_batch_stride, static_cast<int>(p.batch)));
  } else {
    FGVC_CUBLAS_CHECK(cublasDgemmStridedBatched(
        h, tb, ta, n, m, k, &p.alpha, static_cast<const double*>(p.b.ptr), static_cast<int>(p.b.ld),
        p.b.batch_stride, static_cast<const double*>(p.a.ptr), static_cast<int>(p.a.ld), p.a.batch_stride, &p.beta,
        static_cast<double*>(p.c), static_cast<int>(p.ldc), p.c_batch_stride, static_cast<int>(p.batch)));
  }
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
