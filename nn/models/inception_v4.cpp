#include "nn/models/inception_v4.h"

namespace fgvc {
namespace nn {

namespace {

using Branch = InceptionBlock::Branch;

std::shared_ptr<Module> conv_1x7(int64_t in, int64_t out) { return basic_conv_hw(in, out, 1, 7, 0, 3); }
std::shared_ptr<Module> conv_7x1(int64_t in, int64_t out) { return basic_conv_hw(in, out, 7, 1, 3, 0); }
std::shared_ptr<Module> conv_1x3(int64_t in, int64_t out) { return basic_conv_hw(in, out, 1, 3, 0, 1); }
std::shared_ptr<Module> conv_3x1(int64_t in, int64_t out) { return basic_conv_hw(in, out, 3, 1, 1, 0); }
std::shared_ptr<Module> avg_pool() {  // 3x3, stride 1, pad 1, padding not counted
  return std::make_shared<AvgPool2d>(Pool2dGeometry::square(3, 1, 1, false, false));
}

std::shared_ptr<Module> block(const char* type, std::vector<Branch> branches) {
  return std::make_shared<InceptionBlock>(type, std::move(branches));
}

std::shared_ptr<Module> mixed_3a() {
  return block("Mixed3a", {{{}, max_pool_3x3_s2(), {}, "maxpool"}, {{{"conv", basic_conv(64, 96, 3, 2)}}, nullptr, {}}});
}

std::shared_ptr<Module> mixed_4a() {
  return block("Mixed4a",
               {{{{"branch0.0", basic_conv(160, 64, 1)}, {"branch0.1", basic_conv(64, 96, 3)}}, nullptr, {}},
                {{{"branch1.0", basic_conv(160, 64, 1)}, {"branch1.1", conv_1x7(64, 64)}, {"branch1.2", conv_7x1(64, 64)},
                  {"branch1.3", basic_conv(64, 96, 3)}},
                 nullptr,
                 {}}});
}

std::shared_ptr<Module> mixed_5a() {
  return block("Mixed5a", {{{{"conv", basic_conv(192, 192, 3, 2)}}, nullptr, {}}, {{}, max_pool_3x3_s2(), {}, "maxpool"}});
}

std::shared_ptr<Module> inception_a() {
  return block("InceptionA",
               {{{{"branch0", basic_conv(384, 96, 1)}}, nullptr, {}},
                {{{"branch1.0", basic_conv(384, 64, 1)}, {"branch1.1", basic_conv(64, 96, 3, 1, 1)}}, nullptr, {}},
                {{{"branch2.0", basic_conv(384, 64, 1)}, {"branch2.1", basic_conv(64, 96, 3, 1, 1)}, {"branch2.2", basic_conv(96, 96, 3, 1, 1)}},
                 nullptr,
                 {}},
                {{{"branch3.1", basic_conv(384, 96, 1)}}, avg_pool(), {}}});
}

std::shared_ptr<Module> reduction_a() {
  return block("ReductionA",
               {{{{"branch0", basic_conv(384, 384, 3, 2)}}, nullptr, {}},
                {{{"branch1.0", basic_conv(384, 192, 1)}, {"branch1.1", basic_conv(192, 224, 3, 1, 1)}, {"branch1.2", basic_conv(224, 256, 3, 2)}},
                 nullptr,
                 {}},
                {{}, max_pool_3x3_s2(), {}}});
}

std::shared_ptr<Module> inception_b() {
  return block("InceptionB",
               {{{{"branch0", basic_conv(1024, 384, 1)}}, nullptr, {}},
                {{{"branch1.0", basic_conv(1024, 192, 1)}, {"branch1.1", conv_1x7(192, 224)}, {"branch1.2", conv_7x1(224, 256)}},
                 nullptr,
                 {}},
                {{{"branch2.0", basic_conv(1024, 192, 1)}, {"branch2.1", conv_7x1(192, 192)}, {"branch2.2", conv_1x7(192, 224)},
                  {"branch2.3", conv_7x1(224, 224)}, {"branch2.4", conv_1x7(224, 256)}},
                 nullptr,
                 {}},
                {{{"branch3.1", basic_conv(1024, 128, 1)}}, avg_pool(), {}}});
}

std::shared_ptr<Module> reduction_b() {
  return block("ReductionB",
               {{{{"branch0.0", basic_conv(1024, 192, 1)}, {"branch0.1", basic_conv(192, 192, 3, 2)}}, nullptr, {}},
                {{{"branch1.0", basic_conv(1024, 256, 1)}, {"branch1.1", conv_1x7(256, 256)}, {"branch1.2", conv_7x1(256, 320)},
                  {"branch1.3", basic_conv(320, 320, 3, 2)}},
                 nullptr,
                 {}},
                {{}, max_pool_3x3_s2(), {}}});
}

std::shared_ptr<Module> inception_c() {
  return block("InceptionC",
               {{{{"branch0", basic_conv(1536, 256, 1)}}, nullptr, {}},
                {{{"branch1_0", basic_conv(1536, 384, 1)}},
                 nullptr,
                 {{"branch1_1a", conv_1x3(384, 256)}, {"branch1_1b", conv_3x1(384, 256)}}},
                {{{"branch2_0", basic_conv(1536, 384, 1)}, {"branch2_1", conv_3x1(384, 448)}, {"branch2_2", conv_1x3(448, 512)}},
                 nullptr,
                 {{"branch2_3a", conv_1x3(512, 256)}, {"branch2_3b", conv_3x1(512, 256)}}},
                {{{"branch3.1", basic_conv(1536, 256, 1)}}, avg_pool(), {}}});
}

}  // namespace

InceptionV4::InceptionV4(int64_t num_classes, bool aux_classifier) {
  std::vector<std::shared_ptr<Module>> f = {basic_conv(3, 32, 3, 2), basic_conv(32, 32, 3), basic_conv(32, 64, 3, 1, 1),
                                            mixed_3a(), mixed_4a(), mixed_5a()};
  for (int i = 0; i < 4; ++i) f.push_back(inception_a());
  f.push_back(reduction_a());
  for (int i = 0; i < 7; ++i) f.push_back(inception_b());
  f.push_back(reduction_b());
  for (int i = 0; i < 3; ++i) f.push_back(inception_c());
  auto features = std::make_shared<Sequential>(f);
  register_module("features", features);
  features_ = f;
  if (aux_classifier) aux_ = register_module("AuxLogits", inception_aux(1024, num_classes));
  dropout_ = register_module("dropout", std::make_shared<Dropout>(kInceptionDropout));
  last_linear_ = register_module("last_linear", std::make_shared<Linear>(1536, num_classes));
}

Tensor InceptionV4::features(const Tensor& x) {
  constexpr size_t kMixed6h = 17;  // the last of the 7 Inception-B blocks: the 17 x 17 grid
  Tensor y = x;
  for (size_t i = 0; i < features_.size(); ++i) {
    y = features_[i]->forward(y);
    if (i == kMixed6h) run_aux(aux_, y);
  }
  return mean(y, {2, 3});
}

}  // namespace nn
}  // namespace fgvc
