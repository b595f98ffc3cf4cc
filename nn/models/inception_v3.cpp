#include "nn/models/inception_v3.h"

#include "nn/models/resnet.h"

namespace fgvc {
namespace nn {

namespace {

using Chain = std::vector<std::pair<std::string, std::shared_ptr<Module>>>;

std::shared_ptr<Module> avg_pool_3x3() {  // stride 1, pad 1, padding counted (PyTorch's default)
  return std::make_shared<AvgPool2d>(Pool2dGeometry::square(3, 1, 1));
}

}  // namespace

std::shared_ptr<InceptionBlock> inception_a(int64_t in, int64_t pool_features) {
  return std::make_shared<InceptionBlock>(
      "InceptionA",
      std::vector<InceptionBlock::Branch>{
          {{{"branch1x1", basic_conv(in, 64, 1)}}, nullptr, {}},
          {{{"branch5x5_1", basic_conv(in, 48, 1)}, {"branch5x5_2", basic_conv(48, 64, 5, 1, 2)}}, nullptr, {}},
          {{{"branch3x3dbl_1", basic_conv(in, 64, 1)}, {"branch3x3dbl_2", basic_conv(64, 96, 3, 1, 1)},
            {"branch3x3dbl_3", basic_conv(96, 96, 3, 1, 1)}},
           nullptr,
           {}},
          {{{"branch_pool", basic_conv(in, pool_features, 1)}}, avg_pool_3x3(), {}}});
}

std::shared_ptr<InceptionBlock> inception_b(int64_t in) {
  return std::make_shared<InceptionBlock>(
      "InceptionB", std::vector<InceptionBlock::Branch>{
                        {{{"branch3x3", basic_conv(in, 384, 3, 2)}}, nullptr, {}},
                        {{{"branch3x3dbl_1", basic_conv(in, 64, 1)}, {"branch3x3dbl_2", basic_conv(64, 96, 3, 1, 1)},
                          {"branch3x3dbl_3", basic_conv(96, 96, 3, 2)}},
                         nullptr,
                         {}},
                        {{}, max_pool_3x3_s2(), {}, "branch_pool"}});
}

std::shared_ptr<InceptionBlock> inception_c(int64_t in, int64_t c7) {
  return std::make_shared<InceptionBlock>(
      "InceptionC",
      std::vector<InceptionBlock::Branch>{
          {{{"branch1x1", basic_conv(in, 192, 1)}}, nullptr, {}},
          {{{"branch7x7_1", basic_conv(in, c7, 1)}, {"branch7x7_2", basic_conv_hw(c7, c7, 1, 7, 0, 3)},
            {"branch7x7_3", basic_conv_hw(c7, 192, 7, 1, 3, 0)}},
           nullptr,
           {}},
          {{{"branch7x7dbl_1", basic_conv(in, c7, 1)}, {"branch7x7dbl_2", basic_conv_hw(c7, c7, 7, 1, 3, 0)},
            {"branch7x7dbl_3", basic_conv_hw(c7, c7, 1, 7, 0, 3)}, {"branch7x7dbl_4", basic_conv_hw(c7, c7, 7, 1, 3, 0)},
            {"branch7x7dbl_5", basic_conv_hw(c7, 192, 1, 7, 0, 3)}},
           nullptr,
           {}},
          {{{"branch_pool", basic_conv(in, 192, 1)}}, avg_pool_3x3(), {}}});
}

std::shared_ptr<InceptionBlock> inception_d(int64_t in) {
  return std::make_shared<InceptionBlock>(
      "InceptionD",
      std::vector<InceptionBlock::Branch>{
          {{{"branch3x3_1", basic_conv(in, 192, 1)}, {"branch3x3_2", basic_conv(192, 320, 3, 2)}}, nullptr, {}},
          {{{"branch7x7x3_1", basic_conv(in, 192, 1)}, {"branch7x7x3_2", basic_conv_hw(192, 192, 1, 7, 0, 3)},
            {"branch7x7x3_3", basic_conv_hw(192, 192, 7, 1, 3, 0)}, {"branch7x7x3_4", basic_conv(192, 192, 3, 2)}},
           nullptr,
           {}},
          {{}, max_pool_3x3_s2(), {}, "branch_pool"}});
}

std::shared_ptr<InceptionBlock> inception_e(int64_t in) {
  return std::make_shared<InceptionBlock>(
      "InceptionE",
      std::vector<InceptionBlock::Branch>{
          {{{"branch1x1", basic_conv(in, 320, 1)}}, nullptr, {}},
          {{{"branch3x3_1", basic_conv(in, 384, 1)}},
           nullptr,
           {{"branch3x3_2a", basic_conv_hw(384, 384, 1, 3, 0, 1)}, {"branch3x3_2b", basic_conv_hw(384, 384, 3, 1, 1, 0)}}},
          {{{"branch3x3dbl_1", basic_conv(in, 448, 1)}, {"branch3x3dbl_2", basic_conv(448, 384, 3, 1, 1)}},
           nullptr,
           {{"branch3x3dbl_3a", basic_conv_hw(384, 384, 1, 3, 0, 1)}, {"branch3x3dbl_3b", basic_conv_hw(384, 384, 3, 1, 1, 0)}}},
          {{{"branch_pool", basic_conv(in, 192, 1)}}, avg_pool_3x3(), {}}});
}

namespace {

// The auxiliary classifier on Mixed_6e: 5x5/3 average pool, 1x1 conv to 128, 5x5 conv to
// 768, global pool, fully connected.
class InceptionAux : public Module {
 public:
  InceptionAux(int64_t in, int64_t num_classes) {
    conv0_ = register_module("conv0", std::make_shared<BasicConv2d>(in, 128, 1));
    conv1_ = register_module("conv1", std::make_shared<BasicConv2d>(128, 768, 5));
    fc_ = register_module("fc", std::make_shared<Linear>(768, num_classes));
  }
  Tensor forward_impl(const Tensor& x) override {
    const Tensor p = fgvc::avg_pool2d(x, Pool2dGeometry::square(5, 3));
    return fc_->forward(mean(conv1_->forward(conv0_->forward(p)), {2, 3}));
  }
  std::string type_name() const override { return "InceptionAux"; }

