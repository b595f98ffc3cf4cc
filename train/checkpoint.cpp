#include "train/checkpoint.h"

#include <nlohmann/json.hpp>

#include "nn/models/registry.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"

namespace fgvc {
namespace train {

using json = nlohmann::json;

void save_checkpoint(const std::string& path, const nn::Module& model, const optim::Optimizer* optimizer,
                     const optim::EMA* ema, const TrainPosition& p) {
  std::map<std::string, Tensor> tensors = model.state_dict();
  if (ema)
    for (const auto& [name, t] : ema->shadow()) tensors[nn::kEmaPrefix + name] = t;
  if (optimizer)
    for (const auto& [name, t] : optimizer->state()) tensors[nn::kOptimizerPrefix + name] = t;
  const json position = {{"model", p.model},         {"num_classes", p.num_classes}, {"step", p.step},
                         {"epoch", p.epoch},         {"batch", p.batch}, {"world_size", p.world_size}, {"batch_size", p.batch_size},             {"lr", p.lr},
                         {"rng_seed", p.rng_seed},   {"rng_offset", p.rng_offset},   {"best_top1", p.best_top1},
                         {"best_epoch", p.best_epoch}, {"best_partial", p.best_partial},
                         {"window_loss", p.window_loss}, {"window_steps", p.window_steps},
                         {"epoch_loss", p.epoch_loss}, {"epoch_steps", p.epoch_steps},
                         {"epoch_correct", p.epoch_correct}, {"epoch_images", p.epoch_images},
                         {"epoch_skipped", p.epoch_skipped},
                         {"loss_scale", p.loss_scale}, {"scale_good_steps", p.scale_good_steps},
                         {"skipped_steps", p.skipped_steps}};
  std::map<std::string, std::string> metadata = {{"format", nn::kCheckpointFormat}, {"position", position.dump()}};
  if (!p.classes.empty()) metadata["classes"] = json(p.classes).dump();
  if (!p.settings.empty()) metadata["settings"] = p.settings;
  write_safetensors(path, tensors, metadata);
}

namespace {
std::vector<std::string> classes_of(const std::map<std::string, std::string>& metadata, const std::string& path) {
  const auto it = metadata.find("classes");
  if (it == metadata.end()) return {};
  try {
    return json::parse(it->second).get<std::vector<std::string>>();
  } catch (const json::exception& e) {
    throw Error(path + ": metadata \"classes\" is not a JSON list of names: " + e.what());
  }
}
}  // namespace

namespace {
// Every model has weights named "<layer>.weight"; a file without one (a domain file of
// fgvc-extract, with its own "classes"; fgvc-infer's input) is not weights.
void check_holds_weights(const SafetensorsHeader& header, const std::string& path) {
  bool has_weight = false;
  std::string names;
  for (const SafetensorsEntry& e : header.entries) {
    has_weight = has_weight || (e.name.size() > 7 && e.name.compare(e.name.size() - 7, 7, ".weight") == 0);
    if (names.size() < 80) names += (names.empty() ? "" : ", ") + e.name;
  }
  FGVC_CHECK(has_weight, path, "holds no model weights (its tensors: ", names.empty() ? "none" : names,
             "); give a weights file or an fgvc-train checkpoint");
}
}  // namespace

RecordedRun read_recorded_run(const std::string& path) {
  const SafetensorsHeader header = read_safetensors_header(path);
  check_holds_weights(header, path);
  RecordedRun run;
  run.path = path;
  run.classes = classes_of(header.metadata, path);
  // The position and settings are fgvc's own JSON; anything else there records nothing.
  const auto json_of = [&](const char* key) {
    const auto it = header.metadata.find(key);
    return it == header.metadata.end() ? json() : json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  };
  const json position = json_of("position");
  if (position.is_object() && position.contains("model") && position.at("model").is_string())
    run.model = position.at("model").get<std::string>();
  const json settings = json_of("settings");
  if (settings.is_object() && settings.contains("input_size") && settings.at("input_size").is_number_integer()) {
    const int64_t size = settings.at("input_size").get<int64_t>();
    if (size > 0 && size <= 100000) run.input_size = static_cast<int>(size);
  }
  return run;
}

void RecordedRun::check_model(const std::string& wanted) const {
  FGVC_CHECK(model.empty() || model == wanted, path, "a checkpoint of ", model, ", not of ", wanted, " (give --model ",
             model, ")");
}

std::string checkpoint_settings(const std::string& path) {
  const SafetensorsHeader header = read_safetensors_header(path);
  const auto it = header.metadata.find("settings");
  return it == header.metadata.end() ? std::string() : it->second;
}

Checkpoint load_checkpoint(const std::string& path) {
  SafetensorsFile file = read_safetensors(path);
  const auto format = file.metadata.find("format");
  const auto position = file.metadata.find("position");
  FGVC_CHECK(format != file.metadata.end() && format->second == nn::kCheckpointFormat && position != file.metadata.end(),
             "checkpoint", path, ": not an fgvc-train checkpoint (no format/position metadata)");
  Checkpoint c;
  try {
    const json j = json::parse(position->second);
    TrainPosition& p = c.position;
    p.model = j.at("model").get<std::string>();
    p.num_classes = j.at("num_classes").get<int64_t>();
    p.step = j.at("step").get<int64_t>();
    p.epoch = j.at("epoch").get<int64_t>();
    p.batch = j.at("batch").get<int64_t>();
    p.world_size = j.value("world_size", 1);
    p.batch_size = j.value("batch_size", int64_t(0));
    p.lr = j.at("lr").get<double>();
    p.rng_seed = j.at("rng_seed").get<uint64_t>();
    p.rng_offset = j.at("rng_offset").get<uint64_t>();
    p.best_top1 = j.at("best_top1").get<double>();
    p.best_epoch = j.at("best_epoch").get<int64_t>();
    p.best_partial = j.at("best_partial").get<bool>();
    p.window_loss = j.at("window_loss").get<double>();
    p.window_steps = j.at("window_steps").get<int64_t>();
    p.epoch_loss = j.value("epoch_loss", 0.0);  // absent in checkpoints of before 2026-11-27
    p.epoch_steps = j.value("epoch_steps", int64_t(0));
    p.epoch_correct = j.value("epoch_correct", 0.0);  // absent in checkpoints of before 2026-11-27 (fifth session)
    p.epoch_images = j.value("epoch_images", 0.0);
    p.epoch_skipped = j.value("epoch_skipped", int64_t{0});  // absent before 2026-11-28 (tenth session)
    p.loss_scale = j.at("loss_scale").get<double>();
    p.scale_good_steps = j.at("scale_good_steps").get<int64_t>();
    p.skipped_steps = j.at("skipped_steps").get<int64_t>();
  } catch (const json::exception& e) {
    throw Error("checkpoint: " + path + ": bad position metadata: " + e.what());
  }
  c.position.classes = classes_of(file.metadata, path);
  const auto settings = file.metadata.find("settings");
  if (settings != file.metadata.end()) c.position.settings = settings->second;
  const std::string ema = nn::kEmaPrefix, opt = nn::kOptimizerPrefix;
  for (auto& [name, t] : file.tensors) {
    if (name.rfind(ema, 0) == 0) c.ema[name.substr(ema.size())] = t;
    else if (name.rfind(opt, 0) == 0) c.optimizer[name.substr(opt.size())] = t;
    else c.model[name] = t;
  }
  return c;
}

}  // namespace train
}  // namespace fgvc
