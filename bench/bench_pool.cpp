// Max and average pooling, forward and backward, on the pools of inception_v3 at 299 (the
// stem's 3x3 stride-2 max pools, the Mixed blocks' 3x3 stride-1 average pools), batch 4, on
// the CPU and, with a device, CUDA. GB/s counts the bytes the pass must touch once: the input
// and the output (and, for max pooling's backward, its indices).
#include "bench_common.h"
#include "kernels/pool2d.h"
#include "tensor/random.h"

namespace {

using fgvc::Device;
using fgvc::Pool2dGeometry;
using fgvc::Tensor;

struct PoolCase {
  const char* name;
  int64_t c, h;
  Pool2dGeometry g;
};

const PoolCase kCases[] = {
    {"inception_v3/maxpool1", 64, 147, Pool2dGeometry::square(3, 2)},
    {"inception_v3/maxpool2", 192, 71, Pool2dGeometry::square(3, 2)},
    {"inception_v3/Mixed_5b_avg", 192, 35, Pool2dGeometry::square(3, 1, 1)},
    {"inception_v3/Mixed_6b_avg", 768, 17, Pool2dGeometry::square(3, 1, 1)},
    {"inception_v3/Mixed_7b_avg", 1280, 8, Pool2dGeometry::square(3, 1, 1)},
};
constexpr int64_t kBatch = 4;

enum class Pass { Forward, Backward };

void run(benchmark::State& state, const PoolCase& c, bool max, Pass pass, Device device) {
  if (device.is_cuda() && !fgvc_bench::require_cuda(state)) return;
  fgvc::Generator gen(1);
  const Tensor x = fgvc::randn({kBatch, c.c, c.h, c.h}, gen, fgvc::DType::Float32, device);
  const fgvc::kernels::MaxPoolOutput m = fgvc::kernels::max_pool2d(x, c.g);
  const Tensor gy = fgvc::randn(m.y.shape(), gen, fgvc::DType::Float32, device);
  auto op = [&] {
    namespace k = fgvc::kernels;
    if (pass == Pass::Forward) {
      if (max) benchmark::DoNotOptimize(k::max_pool2d(x, c.g));
      else benchmark::DoNotOptimize(k::avg_pool2d(x, c.g));
    } else {
      if (max) benchmark::DoNotOptimize(k::max_pool2d_backward(gy, m.argmax, x.shape(), c.g));
      else benchmark::DoNotOptimize(k::avg_pool2d_backward(gy, x.shape(), c.g));
    }
  };
  if (device.is_cuda()) fgvc_bench::time_cuda(state, op);
  else fgvc_bench::time_cpu(state, op);
  const double indices = max ? 8.0 * static_cast<double>(m.y.numel()) : 0.0;
  const double bytes = 4.0 * static_cast<double>(x.numel() + m.y.numel()) + indices;
  state.counters["bytes_per_second"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
}

const int kRegistered = [] {
  for (const PoolCase& c : kCases)
    for (const bool max : {true, false})
      for (auto [pass, pname] : {std::pair{Pass::Forward, "forward"}, std::pair{Pass::Backward, "backward"}}) {
        const std::string name = std::string(c.name) + (max ? "/max/" : "/avg/") + pname;
        benchmark::RegisterBenchmark(("cpu/" + name).c_str(),
                                     [&c, max, pass](benchmark::State& s) { run(s, c, max, pass, Device::cpu()); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
        benchmark::RegisterBenchmark(("cuda/" + name).c_str(),
                                     [&c, max, pass](benchmark::State& s) { run(s, c, max, pass, Device::cuda()); })
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
      }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
