#include "nn/models/registry.h"

#include <functional>
#include <map>

#include "nn/models/inception_v3.h"
#include "nn/models/inception_resnet_v2.h"
#include "nn/models/inception_v4.h"
#include "nn/models/resnet.h"
#include "tensor/safetensors.h"
#include "nn/models/resnet_v2.h"

namespace fgvc {
namespace nn {

namespace {
using Factory = std::function<std::shared_ptr<Classifier>(int64_t)>;
const std::map<std::string, Factory>& factories() {
  static const std::map<std::string, Factory> f = {
      {"resnet50", [](int64_t k) { return std::make_shared<ResNet>(std::vector<int>{3, 4, 6, 3}, k); }},
      {"resnet101", [](int64_t k) { return std::make_shared<ResNet>(std::vector<int>{3, 4, 23, 3}, k); }},
      {"resnet152", [](int64_t k) { return std::make_shared<ResNet>(std::vector<int>{3, 8, 36, 3}, k); }},
      {"resnetv2_50", [](int64_t k) { return std::make_shared<ResNetV2>(std::vector<int>{3, 4, 6, 3}, k); }},
      {"resnetv2_101", [](int64_t k) { return std::make_shared<ResNetV2>(std::vector<int>{3, 4, 23, 3}, k); }},
      {"resnetv2_152", [](int64_t k) { return std::make_shared<ResNetV2>(std::vector<int>{3, 8, 36, 3}, k); }},
      {"seresnet50", [](int64_t k) { return std::make_shared<ResNet>(std::vector<int>{3, 4, 6, 3}, k, true); }},
      {"inception_v3", [](int64_t k) { return std::make_shared<InceptionV3>(k, /*aux_logits=*/true); }},
      {"inception_v4", [](int64_t k) { return std::make_shared<InceptionV4>(k); }},
      {"inception_resnet_v2", [](int64_t k) { return std::make_shared<InceptionResNetV2>(k); }},
      {"inception_v3_se", [](int64_t k) { return std::make_shared<InceptionV3>(k, true, /*se=*/true); }},
      {"inception_resnet_v2_se", [](int64_t k) { return std::make_shared<InceptionResNetV2>(k, /*se=*/true); }},
  };
  return f;
}
}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> out;
  for (auto& [name, f] : factories()) out.push_back(name);
  return out;
}

Tensor classifier_weight(const std::map<std::string, Tensor>& weights) {
  for (const char* name : {"fc.weight", "last_linear.weight", "classif.weight", "head.fc.weight"}) {
    const auto it = weights.find(name);
    if (it == weights.end()) continue;
    const Tensor& w = it->second;  // [K, D], or [K, D, 1, 1] for a 1x1 convolution head
    if (w.dim() == 2 || (w.dim() == 4 && w.size(2) == 1 && w.size(3) == 1)) return w.reshape({w.size(0), w.size(1)});
  }
  return Tensor();
}

Module::LoadReport load_weights(Classifier& model, const std::string& path, bool reset_classifier, bool strict) {
  std::map<std::string, Tensor> weights = read_safetensors(path).tensors;
  if (reset_classifier) {
    const std::string prefix = model.classifier_prefix();
    for (auto it = weights.begin(); it != weights.end();)
      it = it->first.rfind(prefix, 0) == 0 ? weights.erase(it) : std::next(it);
    // The model's own classifier stays as initialised: take it as if from the file.
    for (const auto& [name, t] : model.state_dict())
      if (name.rfind(prefix, 0) == 0) weights[name] = t.detach().clone();
  }
  try {
    return model.load_state_dict(weights, strict);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

std::shared_ptr<Classifier> create_model(const std::string& name, int64_t num_classes) {
  FGVC_CHECK(num_classes > 0, "create_model", "num_classes must be positive, got ", num_classes);
  const auto it = factories().find(name);
  if (it == factories().end()) {
    std::string known;
    for (const std::string& n : model_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("create_model: unknown model '" + name + "' (known: " + known + ")");
  }
  return it->second(num_classes);
}

}  // namespace nn
}  // namespace fgvc
