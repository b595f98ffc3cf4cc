// ResNet v1 (He et al. 2016) as torchvision builds it (the stride in the 3x3 convolution,
// "v1.5"), and its Squeeze-and-Excitation variant as timm's seresnet50 (Hu et al. 2018).
// Parameter names match torchvision/timm, so their weights load by name.
#pragma once
#include <memory>
#include <vector>

#include "nn/layers.h"
#include "nn/models/registry.h"

namespace fgvc {
namespace nn {

// Squeeze-and-Excitation: global average pool, 1x1 conv down by `reduction` + ReLU, 1x1
// conv back + sigmoid, channel-wise scale (timm names: fc1, fc2).
class SqueezeExcite : public Module {
 public:
  SqueezeExcite(int64_t channels, int64_t reduction = 16);
  Tensor forward_impl(const Tensor& x) override;
  std::string type_name() const override { return "SqueezeExcite"; }

 private:
  std::shared_ptr<Conv2d> fc1_, fc2_;
};

class Bottleneck : public Module {
 public:
  static constexpr int64_t kExpansion = 4;
  Bottleneck(int64_t in, int64_t planes, int stride, bool se);
  Tensor forward_impl(const Tensor& x) override;
  std::string type_name() const override { return "Bottleneck"; }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_, bn3_;
  std::shared_ptr<SqueezeExcite> se_;
  std::shared_ptr<Sequential> downsample_;
};

class ResNet : public Classifier {
 public:
  // blocks per stage: {3, 4, 6, 3} ResNet-50, {3, 4, 23, 3} -101, {3, 8, 36, 3} -152.
  ResNet(const std::vector<int>& blocks, int64_t num_classes, bool se = false);
  Tensor forward_impl(const Tensor& x) override { return classify(features(x)); }
  Tensor classify(const Tensor& f) override { return fc_->forward(f); }
  Tensor features(const Tensor& x) override;  // the pooled 2048-d penultimate layer
  int64_t feature_dim() const override { return 2048; }
  std::string type_name() const override { return "ResNet"; }

 private:
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<MaxPool2d> maxpool_;
  std::vector<std::shared_ptr<Sequential>> layers_;
  std::shared_ptr<Linear> fc_;
};

}  // namespace nn
}  // namespace fgvc
