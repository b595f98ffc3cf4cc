// The layers the paper's networks are built from. Parameter and buffer names follow
// PyTorch (weight, bias, running_mean, running_var, num_batches_tracked). Initialisation:
// convolution weights Kaiming-normal by fan-out for every model (torchvision's and timm's
// ResNets; TF-slim's Inception-v3/v4 scopes also use a variance-scaling rule, by fan-in
// there, while the paper's Inception-ResNet-v2 scope keeps slim's Xavier default; fgvc uses
// fan-out throughout), batch norm 1 and 0, and PyTorch's
// default uniform(+-1/sqrt(fan-in)) for convolution biases and Linear layers. The models adjust
// their last layers as their references do (zeroed residual ends, small classifiers).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autograd/nn_ops.h"
#include "nn/module.h"

namespace fgvc {
namespace nn {

class Conv2d : public Module {
 public:
  // A square kernel with symmetric padding; `geometry` gives any stride/padding/dilation.
  Conv2d(int64_t in, int64_t out, int kernel, int stride = 1, int padding = 0, bool bias = false,
         Generator& gen = default_generator());
  Conv2d(int64_t in, int64_t out, int kernel_h, int kernel_w, const kernels::Conv2dGeometry& geometry, bool bias,
         Generator& gen = default_generator());
  Tensor forward_impl(const Tensor& x) override { return fgvc::conv2d(x, weight, bias, geometry); }
  std::string type_name() const override { return "Conv2d"; }
  int64_t macs(const Shape&, const Shape& y) const override {
    return numel(y) * weight.size(1) * weight.size(2) * weight.size(3);
  }
  Tensor weight, bias;
  kernels::Conv2dGeometry geometry;
};

class BatchNorm2d : public Module {
 public:
  // momentum as PyTorch counts it (TF's decay is 1 - momentum); eps per model.
  explicit BatchNorm2d(int64_t channels, double eps = 1e-5, double momentum = 0.1);
  Tensor forward_impl(const Tensor& x) override;
  std::string type_name() const override { return "BatchNorm2d"; }
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  double eps, momentum;
};

class ReLU : public Module {
 public:
  Tensor forward_impl(const Tensor& x) override { return relu(x); }
  std::string type_name() const override { return "ReLU"; }
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(const kernels::Pool2dGeometry& g) : geometry(g) {}
  Tensor forward_impl(const Tensor& x) override { return fgvc::max_pool2d(x, geometry); }
  std::string type_name() const override { return "MaxPool2d"; }
  kernels::Pool2dGeometry geometry;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(const kernels::Pool2dGeometry& g) : geometry(g) {}
  Tensor forward_impl(const Tensor& x) override { return fgvc::avg_pool2d(x, geometry); }
  std::string type_name() const override { return "AvgPool2d"; }
  kernels::Pool2dGeometry geometry;
};

// Mean over H and W: [N, C, H, W] -> [N, C] (pooling and flattening in one).
class GlobalAvgPool : public Module {
 public:
  Tensor forward_impl(const Tensor& x) override { return mean(x, {2, 3}); }
  std::string type_name() const override { return "GlobalAvgPool"; }
};

class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias = true, Generator& gen = default_generator());
  Tensor forward_impl(const Tensor& x) override { return linear(x, weight, bias); }
  std::string type_name() const override { return "Linear"; }
  int64_t macs(const Shape&, const Shape& y) const override { return numel(y) * weight.size(1); }
  Tensor weight, bias;
};

class Dropout : public Module {
 public:
  explicit Dropout(double p, Generator& gen = default_generator()) : p(p), gen_(&gen) {}
  Tensor forward_impl(const Tensor& x) override { return dropout(x, p, is_training(), *gen_); }
  std::string type_name() const override { return "Dropout"; }
  double p;

 private:
  Generator* gen_;
};

class Flatten : public Module {
 public:
  Tensor forward_impl(const Tensor& x) override { return reshape(x, {x.size(0), -1}); }
  std::string type_name() const override { return "Flatten"; }
};

// Children named "0", "1", ... run in order.
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<std::shared_ptr<Module>> layers);
  void push_back(std::shared_ptr<Module> m);
  Tensor forward_impl(const Tensor& x) override;
  std::string type_name() const override { return "Sequential"; }
  size_t size() const { return layers_.size(); }

 private:
  std::vector<std::shared_ptr<Module>> layers_;
};

}  // namespace nn
}  // namespace fgvc
