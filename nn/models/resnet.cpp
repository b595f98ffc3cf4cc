#include "nn/models/resnet.h"

namespace fgvc {
namespace nn {

SqueezeExcite::SqueezeExcite(int64_t channels, int64_t reduction) {
  const int64_t reduced = channels / reduction;
  fc1_ = register_module("fc1", std::make_shared<Conv2d>(channels, reduced, 1, 1, 0, /*bias=*/true));
  fc2_ = register_module("fc2", std::make_shared<Conv2d>(reduced, channels, 1, 1, 0, /*bias=*/true));
}

Tensor SqueezeExcite::forward_impl(const Tensor& x) {
  const Tensor s = mean(x, {2, 3}, /*keepdim=*/true);  // [N, C, 1, 1]
  return mul(x, sigmoid(fc2_->forward(relu(fc1_->forward(s)))));
}

Bottleneck::Bottleneck(int64_t in, int64_t planes, int stride, bool se) {
  const int64_t out = planes * kExpansion;
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(in, planes, 1));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(planes));
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(planes, planes, 3, stride, 1));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(planes));
  conv3_ = register_module("conv3", std::make_shared<Conv2d>(planes, out, 1));
  bn3_ = register_module("bn3", std::make_shared<BatchNorm2d>(out));
  if (se) {
    se_ = register_module("se", std::make_shared<SqueezeExcite>(out));
    bn3_->weight.zero_();  // timm's zero_init_last (seresnet50); torchvision's resnet50 keeps 1
  }
  if (stride != 1 || in != out)
    downsample_ = register_module("downsample", std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                                                    std::make_shared<Conv2d>(in, out, 1, stride, 0),
                                                    std::make_shared<BatchNorm2d>(out)}));
}

Tensor Bottleneck::forward_impl(const Tensor& x) {
  Tensor y = relu(bn1_->forward(conv1_->forward(x)));
  y = relu(bn2_->forward(conv2_->forward(y)));
  y = bn3_->forward(conv3_->forward(y));
  if (se_) y = se_->forward(y);
  return relu(add(y, downsample_ ? downsample_->forward(x) : x));
}

ResNet::ResNet(const std::vector<int>& blocks, int64_t num_classes, bool se) {
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(3, 64, 7, 2, 3));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(64));
  maxpool_ = register_module("maxpool", std::make_shared<MaxPool2d>(kernels::Pool2dGeometry::square(3, 2, 1)));
  int64_t in = 64;
  for (size_t stage = 0; stage < blocks.size(); ++stage) {
    const int64_t planes = 64 << stage;
    auto layer = std::make_shared<Sequential>();
    for (int b = 0; b < blocks[stage]; ++b) {
      layer->push_back(std::make_shared<Bottleneck>(in, planes, b == 0 && stage > 0 ? 2 : 1, se));
      in = planes * Bottleneck::kExpansion;
    }
    layers_.push_back(register_module("layer" + std::to_string(stage + 1), layer));
  }
  fc_ = register_module("fc", std::make_shared<Linear>(in, num_classes));
}

Tensor ResNet::features(const Tensor& x) {
  Tensor y = maxpool_->forward(relu(bn1_->forward(conv1_->forward(x))));
  for (auto& layer : layers_) y = layer->forward(y);
  return mean(y, {2, 3});
}

}  // namespace nn
}  // namespace fgvc
