#include "nn/models/resnet_v2.h"

#include "autograd/autocast.h"

namespace fgvc {
namespace nn {

namespace {
// A module whose only job is to hold named children, so that parameter names nest the way
// the reference model's do (stem.conv, downsample.conv, head.fc).
class Holder : public Module {
 public:
  Holder(const std::string& type, std::vector<std::pair<std::string, std::shared_ptr<Module>>> children)
      : type_(type), children_(std::move(children)) {
    for (auto& [name, m] : children_) register_module(name, m);
  }
  Tensor forward_impl(const Tensor& x) override {  // in order
    Tensor y = x;
    for (auto& [name, m] : children_) y = m->forward(y);
    return y;
  }
  std::string type_name() const override { return type_; }

 private:
  std::string type_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};
}  // namespace

PreActBottleneck::PreActBottleneck(int64_t in, int64_t out, int stride, bool project) {
  const int64_t mid = out / 4;
  if (project)
    downsample_ = register_module(
        "downsample", std::make_shared<Holder>("DownsampleConv", std::vector<std::pair<std::string, std::shared_ptr<Module>>>{
                                                                     {"conv", std::make_shared<Conv2d>(in, out, 1, stride, 0)}}));
  norm1_ = register_module("norm1", std::make_shared<BatchNormReLU>(in));
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(in, mid, 1));
  norm2_ = register_module("norm2", std::make_shared<BatchNormReLU>(mid));
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(mid, mid, 3, stride, 1));
  norm3_ = register_module("norm3", std::make_shared<BatchNormReLU>(mid));
  conv3_ = register_module("conv3", std::make_shared<Conv2d>(mid, out, 1));
}

Tensor PreActBottleneck::forward_impl(const Tensor& x) {
  const Tensor pre = norm1_->forward(x);
  const Tensor shortcut = downsample_ ? downsample_->forward(pre) : x;
  const Tensor y = conv3_->forward(norm3_->forward(conv2_->forward(norm2_->forward(conv1_->forward(pre)))));
  return add(y, shortcut);
}

ResNetV2::ResNetV2(const std::vector<int>& blocks, int64_t num_classes) {
  using Children = std::vector<std::pair<std::string, std::shared_ptr<Module>>>;
  stem_ = register_module("stem", std::make_shared<Holder>("Stem", Children{
      {"conv", std::make_shared<Conv2d>(3, 64, 7, 2, 3)},
      {"pool", std::make_shared<MaxPool2d>(Pool2dGeometry::square(3, 2, 1))}}));
  Children stages;
  int64_t in = 64;
  for (size_t s = 0; s < blocks.size(); ++s) {
    const int64_t out = 256 << s;
    auto stage_blocks = std::make_shared<Sequential>();
    for (int b = 0; b < blocks[s]; ++b) {
      stage_blocks->push_back(std::make_shared<PreActBottleneck>(in, out, b == 0 && s > 0 ? 2 : 1, b == 0));
      in = out;
    }
    stages.emplace_back(std::to_string(s), std::make_shared<Holder>("ResNetStage", Children{{"blocks", stage_blocks}}));
  }
  stages_ = register_module("stages", std::make_shared<Holder>("Stages", stages));
  norm_ = register_module("norm", std::make_shared<BatchNormReLU>(in));
  fc_ = std::make_shared<Conv2d>(in, num_classes, 1, 1, 0, /*bias=*/true);
  normal_(fc_->weight, 0.0, 0.01);  // timm's classifier: normal(0, 0.01), bias 0 (not the convolutions' Kaiming)
  fc_->bias.zero_();
  head_ = register_module("head", std::make_shared<Holder>("ClassifierHead", Children{{"fc", fc_}}));
}

Tensor ResNetV2::features(const Tensor& x) {
  return mean(norm_->forward(stages_->forward(stem_->forward(x))), {2, 3});
}

Tensor ResNetV2::classify(const Tensor& f_in) {
  // timm's head is a 1x1 convolution; under mixed precision it stays float32 like the other
  // models' Linear classifiers (16-bit features cast up, no autocast inside the head).
  const Tensor f = to_dtype(f_in, compute_dtype(f_in.dtype()));
  AutocastGuard float32(DType::Float32);
  return reshape(head_->forward(reshape(f, {f.size(0), f.size(1), 1, 1})), {f.size(0), -1});
}

}  // namespace nn
}  // namespace fgvc
