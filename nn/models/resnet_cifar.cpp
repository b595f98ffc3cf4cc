#include "nn/models/resnet_cifar.h"

#include "autograd/ops.h"
#include "tensor/error.h"

namespace fgvc {
namespace nn {

BasicBlock::BasicBlock(int64_t in, int64_t out, int stride) : pad_channels_(out - in), stride_(stride) {
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(in, out, 3, stride, 1));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(out));
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(out, out, 3, 1, 1));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out));
}

Tensor BasicBlock::forward_impl(const Tensor& x) {
  Tensor y = relu(bn1_->forward(conv1_->forward(x)));
  y = bn2_->forward(conv2_->forward(y));
  Tensor shortcut = x;
  if (stride_ != 1) shortcut = avg_pool2d(x, Pool2dGeometry::square(1, stride_));  // a 1x1 window: subsampling
  if (pad_channels_ > 0) {
    // Half the zero channels before the input's, half after, as the PyTorch port pads them
    // (F.pad by planes / 4 on either side): its weights expect the input in the middle.
    const Shape s = shortcut.shape();
    const int64_t before = pad_channels_ / 2, after = pad_channels_ - before;
    const auto zeros = [&](int64_t c) { return Tensor::zeros({s[0], c, s[2], s[3]}, shortcut.dtype(), shortcut.device()); };
    shortcut = before > 0 ? concat({zeros(before), shortcut, zeros(after)}, 1) : concat({shortcut, zeros(after)}, 1);
  }
  return relu(add(y, shortcut));
}

ResNetCifar::ResNetCifar(int depth, int64_t num_classes) {
  FGVC_CHECK(depth >= 8 && (depth - 2) % 6 == 0, "ResNetCifar", "depth must be 6n + 2, got ", depth);
  const int n = (depth - 2) / 6;
  conv1_ = register_module("conv1", std::make_shared<Conv2d>(3, 16, 3, 1, 1));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(16));
  int64_t in = 16;
  for (int stage = 0; stage < 3; ++stage) {
    const int64_t out = 16 << stage;
    auto layer = std::make_shared<Sequential>();
    for (int b = 0; b < n; ++b) {
      layer->push_back(std::make_shared<BasicBlock>(in, out, b == 0 && stage > 0 ? 2 : 1));
      in = out;
    }
    layers_.push_back(register_module("layer" + std::to_string(stage + 1), layer));
  }
  linear_ = register_module("linear", std::make_shared<Linear>(64, num_classes));
}

Tensor ResNetCifar::features(const Tensor& x) {
  Tensor y = relu(bn1_->forward(conv1_->forward(x)));
  for (auto& layer : layers_) y = layer->forward(y);
  return mean(y, {2, 3});
}

}  // namespace nn
}  // namespace fgvc
