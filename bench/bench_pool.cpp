// Max and average pooling, forward and backward, on pools of inception_v3 at 299 (the stem's
// two 3x3 stride-2 max pools, Mixed_6a's, and the 3x3 stride-1 average pools of Mixed_5b,
// Mixed_6b and Mixed_7b), batch 4, on the CPU and, with a device, CUDA. GB/s counts the bytes the pass must touch once: the input
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
  bool max;  // else average
  int64_t c, h;
  Pool2dGeometry g;
};

const PoolCase kCases[] = {
    {"inception_v3/maxpool1", true, 64, 147, Pool2dGeometry::square(3, 2)},
    {"inception_v3/maxpool2", true, 192, 71, Pool2dGeometry::square(3, 2)},
    {"inception_v3/Mixed_6a_pool", true, 288, 35, Pool2dGeometry::square(3, 2)},
    {"inception_v3/Mixed_5b_pool", false, 192, 35, Pool2dGeometry::square(3, 1, 1)},
    {"inception_v3/Mixed_6b_pool", false, 768, 17, Pool2dGeometry::square(3, 1, 1)},
    {"inception_v3/Mixed_7b_pool", false, 1280, 8, Pool2dGeometry::square(3, 1, 1)},
};
constexpr int64_t kBatch = 4;

enum class Pass { Forward, Backward };

void run(benchmark::State& state, const PoolCase& c, Pass pass, Device device) {
  const bool max = c.max;
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
    for (auto [pass, pname] : {std::pair{Pass::Forward, "forward"}, std::pair{Pass::Backward, "backward"}}) {
      fgvc_bench::register_cpu_and_cuda(std::string(c.name) + (c.max ? "/max/" : "/avg/") + pname,
                                        [&c, pass](benchmark::State& s, Device device) { run(s, c, pass, device); });
    }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
