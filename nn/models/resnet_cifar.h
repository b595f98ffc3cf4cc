// The small residual networks of He et al. 2016 (section 4.2, CIFAR-10): a 3x3 stem of 16
// channels, three stages of n basic blocks (two 3x3 convolutions) with 16, 32 and 64
// channels, global average pooling and a linear classifier: depth 6n + 2 (resnet20: n = 3,
// 269,722 parameters with 10 classes; resnet32 464,154; resnet56 853,018). Shortcuts are the
// paper's option A: identity, and where a stage halves the size, the input subsampled by 2
// and zero-padded to the new channel count (half the zero channels before the input's, half
// after, as the port below pads them), so shortcuts have no parameters.
// Names follow the widely used PyTorch port (conv1, bn1, layer1.0.conv1, ..., linear), so its
// CIFAR weights load by name. These are the models the demo and the training tests train on a
// CPU in minutes; the stem keeps full resolution, so 28 x 28 or 32 x 32 inputs work.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/models/registry.h"

namespace fgvc {
namespace nn {

class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in, int64_t out, int stride);
  Tensor forward_impl(const Tensor& x) override;
  std::string type_name() const override { return "BasicBlock"; }

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  int64_t pad_channels_ = 0;  // option A: channels of zeros around the shortcut's
  int stride_ = 1;
};

class ResNetCifar : public Classifier {
 public:
  ResNetCifar(int depth, int64_t num_classes);
  Tensor forward_impl(const Tensor& x) override { return classify(features(x)); }
  Tensor classify(const Tensor& f) override { return linear_->forward(f); }
  Tensor features(const Tensor& x) override;  // pooled 64-d
  int64_t feature_dim() const override { return 64; }
  std::vector<std::string> classifier_prefixes() const override { return {"linear."}; }
  std::string type_name() const override { return "ResNetCifar"; }

 private:
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::vector<std::shared_ptr<Sequential>> layers_;
  std::shared_ptr<Linear> linear_;
};

}  // namespace nn
}  // namespace fgvc
