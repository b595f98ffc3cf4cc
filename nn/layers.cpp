#include "nn/layers.h"

#include <algorithm>
#include <cmath>

#include "kernels/elementwise.h"

namespace fgvc {
namespace nn {

Conv2d::Conv2d(int64_t in, int64_t out, int kernel, int stride, int padding, bool has_bias, Generator& gen)
    : Conv2d(in, out, kernel, kernel, kernels::Conv2dGeometry::symmetric(stride, padding), has_bias, gen) {}

Conv2d::Conv2d(int64_t in, int64_t out, int kernel_h, int kernel_w, const kernels::Conv2dGeometry& g, bool has_bias,
               Generator& gen)
    : geometry(g) {
  // torchvision's and timm's ResNets: kaiming_normal_(mode="fan_out", nonlinearity="relu").
  Tensor w = Tensor::empty({out, in, kernel_h, kernel_w});
  normal_(w, 0.0, std::sqrt(2.0 / static_cast<double>(out * kernel_h * kernel_w)), gen);
  weight = register_parameter("weight", w);
  if (has_bias) {  // PyTorch's default, which timm keeps (SE's fc1/fc2, Inception-ResNet-v2's projections)
    const double bound = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(1, in * kernel_h * kernel_w)));
    Tensor b = Tensor::empty({out});
    uniform_(b, -bound, bound, gen);
    bias = register_parameter("bias", b);
  }
}

BatchNorm2d::BatchNorm2d(int64_t channels, double eps_, double momentum_) : eps(eps_), momentum(momentum_) {
  weight = register_parameter("weight", Tensor::ones({channels}));
  bias = register_parameter("bias", Tensor::zeros({channels}));
  running_mean = register_buffer("running_mean", Tensor::zeros({channels}));
  running_var = register_buffer("running_var", Tensor::ones({channels}));
  num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}, DType::Int64));
}

Tensor BatchNorm2d::forward_impl(const Tensor& x) {
  if (is_training()) kernels::increment(num_batches_tracked);  // on its device: no wait for the GPU
  return batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum, eps);
}

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& gen) {
  // PyTorch's default: uniform(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  Tensor w = Tensor::empty({out, in});
  uniform_(w, -bound, bound, gen);
  weight = register_parameter("weight", w);
  if (has_bias) {
    Tensor b = Tensor::empty({out});
    uniform_(b, -bound, bound, gen);
    bias = register_parameter("bias", b);
  }
}

Sequential::Sequential(std::vector<std::shared_ptr<Module>> layers) {
  for (auto& m : layers) push_back(std::move(m));
}

void Sequential::push_back(std::shared_ptr<Module> m) {
  register_module(std::to_string(layers_.size()), m);
  layers_.push_back(std::move(m));
}

Tensor Sequential::forward_impl(const Tensor& x) {
  Tensor y = x;
  for (auto& m : layers_) y = m->forward(y);
  return y;
}

}  // namespace nn
}  // namespace fgvc