 private:
  std::shared_ptr<Module> conv0_, conv1_, fc_;
};

}  // namespace

std::shared_ptr<Module> inception_aux(int64_t in, int64_t num_classes) {
  return std::make_shared<InceptionAux>(in, num_classes);
}

std::shared_ptr<Module> max_pool_3x3_s2() { return std::make_shared<MaxPool2d>(Pool2dGeometry::square(3, 2)); }

std::shared_ptr<Module> basic_conv(int64_t in, int64_t out, int kernel, int stride, int padding) {
  return std::make_shared<BasicConv2d>(in, out, kernel, kernel, stride, padding, padding);
}
std::shared_ptr<Module> basic_conv_hw(int64_t in, int64_t out, int kh, int kw, int ph, int pw) {
  return std::make_shared<BasicConv2d>(in, out, kh, kw, 1, ph, pw);
}

BasicConv2d::BasicConv2d(int64_t in, int64_t out, int kernel_h, int kernel_w, int stride, int pad_h, int pad_w) {
  const Conv2dGeometry g{stride, stride, pad_h, pad_h, pad_w, pad_w, 1, 1};
  conv_ = register_module("conv", std::make_shared<Conv2d>(in, out, kernel_h, kernel_w, g, /*bias=*/false));
  bn_ = register_module("bn", std::make_shared<BatchNorm2d>(out, /*eps=*/0.001));
}

std::string InceptionBlock::pool_name(const Branch& b, size_t index) {
  if (!b.pool_name.empty()) return b.pool_name;
  if (b.chain.empty()) return "branch" + std::to_string(index);
  const std::string& first = b.chain.front().first;
  if (first.size() > 2 && first.compare(first.size() - 2, 2, ".1") == 0) return first.substr(0, first.size() - 1) + "0";
  return "pool";
}

InceptionBlock::InceptionBlock(std::string type, std::vector<Branch> branches)
    : type_(std::move(type)), branches_(std::move(branches)) {
  for (size_t i = 0; i < branches_.size(); ++i) {
    const Branch& b = branches_[i];
    if (b.pool) register_module(pool_name(b, i), b.pool);
    for (const auto& [name, m] : b.chain) register_module(name, m);
    for (const auto& [name, m] : b.fork) register_module(name, m);
  }
}

Tensor InceptionBlock::concat_branches(const Tensor& x) {
  std::vector<Tensor> outs;
  for (const Branch& b : branches_) {
    Tensor y = b.pool ? b.pool->forward(x) : x;
    for (const auto& [name, m] : b.chain) y = m->forward(y);
    if (b.fork.empty()) {
      outs.push_back(y);
    } else {
      std::vector<Tensor> parts;
      for (const auto& [name, m] : b.fork) parts.push_back(m->forward(y));
      outs.push_back(concat(parts, 1));
    }
  }
  return concat(outs, 1);
}

InceptionV3::InceptionV3(int64_t num_classes, bool aux_logits, bool se) {
  stem_ = {{"Conv2d_1a_3x3", basic_conv(3, 32, 3, 2)},     {"Conv2d_2a_3x3", basic_conv(32, 32, 3)},
           {"Conv2d_2b_3x3", basic_conv(32, 64, 3, 1, 1)}, {"maxpool1", max_pool_3x3_s2()},
           {"Conv2d_3b_1x1", basic_conv(64, 80, 1)},       {"Conv2d_4a_3x3", basic_conv(80, 192, 3)},
           {"maxpool2", max_pool_3x3_s2()}};
  mixed_ = {{"Mixed_5b", inception_a(192, 32)}, {"Mixed_5c", inception_a(256, 64)}, {"Mixed_5d", inception_a(288, 64)},
            {"Mixed_6a", inception_b(288)},     {"Mixed_6b", inception_c(768, 128)}, {"Mixed_6c", inception_c(768, 160)},
            {"Mixed_6d", inception_c(768, 160)}, {"Mixed_6e", inception_c(768, 192)}, {"Mixed_7a", inception_d(768)},
            {"Mixed_7b", inception_e(1280)},    {"Mixed_7c", inception_e(2048)}};
  for (auto& [name, m] : stem_) register_module(name, m);
  const int64_t mixed_channels[] = {256, 288, 288, 768, 768, 768, 768, 768, 1280, 2048, 2048};
  for (size_t i = 0; i < mixed_.size(); ++i) {
    const auto& [name, m] = mixed_[i];
    register_module(name, m);
    if (se) se_.push_back(register_module(name + "_se", std::make_shared<SqueezeExcite>(mixed_channels[i])));
    if (name == "Mixed_6e" && aux_logits) aux_ = register_module("AuxLogits", inception_aux(768, num_classes));
  }
  dropout_ = register_module("dropout", std::make_shared<Dropout>(kInceptionDropout));
  fc_ = register_module("fc", std::make_shared<Linear>(2048, num_classes));
}

Tensor InceptionV3::features(const Tensor& x) {
  Tensor y = x;
  for (auto& [name, m] : stem_) y = m->forward(y);
  aux_out_ = Tensor();
  for (size_t i = 0; i < mixed_.size(); ++i) {
    y = mixed_[i].second->forward(y);
    if (!se_.empty()) y = se_[i]->forward(y);
    if (mixed_[i].first == "Mixed_6e") run_aux(aux_, y);
  }
  return mean(y, {2, 3});
}

}  // namespace nn
}  // namespace fgvc
