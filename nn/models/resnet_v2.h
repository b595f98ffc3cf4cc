// Pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual Networks") as
// timm's resnetv2_50/101/152 build it, with timm's names: stem.conv, stages.S.blocks.B.{norm1,
// conv1, norm2, conv2, norm3, conv3, downsample.conv}, norm, head.fc (a 1x1 convolution).
// Each block normalises (batch norm + ReLU) before its convolutions; the shortcut of a
// stage's first block is a 1x1 convolution of the pre-activated input; the stride sits in
// the 3x3 convolution.
#pragma once
#include "nn/models/resnet.h"

namespace fgvc {
namespace nn {

// Batch norm followed by ReLU (timm's BatchNormAct2d, with BatchNorm2d's parameter names).
class BatchNormReLU : public BatchNorm2d {
 public:
  using BatchNorm2d::BatchNorm2d;
  Tensor forward_impl(const Tensor& x) override { return relu(BatchNorm2d::forward_impl(x)); }
  std::string type_name() const override { return "BatchNormReLU"; }
};

class PreActBottleneck : public Module {
 public:
  PreActBottleneck(int64_t in, int64_t out, int stride, bool project);
  Tensor forward_impl(const Tensor& x) override;
  std::string type_name() const override { return "PreActBottleneck"; }

 private:
  std::shared_ptr<BatchNormReLU> norm1_, norm2_, norm3_;
  std::shared_ptr<Conv2d> conv1_, conv2_, conv3_;
  std::shared_ptr<Module> downsample_;
};

class ResNetV2 : public Classifier {
 public:
  ResNetV2(const std::vector<int>& blocks, int64_t num_classes);
  Tensor forward_impl(const Tensor& x) override { return classify(features(x)); }
  Tensor features(const Tensor& x) override;  // after the final norm, pooled: 2048-d
  Tensor classify(const Tensor& f) override;  // timm's head: a 1x1 convolution
  int64_t feature_dim() const override { return 2048; }
  std::vector<std::string> classifier_prefixes() const override { return {"head.fc."}; }
  std::string type_name() const override { return "ResNetV2"; }

 private:
  std::shared_ptr<Module> stem_, stages_, norm_, head_;
  std::shared_ptr<Conv2d> fc_;
};

}  // namespace nn
}  // namespace fgvc
