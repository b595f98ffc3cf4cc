// Memory throughput of our elementwise ops and reductions, float32 (and bfloat16 for the ops
// mixed precision keeps in 16 bits), beside the copy rate of
// the machine (the ceiling for ops that read and write each element once).
//
// Inputs are [n/1024, 1024] (N x C) with n = 1M (4 MB tensors: they stay in a server CPU's
// last-level cache and an H100's L2) and 16M (64 MB each: DRAM / HBM). Throughput counts the bytes the op must move, each input
// read once and the output written once, over wall time; outputs our ops allocate are part
// of the op, so allocation cost is in their numbers. Names are <device>/<op>/<size>:
//   memcpy, std_fill (CPU only)   std::memcpy split over the OpenMP threads our kernels use,
//                                 and std::fill, into preallocated buffers;
//   clone, fill_                  Tensor::clone (allocates; the device copy baseline) and fill_;
//   normal_                       standard normal numbers into a preallocated tensor (Philox and
//                                 Box-Muller with the series of tensor/philox.h: what building a
//                                 model spends its time on);
//   add, add_bias, relu, exp      kernels::add of two [N,C], add of a [C] bias over [N,C], relu, exp;
//   add_prealloc                  the same add kernel into a preallocated output (kernels::detail),
//                                 which separates the loop's cost from the allocation's;
//   sum_last, sum_all, sum_axis0  kernels::sum over C, over everything, over N;
//   batch_norm                    batch norm in training, forward and backward, on [N, 64, 64, 64]
//                                 (N = n / 2^18); the bytes are those a fused pass must move: x
//                                 read and y written, then g and x read and dx written;
//   batch_norm_generic (CUDA)     the same with set_cuda_batch_norm_fused(false);
//   add_bf16, relu_bf16,          add, relu and batch norm on bfloat16 data (float32 batch-norm
//   batch_norm_bf16               parameters), as mixed precision runs them: 2 bytes an element.
// CUDA cases are skipped with the reason when there is no device.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "bench_common.h"
#include "kernels/batch_norm.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"
#include "tensor/random.h"

