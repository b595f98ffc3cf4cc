// CUDA side of kernels/reduce.h. Accumulation is in double, and every sum is taken in an order
// fixed by the shape (no atomics), so a result is the same on every run.
// - Rows (inner == 1): one block per row, or, for few long rows, several blocks per row writing
//   partial results that one block per row then combines.
// - Middle axes (inner > 1) with many outputs, short rows or very many rows: one thread per
//   output element, coalesced across the columns.
// - Middle axes with few outputs and a long reduced axis (a bias gradient: the sum over N of
//   [N, C]): tiles of 32 columns x 8 row lanes, the reduced axis split over many blocks, then
//   the splits combined in order; one thread per output would leave the GPU nearly idle.
#include <cmath>

#include "kernels/block_reduce.cuh"
#include "kernels/reduce.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cast.h"
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

// grid (splits, outer): block (s, o) reduces its share of row o into partial[o * splits + s],
// or, with one split, straight into out[o].
template <ReduceOp op, class T>
__global__ void reduce_rows_kernel(const T* x, int64_t r, int splits, double* partial, double scale, T* out) {
  const int64_t o = blockIdx.y;
  const int64_t lo = r * blockIdx.x / splits, hi = r * (blockIdx.x + 1) / splits;
  const T* row = x + o * r;
  double acc = DevReducer<op>::init();
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) acc = DevReducer<op>::step(acc, to_double(row[i]));
  acc = DevReducer<op>::block(acc);
  if (threadIdx.x != 0) return;
  if (splits == 1) out[o] = from_double<T>(acc * scale);
  else partial[o * splits + blockIdx.x] = acc;
}

// One block per row combines its splits (a loop in one thread would wait on one load per split).
template <ReduceOp op, class T>
__global__ void finish_rows_kernel(const double* partial, int splits, double scale, T* out) {
  const int64_t o = blockIdx.x;
  double acc = DevReducer<op>::init();
  for (int s = threadIdx.x; s < splits; s += kThreads) acc = DevReducer<op>::step(acc, partial[o * splits + s]);
  acc = DevReducer<op>::block(acc);
  if (threadIdx.x == 0) out[o] = from_double<T>(acc * scale);
}

// Middle axes, split: block (c, o, s) of kTileCols x kTileRows threads sums rows [k0, k1) of
// split s for the tile's columns of outer index o; each thread takes every kTileRows-th row,
// then thread row 0 adds the kTileRows lanes in order into partial[(o * splits + s) * inner + c].
constexpr int kTileCols = 32, kTileRows = 8;

template <ReduceOp op, class T>
__global__ void reduce_middle_split_kernel(const T* x, int64_t r, int64_t inner, int splits, double* partial) {
  __shared__ double lanes[kTileRows][kTileCols + 1];
  const int64_t c = blockIdx.x * int64_t(kTileCols) + threadIdx.x, o = blockIdx.y, s = blockIdx.z;
  const int64_t k0 = r * s / splits, k1 = r * (s + 1) / splits;
  double acc = DevReducer<op>::init();
  if (c < inner) {
    const T* p = x + o * r * inner + c;
    for (int64_t k = k0 + threadIdx.y; k < k1; k += kTileRows) acc = DevReducer<op>::step(acc, to_double(p[k * inner]));
  }
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || c >= inner) return;
  for (int y = 1; y < kTileRows; ++y) acc = DevReducer<op>::step(acc, lanes[y][threadIdx.x]);
  partial[(o * splits + s) * inner + c] = acc;
}

template <ReduceOp op, class T>
__global__ void finish_middle_kernel(const double* partial, int64_t outer, int64_t inner, int splits, double scale,
                                     T* out) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < outer * inner; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = j / inner, c = j % inner;
    double acc = DevReducer<op>::init();
    for (int s = 0; s < splits; ++s) acc = DevReducer<op>::step(acc, partial[(o * splits + s) * inner + c]);
    out[j] = from_double<T>(acc * scale);
  }
}

template <ReduceOp op, class T>
__global__ void reduce_middle_kernel(const T* x, int64_t outer, int64_t r, int64_t inner, double scale, T* out) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < outer * inner; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = j / inner, c = j % inner;
    const T* p = x + o * r * inner + c;
    double acc = DevReducer<op>::init();
    for (int64_t k = 0; k < r; ++k) acc = DevReducer<op>::step(acc, to_double(p[k * inner]));
    out[j] = from_double<T>(acc * scale);
  }
}

template <ReduceOp op, class T>
void launch(const Tensor& x, int64_t outer, int64_t r, int64_t inner, double scale, const Tensor& out, cudaStream_t s) {
  const T* px = static_cast<const T*>(x.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  if (inner > 1 && outer <= 65535) {
    // Few outputs, long reduced axis: split it until there are about 2048 blocks of 256 threads
    // (a few per multiprocessor), each split at least 64 rows long.
    const int64_t tiles = (inner + kTileCols - 1) / kTileCols * outer;
    int splits = 1;
    while (splits < 65535 && tiles * splits < 2048 && r / (splits * 2) >= 64) splits *= 2;
    if (splits > 1) {
      Tensor partial = Tensor::empty({outer * splits * inner}, DType::Float64, x.device());
      double* pp = static_cast<double*>(partial.data_ptr());
      const dim3 grid(static_cast<unsigned>((inner + kTileCols - 1) / kTileCols), static_cast<unsigned>(outer), splits);
      reduce_middle_split_kernel<op, T><<<grid, dim3(kTileCols, kTileRows), 0, s>>>(px, r, inner, splits, pp);
      FGVC_CHECK_LAUNCH();
      finish_middle_kernel<op, T><<<cuda::blocks_for(outer * inner), kThreads, 0, s>>>(pp, outer, inner, splits, scale, po);
      FGVC_CHECK_LAUNCH();
      return;
    }
  }
  // Columns, very many rows, or short rows: one thread per output element.
  if (inner > 1 || outer > 65535 || r < 64) {
    reduce_middle_kernel<op, T><<<cuda::blocks_for(outer * inner), kThreads, 0, s>>>(px, outer, r, inner, scale, po);
    FGVC_CHECK_LAUNCH();
    return;
  }
  // Enough blocks to fill the GPU: split long rows when there are few of them.
  int splits = 1;
  while (splits < 1024 && outer * splits < 1024 && r / (splits * 2) >= 4 * kThreads) splits *= 2;
  Tensor partial;
  double* pp = nullptr;
  if (splits > 1) {
    partial = Tensor::empty({outer * splits}, DType::Float64, x.device());
    pp = static_cast<double*>(partial.data_ptr());
  }
  reduce_rows_kernel<op, T><<<dim3(splits, static_cast<unsigned>(outer)), kThreads, 0, s>>>(px, r, splits, pp, scale, po);
  FGVC_CHECK_LAUNCH();
  if (splits == 1) return;
  finish_rows_kernel<op, T><<<static_cast<unsigned>(outer), kThreads, 0, s>>>(pp, splits, scale, po);
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
  FGVC_DISPATCH_FLOATING(x.dtype(), "reduce", T, reduce_typed<T>(op, x, outer, r, inner, scale, out, cuda::stream(dev)));
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
