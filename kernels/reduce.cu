// CUDA side of kernels/reduce.h. Rows (inner == 1): one block per row, or several blocks per
// row writing partial results when there are few long rows; middle axes (inner > 1), short
// rows or very many rows: one thread per output element, coalesced across the columns. Accumulation is in double.
#include <cmath>

#include "kernels/block_reduce.cuh"
#include "kernels/reduce.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/dispatch.h"

namespace fgvc {
namespace kernels {
namespace detail {

namespace {

constexpr int kThreads = kBlockReduceThreads;

// The combine step (block_reduce.cuh's functors) and its identity for each reduction.
template <ReduceOp op> struct DevReducer;
template <> struct DevReducer<ReduceOp::Sum> {
  __device__ static double init() { return 0.0; }
  __device__ static double step(double a, double v) { return SumOp{}(a, v); }
  __device__ static double block(double v) { return block_sum(v); }
};
template <> struct DevReducer<ReduceOp::Max> {
  __device__ static double init() { return -INFINITY; }
  __device__ static double step(double a, double v) { return MaxOp{}(a, v); }
  __device__ static double block(double v) { return block_max(v); }
};

// grid (splits, outer): block (s, o) reduces its share of row o into partial[o * splits + s].
template <ReduceOp op, class T>
__global__ void reduce_rows_kernel(const T* x, int64_t r, int splits, double* partial) {
  const int64_t o = blockIdx.y;
  const int64_t lo = r * blockIdx.x / splits, hi = r * (blockIdx.x + 1) / splits;
  const T* row = x + o * r;
  double acc = DevReducer<op>::init();
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) acc = DevReducer<op>::step(acc, static_cast<double>(row[i]));
  acc = DevReducer<op>::block(acc);
  if (threadIdx.x == 0) partial[o * splits + blockIdx.x] = acc;
}

template <ReduceOp op, class T>
__global__ void finish_rows_kernel(const double* partial, int64_t outer, int splits, double scale, T* out) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < outer; o += int64_t(gridDim.x) * blockDim.x) {
    double acc = DevReducer<op>::init();
    for (int s = 0; s < splits; ++s) acc = DevReducer<op>::step(acc, partial[o * splits + s]);
    out[o] = static_cast<T>(acc * scale);
  }
}

template <ReduceOp op, class T>
__global__ void reduce_middle_kernel(const T* x, int64_t outer, int64_t r, int64_t inner, double scale, T* out) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < outer * inner; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = j / inner, c = j % inner;
    const T* p = x + o * r * inner + c;
    double acc = DevReducer<op>::init();
    for (int64_t k = 0; k < r; ++k) acc = DevReducer<op>::step(acc, static_cast<double>(p[k * inner]));
    out[j] = static_cast<T>(acc * scale);
  }
}

template <ReduceOp op, class T>
void launch(const Tensor& x, int64_t outer, int64_t r, int64_t inner, double scale, const Tensor& out, cudaStream_t s) {
  const T* px = static_cast<const T*>(x.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  // Columns, very many rows, or short rows: one thread per output element.
  if (inner > 1 || outer > 65535 || r < 64) {
    reduce_middle_kernel<op, T><<<cuda::blocks_for(outer * inner), kThreads, 0, s>>>(px, outer, r, inner, scale, po);
    FGVC_CHECK_LAUNCH();
    return;
  }
  // Enough blocks to fill the GPU: split long rows when there are few of them.
  int splits = 1;
  while (splits < 1024 && outer * splits < 1024 && r / (splits * 2) >= 4 * kThreads) splits *= 2;
  Tensor partial = Tensor::empty({outer * splits}, DType::Float64, x.device());
  double* pp = static_cast<double*>(partial.data_ptr());
  reduce_rows_kernel<op, T><<<dim3(splits, static_cast<unsigned>(outer)), kThreads, 0, s>>>(px, r, splits, pp);
  FGVC_CHECK_LAUNCH();
  finish_rows_kernel<op, T><<<cuda::blocks_for(outer), kThreads, 0, s>>>(pp, outer, splits, scale, po);
  FGVC_CHECK_LAUNCH();
}

template <class T>
void reduce_typed(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner, double scale,
                  const Tensor& out, cudaStream_t s) {
  if (op == ReduceOp::Sum) launch<ReduceOp::Sum, T>(x, outer, r, inner, scale, out, s);
  else launch<ReduceOp::Max, T>(x, outer, r, inner, scale, out, s);
}

}  // namespace

void reduce_cuda(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner, double scale, const Tensor& out) {
  const int dev = x.device().index;
  cuda::DeviceGuard guard(dev);
  FGVC_DISPATCH_FLOAT(x.dtype(), "reduce", T, reduce_typed<T>(op, x, outer, r, inner, scale, out, cuda::stream(dev)));
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
