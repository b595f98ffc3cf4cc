#include "nn/models/registry.h"

#include <functional>
#include <map>

#include "nn/models/inception_v3.h"
#include "nn/models/inception_resnet_v2.h"
#include "nn/models/inception_v4.h"
#include "nn/models/resnet.h"
#include "nn/models/resnet_cifar.h"
#include "tensor/safetensors.h"
#include "nn/models/resnet_v2.h"

namespace fgvc {
namespace nn {

namespace {
using Factory = std::function<std::shared_ptr<Classifier>(int64_t, bool)>;
const std::map<std::string, Factory>& factories() {
  static const std::map<std::string, Factory> f = {
      {"resnet20", [](int64_t k, bool) { return std::make_shared<ResNetCifar>(20, k); }},
      {"resnet32", [](int64_t k, bool) { return std::make_shared<ResNetCifar>(32, k); }},
      {"resnet56", [](int64_t k, bool) { return std::make_shared<ResNetCifar>(56, k); }},
      {"resnet50", [](int64_t k, bool) { return std::make_shared<ResNet>(std::vector<int>{3, 4, 6, 3}, k); }},
      {"resnet101", [](int64_t k, bool) { return std::make_shared<ResNet>(std::vector<int>{3, 4, 23, 3}, k); }},
      {"resnet152", [](int64_t k, bool) { return std::make_shared<ResNet>(std::vector<int>{3, 8, 36, 3}, k); }},
      {"resnetv2_50", [](int64_t k, bool) { return std::make_shared<ResNetV2>(std::vector<int>{3, 4, 6, 3}, k); }},
      {"resnetv2_101", [](int64_t k, bool) { return std::make_shared<ResNetV2>(std::vector<int>{3, 4, 23, 3}, k); }},
      {"resnetv2_152", [](int64_t k, bool) { return std::make_shared<ResNetV2>(std::vector<int>{3, 8, 36, 3}, k); }},
      {"seresnet50", [](int64_t k, bool) { return std::make_shared<ResNet>(std::vector<int>{3, 4, 6, 3}, k, true); }},
      {"inception_v3", [](int64_t k, bool) { return std::make_shared<InceptionV3>(k, /*aux_logits=*/true); }},
      {"inception_v4", [](int64_t k, bool aux) { return std::make_shared<InceptionV4>(k, aux); }},
      {"inception_resnet_v2", [](int64_t k, bool aux) { return std::make_shared<InceptionResNetV2>(k, false, aux); }},
      {"inception_v3_se", [](int64_t k, bool) { return std::make_shared<InceptionV3>(k, true, /*se=*/true); }},
      {"inception_resnet_v2_se", [](int64_t k, bool aux) { return std::make_shared<InceptionResNetV2>(k, true, aux); }},
  };
  return f;
}
}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> out;
  for (auto& [name, f] : factories()) out.push_back(name);
  return out;
}

bool is_inception(const std::string& model) { return model.rfind("inception", 0) == 0; }

namespace {
// An unknown name is an error listing the known ones.
void check_known(const std::string& model) {
  if (factories().count(model)) return;
  std::string known;
  for (const std::string& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  throw Error("create_model: unknown model '" + model + "' (known: " + known + ")");
}
}  // namespace

int default_input_size(const std::string& model) {
  check_known(model);
  // The paper trains every network at 299 (SPEC.md section 4); the CIFAR-style ResNets at 32.
  if (model == "resnet20" || model == "resnet32" || model == "resnet56") return 32;
  return 299;
}

int min_input_size(const std::string& model, bool aux_classifier_in_training) {
  check_known(model);
  if (aux_classifier_in_training && is_inception(model)) return 299;
  return is_inception(model) ? 75 : 1;
}

Tensor classifier_weight(const std::map<std::string, Tensor>& weights) {
  for (const char* name : {"fc.weight", "last_linear.weight", "classif.weight", "head.fc.weight", "linear.weight"}) {
    const auto it = weights.find(name);
    if (it == weights.end()) continue;
    const Tensor& w = it->second;  // [K, D], or [K, D, 1, 1] for a 1x1 convolution head
    if (w.dim() == 2 || (w.dim() == 4 && w.size(2) == 1 && w.size(3) == 1)) return w.reshape({w.size(0), w.size(1)});
  }
  return Tensor();
}

std::map<std::string, Tensor> model_weights(const SafetensorsFile& file, bool prefer_ema, bool* used_ema) {
  if (used_ema) *used_ema = false;
  const auto format = file.metadata.find("format");
  if (format == file.metadata.end() || format->second != kCheckpointFormat) return file.tensors;
  bool has_ema = false;
  for (const auto& [name, t] : file.tensors) has_ema |= name.rfind(kEmaPrefix, 0) == 0;
  const bool ema = prefer_ema && has_ema;
  std::map<std::string, Tensor> out;
  for (const auto& [name, t] : file.tensors) {
    if (name.rfind(kOptimizerPrefix, 0) == 0) continue;
    const bool is_ema = name.rfind(kEmaPrefix, 0) == 0;
    if (is_ema && ema) out[name.substr(std::string(kEmaPrefix).size())] = t;  // the average wins
    else if (!is_ema) out.emplace(name, t);  // kept unless an average came first
  }
  if (used_ema) *used_ema = ema;
  return out;
}

std::map<std::string, Tensor> read_model_weights(const std::string& path, bool prefer_ema, bool* used_ema) {
  const SafetensorsFile file = read_safetensors(path);  // its errors name the file
  // Weights in 8-bit floats (a quantised export) are not weights fgvc can load: said here,
  // by name, rather than as the parameters a model then finds missing.
  if (!file.unsupported.empty()) {
    std::string unread;
    for (const auto& [name, dtype] : file.unsupported) unread += (unread.empty() ? "" : ", ") + name + " (" + dtype + ")";
    throw Error(path + ": tensors of types fgvc does not read: " + unread);
  }
  return model_weights(file, prefer_ema, used_ema);
}

Module::LoadReport load_weights(Classifier& model, const std::string& path, bool reset_classifier, bool strict) {
  std::map<std::string, Tensor> weights = read_model_weights(path);  // its errors name the file
  try {
    return load_weights(model, std::move(weights), reset_classifier, strict);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
}

Module::LoadReport load_weights(Classifier& model, std::map<std::string, Tensor> weights, bool reset_classifier,
                                bool strict) {
  const auto starts = [](const std::string& name, const std::string& prefix) { return name.rfind(prefix, 0) == 0; };
  const std::map<std::string, Tensor> own = model.state_dict();
  // The model's own tensors under `prefix` stand in for the file's, as if read from it.
  const auto keep_own = [&](const std::string& prefix) {
    for (const auto& [name, t] : own)
      if (starts(name, prefix)) weights[name] = t.detach().clone();
  };
  for (const std::string& prefix : model.optional_prefixes()) {
    bool in_file = false, in_model = false;
    for (const auto& [name, t] : weights) in_file = in_file || starts(name, prefix);
    for (const auto& [name, t] : own) in_model = in_model || starts(name, prefix);
    if (!in_file) keep_own(prefix);  // left out altogether (a partial head stays an error)
    if (in_file && !in_model)        // a head this model was built without: not used
      for (auto it = weights.begin(); it != weights.end();) it = starts(it->first, prefix) ? weights.erase(it) : std::next(it);
  }
  // Batch norm's step counter is training bookkeeping that many exported files (timm's among
  // them) leave out; PyTorch's loader fills it in too. A file without it keeps the model's.
  const std::string counter = "num_batches_tracked";
  for (const auto& [name, t] : own)
    if (name.size() > counter.size() && name.compare(name.size() - counter.size(), counter.size(), counter) == 0 &&
        !weights.count(name))
      weights[name] = t.detach().clone();
  if (reset_classifier)
    for (const std::string& prefix : model.classifier_prefixes()) {
      for (auto it = weights.begin(); it != weights.end();) it = starts(it->first, prefix) ? weights.erase(it) : std::next(it);
      keep_own(prefix);  // the new classifier stays as initialised
    }
  return model.load_state_dict(weights, strict);
}

std::shared_ptr<Classifier> create_model(const std::string& name, int64_t num_classes, bool aux_classifier) {
  FGVC_CHECK(num_classes > 0, "create_model", "num_classes must be positive, got ", num_classes);
  check_known(name);
  return factories().at(name)(num_classes, aux_classifier);
}

}  // namespace nn
}  // namespace fgvc
