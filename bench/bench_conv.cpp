// Convolution forward and backward (input and weight gradients) on the conv shapes of
// resnet50 at 224 and inception_v3 at 299, batch 8, on the CPU (im2col + OpenBLAS, and
// Winograd's F(2x2, 3x3) for the 3x3 stride-1 shapes, whose cpu_im2col/ cases time im2col
// beside it) and, with a device, CUDA (cuDNN). GFLOP/s counts 2 MACs per output element per
// kernel tap (the direct convolution's work, whatever the algorithm).
#include "bench_common.h"
#include "kernels/conv2d.h"
#include "tensor/random.h"

namespace {

using fgvc::Conv2dGeometry;
using fgvc::Device;
using fgvc::Tensor;

struct ConvCase {
  const char* name;
  int64_t c, h, o, kh, kw;  // input channels, input size (square), output channels, kernel
  Conv2dGeometry g;
};

const ConvCase kCases[] = {
    {"resnet50/conv1_7x7s2", 3, 224, 64, 7, 7, Conv2dGeometry::symmetric(2, 3)},
    {"resnet50/layer1_3x3", 64, 56, 64, 3, 3, Conv2dGeometry::symmetric(1, 1)},
    {"resnet50/layer1_1x1", 64, 56, 256, 1, 1, Conv2dGeometry::symmetric(1, 0)},
    {"resnet50/layer2_3x3", 128, 28, 128, 3, 3, Conv2dGeometry::symmetric(1, 1)},
    {"resnet50/layer3_3x3", 256, 14, 256, 3, 3, Conv2dGeometry::symmetric(1, 1)},
    {"resnet50/layer4_3x3", 512, 7, 512, 3, 3, Conv2dGeometry::symmetric(1, 1)},
    {"resnet50/layer4_1x1", 2048, 7, 512, 1, 1, Conv2dGeometry::symmetric(1, 0)},
    {"inception_v3/Conv2d_2a_3x3", 32, 149, 32, 3, 3, Conv2dGeometry::symmetric(1, 0)},
    {"inception_v3/Conv2d_2b_3x3", 32, 147, 64, 3, 3, Conv2dGeometry::symmetric(1, 1)},
    {"inception_v3/Conv2d_4a_3x3", 80, 73, 192, 3, 3, Conv2dGeometry::symmetric(1, 0)},
    {"inception_v3/Mixed_5b_3x3dbl_2", 64, 35, 96, 3, 3, Conv2dGeometry::symmetric(1, 1)},
    {"inception_v3/Mixed_5b_3x3dbl_3", 96, 35, 96, 3, 3, Conv2dGeometry::symmetric(1, 1)},
    {"inception_v3/Mixed_5b_5x5", 48, 35, 64, 5, 5, Conv2dGeometry::symmetric(1, 2)},
    {"inception_v3/Mixed_6b_1x7", 128, 17, 128, 1, 7, {1, 1, 0, 0, 3, 3, 1, 1}},  // padding (0, 3)
};
constexpr int64_t kBatch = 8;

enum class Pass { Forward, BackwardInput, BackwardWeight };

void run(benchmark::State& state, const ConvCase& c, Pass pass, Device device, bool im2col = false) {
  if (device.is_cuda() && !fgvc_bench::require_cuda(state)) return;
  fgvc::kernels::set_cpu_winograd(!im2col);
  fgvc::Generator gen(1);
  const int64_t kh = c.kh, kw = c.kw;
  const Tensor x = fgvc::randn({kBatch, c.c, c.h, c.h}, gen, fgvc::DType::Float32, device);
  const Tensor w = fgvc::randn({c.o, c.c, kh, kw}, gen, fgvc::DType::Float32, device);
  const Tensor y = fgvc::kernels::conv2d(x, w, Tensor(), c.g);
  const Tensor gy = fgvc::randn(y.shape(), gen, fgvc::DType::Float32, device);
  auto op = [&] {
    if (pass == Pass::Forward) benchmark::DoNotOptimize(fgvc::kernels::conv2d(x, w, Tensor(), c.g));
    else if (pass == Pass::BackwardInput) benchmark::DoNotOptimize(fgvc::kernels::conv2d_backward_input(gy, w, x.shape(), c.g));
    else benchmark::DoNotOptimize(fgvc::kernels::conv2d_backward_weight(gy, x, w.shape(), c.g));
  };
  if (device.is_cuda()) fgvc_bench::time_cuda(state, op);
  else fgvc_bench::time_cpu(state, op);
  const double flops = 2.0 * static_cast<double>(y.numel()) * static_cast<double>(c.c * kh * kw);
  state.counters["FLOPS"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  fgvc::kernels::set_cpu_winograd(true);
}

const int kRegistered = [] {
  for (const ConvCase& c : kCases)
    for (auto [pass, pname] : {std::pair{Pass::Forward, "forward"}, std::pair{Pass::BackwardInput, "backward_input"},
                               std::pair{Pass::BackwardWeight, "backward_weight"}}) {
      fgvc_bench::register_cpu_and_cuda(std::string(c.name) + "/" + pname,
                                        [&c, pass](benchmark::State& s, Device device) { run(s, c, pass, device); });
      if (c.kh == 3 && c.kw == 3 && c.g.stride_h == 1 && c.g.stride_w == 1)
        benchmark::RegisterBenchmark((std::string("cpu_im2col/") + c.name + "/" + pname).c_str(),
                                     [&c, pass](benchmark::State& s) { run(s, c, pass, Device::cpu(), true); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
    }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
