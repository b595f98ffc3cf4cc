#include "nn/models/inception_resnet_v2.h"

#include <functional>

namespace fgvc {
namespace nn {

namespace {

using Branch = InceptionBlock::Branch;


std::shared_ptr<Module> mixed_5b() {
  return std::make_shared<InceptionBlock>(
      "Mixed_5b",
      std::vector<Branch>{
          {{{"branch0", basic_conv(192, 96, 1)}}, nullptr, {}},
          {{{"branch1.0", basic_conv(192, 48, 1)}, {"branch1.1", basic_conv(48, 64, 5, 1, 2)}}, nullptr, {}},
          {{{"branch2.0", basic_conv(192, 64, 1)}, {"branch2.1", basic_conv(64, 96, 3, 1, 1)}, {"branch2.2", basic_conv(96, 96, 3, 1, 1)}},
           nullptr,
           {}},
          {{{"branch3.1", basic_conv(192, 64, 1)}},
           std::make_shared<AvgPool2d>(Pool2dGeometry::square(3, 1, 1, false, false)),
           {}}});
}

std::shared_ptr<Module> block35(double scale, bool se) {
  return std::make_shared<ResidualInceptionBlock>(
      "Block35",
      std::vector<Branch>{
          {{{"branch0", basic_conv(320, 32, 1)}}, nullptr, {}},
          {{{"branch1.0", basic_conv(320, 32, 1)}, {"branch1.1", basic_conv(32, 32, 3, 1, 1)}}, nullptr, {}},
          {{{"branch2.0", basic_conv(320, 32, 1)}, {"branch2.1", basic_conv(32, 48, 3, 1, 1)}, {"branch2.2", basic_conv(48, 64, 3, 1, 1)}},
           nullptr,
           {}}},
      128, 320, scale, true, se);
}

std::shared_ptr<Module> mixed_6a() {
  return std::make_shared<InceptionBlock>(
      "Mixed_6a",
      std::vector<Branch>{
          {{{"branch0", basic_conv(320, 384, 3, 2)}}, nullptr, {}},
          {{{"branch1.0", basic_conv(320, 256, 1)}, {"branch1.1", basic_conv(256, 256, 3, 1, 1)}, {"branch1.2", basic_conv(256, 384, 3, 2)}},
           nullptr,
           {}},
          {{}, max_pool_3x3_s2(), {}}});
}

std::shared_ptr<Module> block17(double scale, bool se) {
  return std::make_shared<ResidualInceptionBlock>(
      "Block17",
      std::vector<Branch>{{{{"branch0", basic_conv(1088, 192, 1)}}, nullptr, {}},
                          {{{"branch1.0", basic_conv(1088, 128, 1)}, {"branch1.1", basic_conv_hw(128, 160, 1, 7, 0, 3)},
                            {"branch1.2", basic_conv_hw(160, 192, 7, 1, 3, 0)}},
                           nullptr,
                           {}}},
      384, 1088, scale, true, se);
}

std::shared_ptr<Module> mixed_7a() {
  return std::make_shared<InceptionBlock>(
      "Mixed_7a",
      std::vector<Branch>{
          {{{"branch0.0", basic_conv(1088, 256, 1)}, {"branch0.1", basic_conv(256, 384, 3, 2)}}, nullptr, {}},
          {{{"branch1.0", basic_conv(1088, 256, 1)}, {"branch1.1", basic_conv(256, 288, 3, 2)}}, nullptr, {}},
          {{{"branch2.0", basic_conv(1088, 256, 1)}, {"branch2.1", basic_conv(256, 288, 3, 1, 1)}, {"branch2.2", basic_conv(288, 320, 3, 2)}},
           nullptr,
           {}},
          {{}, max_pool_3x3_s2(), {}}});
}

std::shared_ptr<Module> block8(double scale, bool relu, bool se) {
  return std::make_shared<ResidualInceptionBlock>(
      "Block8",
      std::vector<Branch>{{{{"branch0", basic_conv(2080, 192, 1)}}, nullptr, {}},
                          {{{"branch1.0", basic_conv(2080, 192, 1)}, {"branch1.1", basic_conv_hw(192, 224, 1, 3, 0, 1)},
                            {"branch1.2", basic_conv_hw(224, 256, 3, 1, 1, 0)}},
                           nullptr,
                           {}}},
      448, 2080, scale, relu, se);
}

std::shared_ptr<Sequential> repeat(int n, const std::function<std::shared_ptr<Module>()>& make) {
  auto s = std::make_shared<Sequential>();
  for (int i = 0; i < n; ++i) s->push_back(make());
  return s;
}

}  // namespace

ResidualInceptionBlock::ResidualInceptionBlock(std::string type, std::vector<Branch> branches, int64_t concat_channels,
                                               int64_t channels, double scale, bool relu, bool se)
    : InceptionBlock(std::move(type), std::move(branches)), scale_(scale), relu_(relu) {
  conv2d_ = register_module("conv2d", std::make_shared<Conv2d>(concat_channels, channels, 1, 1, 0, /*bias=*/true));
  if (se) se_ = register_module("se", std::make_shared<SqueezeExcite>(channels));
}

Tensor ResidualInceptionBlock::forward_impl(const Tensor& x) {
  Tensor residual = mul(conv2d_->forward(concat_branches(x)), scale_);
  if (se_) residual = se_->forward(residual);
  const Tensor y = add(residual, x);
  return relu_ ? relu(y) : y;
}

InceptionResNetV2::InceptionResNetV2(int64_t num_classes, bool se, bool aux_classifier) {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> body = {
      {"conv2d_1a", basic_conv(3, 32, 3, 2)},
      {"conv2d_2a", basic_conv(32, 32, 3)},
      {"conv2d_2b", basic_conv(32, 64, 3, 1, 1)},
      {"maxpool_3a", max_pool_3x3_s2()},
      {"conv2d_3b", basic_conv(64, 80, 1)},
      {"conv2d_4a", basic_conv(80, 192, 3)},
      {"maxpool_5a", max_pool_3x3_s2()}};
  // The Inception modules without a residual (mixed_5b and the two reductions) take their SE
  // block after the module, as inception_v3_se's Mixed blocks do; the residual blocks, on
  // their branch.
  auto module = [&](const std::string& name, std::shared_ptr<Module> m, int64_t channels) {
    body.push_back({name, std::move(m)});
    if (se) body.push_back({name + "_se", std::make_shared<SqueezeExcite>(channels)});
  };
  module("mixed_5b", mixed_5b(), 320);
  body.push_back({"repeat", repeat(10, [se] { return block35(0.17, se); })});
  module("mixed_6a", mixed_6a(), 1088);
  body.push_back({"repeat_1", repeat(20, [se] { return block17(0.10, se); })});
  aux_after_ = body.size() - 1;  // the 20 Block17s: the 17 x 17 grid
  module("mixed_7a", mixed_7a(), 2080);
  body.push_back({"repeat_2", repeat(9, [se] { return block8(0.20, true, se); })});
  body.push_back({"block8", block8(1.0, /*relu=*/false, se)});
  body.push_back({"conv2d_7b", basic_conv(2080, 1536, 1)});
  for (const auto& [name, m] : body) body_.push_back(register_module(name, m));
  if (aux_classifier) aux_ = register_module("AuxLogits", inception_aux(1088, num_classes));
  dropout_ = register_module("dropout", std::make_shared<Dropout>(kInceptionDropout));
  classif_ = register_module("classif", std::make_shared<Linear>(1536, num_classes));
}

Tensor InceptionResNetV2::features(const Tensor& x) {
  Tensor y = x;
  for (size_t i = 0; i < body_.size(); ++i) {
    y = body_[i]->forward(y);
    if (i == aux_after_) run_aux(aux_, y);
  }
  return mean(y, {2, 3});
}

}  // namespace nn
}  // namespace fgvc
