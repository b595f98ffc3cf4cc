// GEMM throughput of our wrapper against the BLAS underneath it, float32, on the shapes the
// models run: im2col GEMMs of ResNet/Inception convolutions, a classifier, and a square one.
//
// For each shape M x N x K and each of the three layouts training uses (NN forward, NT and
// TN for the two gradients), on the CPU:
//   cpu/openblas/...     a bare cblas_sgemm into a preallocated C (the ceiling);
//   cpu/fgvc_gemm/...    kernels::gemm into the same preallocated C (checks + the same call);
//   cpu/fgvc_matmul/...  kernels::matmul, which also allocates its output every call.
// and on CUDA (cuBLAS through the wrapper; skipped with the reason when there is no device):
//   cuda/fgvc_gemm/..., cuda/fgvc_matmul/...
// The FLOPS counter is 2*M*N*K per call over wall time. Names are
// <device>/<impl>/<layout>/<M>x<N>x<K>; scripts/bench.sh parses them.
#include <cblas.h>

#include <string>

#include "bench_common.h"
#include "kernels/matmul.h"
#include "tensor/random.h"

namespace {

struct GemmShape {
  int64_t m, n, k;
};

// Conv shapes are im2col GEMMs for one image: M = out channels, N = out H*W, K = in channels*kh*kw.
constexpr GemmShape kShapes[] = {
    {64, 3136, 576},    // ResNet-50 conv2_x 3x3, 56x56
    {256, 784, 1152},   // ResNet conv3_x 3x3 (128 in, 256 out), 28x28
    {512, 196, 4608},   // ResNet conv4/5 3x3 (512 in), 14x14
    {1000, 32, 2048},   // classifier: 1000 classes, batch 32, 2048 features
    {1024, 1024, 1024},
};

struct Layout {
  const char* name;
  bool trans_a, trans_b;
};
constexpr Layout kLayouts[] = {{"NN", false, false}, {"NT", false, true}, {"TN", true, false}};

struct Operands {
  fgvc::Tensor a, b, c;  // a stored [K,M] when trans_a, b stored [N,K] when trans_b
};

Operands make_operands(const GemmShape& s, const Layout& l, fgvc::Device device) {
  fgvc::Generator gen(1);
  const fgvc::Shape a_shape = l.trans_a ? fgvc::Shape{s.k, s.m} : fgvc::Shape{s.m, s.k};
  const fgvc::Shape b_shape = l.trans_b ? fgvc::Shape{s.n, s.k} : fgvc::Shape{s.k, s.n};
  return {fgvc::randn(a_shape, gen, fgvc::DType::Float32, device),
          fgvc::randn(b_shape, gen, fgvc::DType::Float32, device),
          fgvc::Tensor::empty({s.m, s.n}, fgvc::DType::Float32, device)};
}

void set_flops(benchmark::State& state, const GemmShape& s) {
  state.counters["FLOPS"] = benchmark::Counter(2.0 * static_cast<double>(s.m * s.n * s.k),
                                               benchmark::Counter::kIsIterationInvariantRate);
}

void bm_openblas(benchmark::State& state, GemmShape s, Layout l) {
  const Operands x = make_operands(s, l, fgvc::Device::cpu());
  const float* a = x.a.data<float>();
  const float* b = x.b.data<float>();
  float* c = x.c.data<float>();
  const int lda = static_cast<int>(l.trans_a ? s.m : s.k), ldb = static_cast<int>(l.trans_b ? s.k : s.n);
  fgvc_bench::time_cpu(state, [&] {
    cblas_sgemm(CblasRowMajor, l.trans_a ? CblasTrans : CblasNoTrans, l.trans_b ? CblasTrans : CblasNoTrans,
                static_cast<int>(s.m), static_cast<int>(s.n), static_cast<int>(s.k), 1.0f, a, lda, b, ldb, 0.0f, c,
                static_cast<int>(s.n));
  });
  set_flops(state, s);
}

void bm_fgvc(benchmark::State& state, GemmShape s, Layout l, fgvc::Device device, bool allocate) {
  if (device.is_cuda() && !fgvc_bench::require_cuda(state)) return;
  const Operands x = make_operands(s, l, device);
  const auto op = [&] {
    if (allocate) fgvc::kernels::matmul(x.a, x.b, l.trans_a, l.trans_b);
    else fgvc::kernels::gemm(x.a, l.trans_a, x.b, l.trans_b, 1.0, 0.0, x.c);
  };
  if (device.is_cuda()) fgvc_bench::time_cuda(state, op);
  else fgvc_bench::time_cpu(state, op);
  set_flops(state, s);
}

void register_all() {
  for (const GemmShape& s : kShapes) {
    for (const Layout& l : kLayouts) {
      const std::string tail =
          std::string("/") + l.name + "/" + std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k);
      benchmark::RegisterBenchmark(("cpu/openblas" + tail).c_str(), bm_openblas, s, l)->UseRealTime();
      benchmark::RegisterBenchmark(("cpu/fgvc_gemm" + tail).c_str(), bm_fgvc, s, l, fgvc::Device::cpu(), false)
          ->UseRealTime();
      benchmark::RegisterBenchmark(("cpu/fgvc_matmul" + tail).c_str(), bm_fgvc, s, l, fgvc::Device::cpu(), true)
          ->UseRealTime();
      benchmark::RegisterBenchmark(("cuda/fgvc_gemm" + tail).c_str(), bm_fgvc, s, l, fgvc::Device::cuda(), false)
          ->UseManualTime();
      benchmark::RegisterBenchmark(("cuda/fgvc_matmul" + tail).c_str(), bm_fgvc, s, l, fgvc::Device::cuda(), true)
          ->UseManualTime();
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
