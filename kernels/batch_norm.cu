// CUDA side of kernels/batch_norm.h: the CPU loops' formulas (batch_norm.cpp) in fused
// kernels, so that a training step passes over the activations 4 times forward and 4 times
// backward (the composition of generic elementwise and reduction kernels took 14 and 24).
//   forward:  per-channel sums of x, then of (x - mean)^2 (two passes, as on the CPU: no
//             cancellation), then y = x * scale + shift;
//   backward: per-channel sums of g and g * xhat in one pass, then dx.
// A per-channel sum is split into runs of elements, one block each, and each block reduces its
// run in a fixed order; a second small kernel adds the runs in order. No atomics: the same
// input gives the same bits, run after run. Sums are in double, like the CPU's.
#include <algorithm>

#include "kernels/batch_norm.h"
#include "kernels/block_reduce.cuh"
#include "kernels/fast_divmod.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cast.h"
#include "tensor/dispatch.h"

namespace fgvc {
namespace kernels {
namespace detail {

namespace {

// x viewed as [n, c, hw]; element e = image * hw + i of channel ch lies at (image c + ch) hw + i.
struct Plane {
  int64_t n, c, hw;
  FastDivmod by_hw, by_c;  // 32-bit index arithmetic: plane_of checks that it fits
};

// Rounded exactly as written (no fused multiply-add), as on the CPU (-ffp-contract=off).
__device__ inline float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ inline double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ inline float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ inline double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ inline float sub_rn(float a, float b) { return __fsub_rn(a, b); }
__device__ inline double sub_rn(double a, double b) { return __dsub_rn(a, b); }

// What the per-channel passes add up, for one element at `at` of channel ch.
template <class T>
struct SumOfX {  // s0 = sum x
  const T* x;
  __device__ void operator()(int64_t, int64_t at, double& s0, double&) const { s0 += to_double(x[at]); }
};
template <class T>
struct SumOfCenteredSquares {  // s0 = sum (x - mean)^2, mean in double
  const T* x;
  const double* mean;
  __device__ void operator()(int64_t ch, int64_t at, double& s0, double&) const {
    const double d = __dsub_rn(to_double(x[at]), mean[ch]);
    s0 += __dmul_rn(d, d);
  }
};
template <class T, class P = compute_t<T>>
struct GradientSums {  // s0 = sum g, s1 = sum g * (x - mean) * invstd
  const T *g, *x;
  const P *mean, *invstd;
  __device__ void operator()(int64_t ch, int64_t at, double& s0, double& s1) const {
    const double gv = to_double(g[at]);
    s0 += gv;
    s1 += __dmul_rn(__dmul_rn(gv, __dsub_rn(to_double(x[at]), static_cast<double>(mean[ch]))),
                    static_cast<double>(invstd[ch]));
  }
};

// Block (ch, run) adds f over elements [run * per_block, (run + 1) * per_block) of channel ch
// into partial0/1[ch * runs + run].
template <class F>
__global__ void __launch_bounds__(kBlockReduceThreads)
    channel_runs(Plane l, uint32_t per_block, F f, double* partial0, double* partial1) {
  const int64_t ch = blockIdx.x;
  const uint32_t m = static_cast<uint32_t>(l.n * l.hw);
  const uint32_t begin = blockIdx.y * per_block;
  const uint32_t end = static_cast<uint32_t>(min(static_cast<uint64_t>(m), static_cast<uint64_t>(begin) + per_block));
  double s0 = 0, s1 = 0;
  for (uint32_t e = begin + threadIdx.x; e < end; e += blockDim.x) {
    const uint32_t image = l.by_hw.div(e);
    f(ch, (static_cast<int64_t>(image) * l.c + ch) * l.hw + (e - image * l.by_hw.divisor()), s0, s1);
  }
  s0 = block_sum(s0);
  if (partial1) s1 = block_sum(s1);  // the same in every thread of the block
  if (threadIdx.x == 0) {
    partial0[ch * gridDim.y + blockIdx.y] = s0;
    if (partial1) partial1[ch * gridDim.y + blockIdx.y] = s1;
  }
}

__device__ inline double sum_runs(const double* partial, int64_t ch, int runs) {
  double s = 0;
  for (int r = 0; r < runs; ++r) s += partial[ch * runs + r];
  return s;
}

#define FGVC_EACH_CHANNEL(ch, c) \
  for (int64_t ch = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; ch < (c); ch += int64_t(gridDim.x) * blockDim.x)

template <class T>
__global__ void finish_mean(const double* partial, int runs, int64_t c, double count, double* mean_d, T* mean) {
  FGVC_EACH_CHANNEL(ch, c) {
    mean_d[ch] = sum_runs(partial, ch, runs) / count;
    mean[ch] = static_cast<T>(mean_d[ch]);
  }
}

template <class T>
__global__ void finish_variance(const double* partial, int runs, int64_t c, double count, double eps, T* invstd,
                                T* var_unbiased) {
  FGVC_EACH_CHANNEL(ch, c) {
    const double sq = sum_runs(partial, ch, runs);
    invstd[ch] = static_cast<T>(1.0 / sqrt(sq / count + eps));
    var_unbiased[ch] = static_cast<T>(count > 1 ? sq / (count - 1) : 0.0);
  }
}

template <class T>
__global__ void finish_gradients(const double* partial0, const double* partial1, int runs, int64_t c, double* sums,
                                 T* dbeta, T* dgamma) {
  FGVC_EACH_CHANNEL(ch, c) {
    sums[ch] = sum_runs(partial0, ch, runs);
    sums[c + ch] = sum_runs(partial1, ch, runs);
    dbeta[ch] = static_cast<T>(sums[ch]);
    dgamma[ch] = static_cast<T>(sums[c + ch]);
  }
}

#define FGVC_EACH_ELEMENT(k, n) \
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < (n); k += int64_t(gridDim.x) * blockDim.x)

// The channel of element k of [n, c, hw].
__device__ inline int64_t channel_of(const Plane& l, int64_t k) {
  return l.by_c.mod(l.by_hw.div(static_cast<uint32_t>(k)));
}

// y = x * scale + shift, scale = gamma invstd and shift = beta - mean scale in P = compute_t<T>,
// as on the CPU; 16-bit x and y are widened and narrowed around it.
template <class T, class P = compute_t<T>>
__global__ void apply_kernel(Plane l, const T* x, const P* gamma, const P* beta, const P* mean, const P* invstd, T* y) {
  FGVC_EACH_ELEMENT(k, l.n * l.c * l.hw) {
    const int64_t ch = channel_of(l, k);
    const P scale = mul_rn(gamma[ch], invstd[ch]), shift = sub_rn(beta[ch], mul_rn(mean[ch], scale));
    y[k] = narrow<T>(add_rn(mul_rn(widen(x[k]), scale), shift));
  }
}

// dx = gamma invstd / M (M g - sum g - xhat sum(g xhat)) in training, g gamma invstd otherwise.
template <class T, class P = compute_t<T>>
__global__ void dx_kernel(Plane l, const T* g, const T* x, const P* gamma, const P* mean, const P* invstd,
                          const double* sums, double count, bool training, T* dx) {
  FGVC_EACH_ELEMENT(k, l.n * l.c * l.hw) {
    const int64_t ch = channel_of(l, k);
    const double pi = static_cast<double>(invstd[ch]), scale = __dmul_rn(static_cast<double>(gamma[ch]), pi);
    const double gv = to_double(g[k]);
    if (!training) {
      dx[k] = from_double<T>(__dmul_rn(gv, scale));
      continue;
    }
    const double xhat = __dmul_rn(__dsub_rn(to_double(x[k]), static_cast<double>(mean[ch])), pi);
    const double inner = __dsub_rn(__dsub_rn(gv, __ddiv_rn(sums[ch], count)),
                                   __ddiv_rn(__dmul_rn(xhat, sums[l.c + ch]), count));
    dx[k] = from_double<T>(__dmul_rn(scale, inner));
  }
}

Plane plane_of(const Tensor& x) {
  Plane l{x.size(0), x.size(1), x.dim() == 4 ? x.size(2) * x.size(3) : 1, {}, {}};
  // 32-bit element indices, with room for a grid-stride step past the end.
  FGVC_CHECK(l.n * l.c * l.hw < (int64_t(1) << 31), "batch_norm", "CUDA: ", describe(x),
             " has 2^31 elements or more (the kernels index in 32 bits)");
  l.by_hw = FastDivmod(static_cast<uint32_t>(std::max<int64_t>(l.hw, 1)));  // an empty x divides by nothing
  l.by_c = FastDivmod(static_cast<uint32_t>(std::max<int64_t>(l.c, 1)));
  return l;
}

// How a channel's n * hw elements are cut into runs: at least 4096 elements a run (16 a
// thread), and about 1024 blocks in all where the channels are few, enough to fill the GPU.
struct Runs {
  uint32_t per_block;
  int count;
};
Runs runs_of(const Plane& l) {
  const int64_t m = l.n * l.hw;
  const int64_t channels = std::max<int64_t>(1, l.c);  // no channel: no run is launched, but no division by 0
  const int64_t count = std::max<int64_t>(1, std::min<int64_t>((m + 4095) / 4096, std::max<int64_t>(1, 1024 / channels)));
  return {static_cast<uint32_t>((m + count - 1) / count), static_cast<int>(count)};
}

Tensor doubles(int64_t count, const Tensor& like) { return Tensor::empty({count}, DType::Float64, like.device()); }

// What every entry point sets up first: x's device and stream, its plane and its runs.
struct Launch {
  explicit Launch(const Tensor& x)
      : guard(x.device().index), stream(cuda::stream(x.device().index)), l(plane_of(x)), r(runs_of(l)),
        count(static_cast<double>(l.n * l.hw)) {}
  cuda::DeviceGuard guard;
  cudaStream_t stream;
  Plane l;
  Runs r;
  double count;  // values per channel
  // [C] of the per-channel dtype: float32 beside 16-bit activations.
  Tensor per_channel(const Tensor& x) const { return Tensor::empty({l.c}, compute_dtype(x.dtype()), x.device()); }
};

template <class F>
void launch_runs(const Launch& at, F f, double* partial0, double* partial1) {
  if (at.l.c == 0) return;  // no channel, no run (a grid of 0 blocks is an invalid launch)
  channel_runs<<<dim3(static_cast<unsigned>(at.l.c), static_cast<unsigned>(at.r.count)), kBlockReduceThreads, 0,
                 at.stream>>>(at.l, at.r.per_block, f, partial0, partial1);
  FGVC_CHECK_LAUNCH();
}

}  // namespace

BatchNormStats batch_norm_train_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  const Launch at(x);
  const int64_t c = at.l.c;
  const Tensor partial = doubles(c * at.r.count, x), mean_d = doubles(c, x);
  BatchNormStats out{Tensor::empty(x.shape(), x.dtype(), x.device()), at.per_channel(x), at.per_channel(x),
                     at.per_channel(x)};
  FGVC_DISPATCH_FLOATING(x.dtype(), "batch_norm", T, {
    using P = compute_t<T>;
    const T* px = x.data<T>();
    launch_runs(at, SumOfX<T>{px}, partial.data<double>(), nullptr);
    finish_mean<P><<<cuda::blocks_for(c), 256, 0, at.stream>>>(partial.data<double>(), at.r.count, c, at.count,
                                                               mean_d.data<double>(), out.mean.data<P>());
    FGVC_CHECK_LAUNCH();
    launch_runs(at, SumOfCenteredSquares<T>{px, mean_d.data<double>()}, partial.data<double>(), nullptr);
    finish_variance<P><<<cuda::blocks_for(c), 256, 0, at.stream>>>(partial.data<double>(), at.r.count, c, at.count,
                                                                   eps, out.invstd.data<P>(),
                                                                   out.var_unbiased.data<P>());
    FGVC_CHECK_LAUNCH();
    apply_kernel<T><<<cuda::blocks_for(x.numel()), 256, 0, at.stream>>>(
        at.l, px, gamma.data<P>(), beta.data<P>(), out.mean.data<P>(), out.invstd.data<P>(), out.y.data<T>());
    FGVC_CHECK_LAUNCH();
  });
  return out;
}

Tensor batch_norm_apply_cuda(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                             const Tensor& invstd) {
  const Launch at(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  FGVC_DISPATCH_FLOATING(x.dtype(), "batch_norm", T, {
    using P = compute_t<T>;
    apply_kernel<T><<<cuda::blocks_for(x.numel()), 256, 0, at.stream>>>(
        at.l, x.data<T>(), gamma.data<P>(), beta.data<P>(), mean.data<P>(), invstd.data<P>(), y.data<T>());
    FGVC_CHECK_LAUNCH();
  });
  return y;
}

BatchNormGrads batch_norm_backward_cuda(const Tensor& grad, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                        const Tensor& invstd, bool training) {
  const Launch at(x);
  const int64_t c = at.l.c;
  const Tensor partial0 = doubles(c * at.r.count, x), partial1 = doubles(c * at.r.count, x), sums = doubles(2 * c, x);
  BatchNormGrads out{Tensor::empty(x.shape(), x.dtype(), x.device()), at.per_channel(x), at.per_channel(x)};
  FGVC_DISPATCH_FLOATING(x.dtype(), "batch_norm_backward", T, {
    using P = compute_t<T>;
    launch_runs(at, GradientSums<T>{grad.data<T>(), x.data<T>(), mean.data<P>(), invstd.data<P>()},
                partial0.data<double>(), partial1.data<double>());
    finish_gradients<P><<<cuda::blocks_for(c), 256, 0, at.stream>>>(partial0.data<double>(), partial1.data<double>(),
                                                                     at.r.count, c, sums.data<double>(),
                                                                     out.dbeta.data<P>(), out.dgamma.data<P>());
    FGVC_CHECK_LAUNCH();
    dx_kernel<T><<<cuda::blocks_for(x.numel()), 256, 0, at.stream>>>(at.l, grad.data<T>(), x.data<T>(),
                                                                      gamma.data<P>(), mean.data<P>(),
                                                                      invstd.data<P>(), sums.data<double>(), at.count,
                                                                      training, out.dx.data<T>());
    FGVC_CHECK_LAUNCH();
  });
  return out;
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
