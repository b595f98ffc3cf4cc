// Agreement with torchvision on every CI run: single blocks of each kind with torchvision's
// weights, inputs and outputs (tests/data/golden_blocks.safetensors, made by
// tools/golden_torchvision.py --fixture), loaded by name and run in evaluation mode.
#include "nn/models/inception_v3.h"
#include "nn/models/resnet.h"
#include "tensor/safetensors.h"
#include "test_util.h"

namespace fgvc {
namespace {

TEST(GoldenTorchvision, BlocksMatchTorchvisionOutputs) {
  const SafetensorsFile f = read_safetensors(FGVC_TEST_DATA "/golden_blocks.safetensors");
  const std::vector<std::pair<std::string, std::shared_ptr<nn::Module>>> blocks = {
      {"bottleneck", std::make_shared<nn::Bottleneck>(32, 16, 2, false)},
      {"inception_a", nn::inception_a(24, 8)},
      {"inception_b", nn::inception_b(16)},
      {"inception_c", nn::inception_c(32, 8)},
      {"basic_conv", std::make_shared<nn::BasicConv2d>(3, 8, 3, 2)},
  };
  for (const auto& [name, block] : blocks) {
    std::map<std::string, Tensor> weights;
    for (const auto& [key, t] : f.tensors)
      if (key.rfind(name + ".", 0) == 0 && key.find(".__") == std::string::npos) weights[key.substr(name.size() + 1)] = t;
    block->load_state_dict(weights, /*strict=*/true);
    block->eval();
    NoGradGuard no_grad;
    const Tensor y = block->forward(f.tensors.at(name + ".__input"));
    const Tensor& want = f.tensors.at(name + ".__output");
    ASSERT_EQ(y.shape(), want.shape()) << name;
    EXPECT_LT(testing::rel_error(y, want), 1e-5) << name;
  }
}

}  // namespace
}  // namespace fgvc
