// Block-wide reductions in double for kernels launched with kBlockReduceThreads threads.
// Every thread gets the result. Used by softmax, cross-entropy and top-k.
#pragma once
#include <cmath>

namespace fgvc {
namespace kernels {

constexpr int kBlockReduceThreads = 256;

template <class Op>
__device__ inline double block_reduce(double v, Op op) {
  __shared__ double shared[kBlockReduceThreads / 32];
  __shared__ double result;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = shared[0];
    for (int w = 1; w < kBlockReduceThreads / 32; ++w) v = op(v, shared[w]);
    if (lane == 0) result = v;
  }
  __syncthreads();
  const double r = result;
  __syncthreads();  // the shared slots may be reused by the next call
  return r;
}

struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct MaxOp {
  __device__ double operator()(double a, double b) const { return (b > a || b != b) ? b : a; }
};

__device__ inline double block_sum(double v) { return block_reduce(v, SumOp{}); }
__device__ inline double block_max(double v) { return block_reduce(v, MaxOp{}); }

}  // namespace kernels
}  // namespace fgvc