namespace {

using fgvc::Device;
using fgvc::Tensor;
namespace k = fgvc::kernels;

constexpr int64_t kCols = 1024;
constexpr int64_t kFloat = sizeof(float);

Tensor input(int64_t n, Device device, uint64_t seed, fgvc::DType dtype = fgvc::DType::Float32) {
  fgvc::Generator gen(seed);
  return fgvc::randn({n / kCols, kCols}, gen, fgvc::DType::Float32, device).to(dtype);
}
constexpr int64_t kHalf = 2;  // bytes of a bfloat16

// Times `op` on `device` and reports `bytes` moved per call.
template <class Op>
void run(benchmark::State& state, Device device, int64_t bytes, Op&& op) {
  if (device.is_cuda()) fgvc_bench::time_cuda(state, op);
  else fgvc_bench::time_cpu(state, op);
  state.SetBytesProcessed(state.iterations() * bytes);
}

void bm_memcpy(benchmark::State& state, Device device, int64_t n) {
  const Tensor src = input(n, device, 1), dst = Tensor::empty(src.shape());
  const char* s = static_cast<const char*>(src.data_ptr());
  char* d = static_cast<char*>(dst.data_ptr());
  const int64_t bytes = n * kFloat;
  run(state, device, 2 * bytes, [&] {
#pragma omp parallel
    {
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t lo = bytes * t / nt, hi = bytes * (t + 1) / nt;
      std::memcpy(d + lo, s + lo, static_cast<size_t>(hi - lo));
    }
  });
}

void bm_std_fill(benchmark::State& state, Device device, int64_t n) {
  const Tensor dst = Tensor::empty({n / kCols, kCols});
  float* d = dst.data<float>();
  run(state, device, n * kFloat, [&] { std::fill(d, d + n, 1.0f); });
}

void bm_fill(benchmark::State& state, Device device, int64_t n) {
  Tensor x = input(n, device, 1);
  run(state, device, n * kFloat, [&] { x.fill_(1.0); });
}

void bm_normal(benchmark::State& state, Device device, int64_t n) {
  Tensor x = input(n, device, 1);
  fgvc::Generator gen(4);
  run(state, device, n * kFloat, [&] { fgvc::normal_(x, 0.0, 1.0, gen); });
}

void bm_clone(benchmark::State& state, Device device, int64_t n) {
  const Tensor x = input(n, device, 1);
  run(state, device, 2 * n * kFloat, [&] { x.clone(); });
}

void bm_add(benchmark::State& state, Device device, int64_t n) {
  const Tensor x = input(n, device, 1), y = input(n, device, 2);
  run(state, device, 3 * n * kFloat, [&] { k::add(x, y); });
}

void bm_add_prealloc(benchmark::State& state, Device device, int64_t n) {
  const Tensor x = input(n, device, 1), y = input(n, device, 2), out = Tensor::empty(x.shape(), x.dtype(), device);
  run(state, device, 3 * n * kFloat, [&] {
    if (device.is_cuda()) k::detail::binary_cuda(k::BinaryOp::Add, x, y, out);
    else k::detail::binary_cpu(k::BinaryOp::Add, x, y, out);
  });
}

void bm_add_bias(benchmark::State& state, Device device, int64_t n) {
  fgvc::Generator gen(2);
  const Tensor x = input(n, device, 1), bias = fgvc::randn({kCols}, gen, fgvc::DType::Float32, device);
  run(state, device, (2 * n + kCols) * kFloat, [&] { k::add(x, bias); });
}

void bm_relu(benchmark::State& state, Device device, int64_t n) {
  const Tensor x = input(n, device, 1);
  run(state, device, 2 * n * kFloat, [&] { k::relu(x); });
}

void bm_exp(benchmark::State& state, Device device, int64_t n) {
  const Tensor x = input(n, device, 1);
  run(state, device, 2 * n * kFloat, [&] { k::exp(x); });
}

void bm_sum_last(benchmark::State& state, Device device, int64_t n) {
  const Tensor x = input(n, device, 1);
  run(state, device, (n + n / kCols) * kFloat, [&] { k::sum(x, {1}); });
}

void bm_sum_all(benchmark::State& state, Device device, int64_t n) {
  const Tensor x = input(n, device, 1);
  run(state, device, (n + 1) * kFloat, [&] { k::sum(x); });
}

void bm_sum_axis0(benchmark::State& state, Device device, int64_t n) {
  const Tensor x = input(n, device, 1);
  run(state, device, (n + kCols) * kFloat, [&] { k::sum(x, {0}); });
}

void batch_norm_of(benchmark::State& state, Device device, int64_t n, fgvc::DType dtype) {
  fgvc::Generator gen(3);
  const fgvc::Shape shape{n >> 18, 64, 64, 64};
  const Tensor x = fgvc::randn(shape, gen, fgvc::DType::Float32, device).to(dtype);
  const Tensor g = fgvc::randn(shape, gen, fgvc::DType::Float32, device).to(dtype);
  const Tensor gamma = fgvc::randn({64}, gen, fgvc::DType::Float32, device), beta = fgvc::randn({64}, gen, fgvc::DType::Float32, device);
  run(state, device, 5 * n * static_cast<int64_t>(fgvc::dtype_size(dtype)), [&] {
    const k::BatchNormStats s = k::batch_norm_train(x, gamma, beta, 1e-3);
    k::batch_norm_backward(g, x, gamma, s.mean, s.invstd, true);
  });
}

void bm_batch_norm(benchmark::State& state, Device device, int64_t n) { batch_norm_of(state, device, n, fgvc::DType::Float32); }

void bm_add_bf16(benchmark::State& state, Device device, int64_t n) {
  const Tensor x = input(n, device, 1, fgvc::DType::BFloat16), y = input(n, device, 2, fgvc::DType::BFloat16);
  run(state, device, 3 * n * kHalf, [&] { k::add(x, y); });
}

void bm_relu_bf16(benchmark::State& state, Device device, int64_t n) {
  const Tensor x = input(n, device, 1, fgvc::DType::BFloat16);
  run(state, device, 2 * n * kHalf, [&] { k::relu(x); });
}

void bm_batch_norm_bf16(benchmark::State& state, Device device, int64_t n) {
  batch_norm_of(state, device, n, fgvc::DType::BFloat16);
}

void bm_batch_norm_generic(benchmark::State& state, Device device, int64_t n) {
  k::set_cuda_batch_norm_fused(false);
  bm_batch_norm(state, device, n);
  k::set_cuda_batch_norm_fused(true);
}

using BenchFn = void (*)(benchmark::State&, Device, int64_t);
enum class Where { Both, CpuOnly, CudaOnly };
struct Case {
  const char* name;
  BenchFn fn;
  Where where;
};
constexpr Case kCases[] = {
    {"memcpy", bm_memcpy, Where::CpuOnly},
    {"std_fill", bm_std_fill, Where::CpuOnly},
    {"clone", bm_clone, Where::Both},
    {"fill_", bm_fill, Where::Both},
    {"normal_", bm_normal, Where::Both},
    {"add", bm_add, Where::Both},
    {"add_prealloc", bm_add_prealloc, Where::Both},
    {"add_bias", bm_add_bias, Where::Both},
    {"relu", bm_relu, Where::Both},
    {"exp", bm_exp, Where::Both},
    {"sum_last", bm_sum_last, Where::Both},
    {"sum_all", bm_sum_all, Where::Both},
    {"sum_axis0", bm_sum_axis0, Where::Both},
    {"batch_norm", bm_batch_norm, Where::Both},
    {"batch_norm_generic", bm_batch_norm_generic, Where::CudaOnly},
    {"add_bf16", bm_add_bf16, Where::Both},
    {"relu_bf16", bm_relu_bf16, Where::Both},
    {"batch_norm_bf16", bm_batch_norm_bf16, Where::Both},
};

void bm_cuda(benchmark::State& state, BenchFn fn, int64_t n) {
  if (fgvc_bench::require_cuda(state)) fn(state, Device::cuda(), n);
}

void register_all() {
  const std::pair<const char*, int64_t> sizes[] = {{"1M", int64_t{1} << 20}, {"16M", int64_t{1} << 24}};
  for (const auto& [size_name, n] : sizes) {
    for (const Case& c : kCases) {
      const std::string tail = std::string("/") + c.name + "/" + size_name;
      if (c.where != Where::CudaOnly)
        benchmark::RegisterBenchmark(("cpu" + tail).c_str(), c.fn, Device::cpu(), n)->UseRealTime();
      if (c.where != Where::CpuOnly)
        benchmark::RegisterBenchmark(("cuda" + tail).c_str(), bm_cuda, c.fn, n)->UseManualTime();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
