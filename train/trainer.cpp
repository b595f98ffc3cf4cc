#include "train/trainer.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "autograd/autocast.h"
#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "autograd/nn_ops.h"
#include "autograd/ops.h"
#include "data/loader.h"
#include "kernels/conv2d.h"
#include "dist/communicator.h"
#include "dist/gradient_reducer.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"
#include "kernels/topk.h"
#include "nn/layers.h"
#include "nn/models/registry.h"
#include "optim/grad_scaler.h"
#include "optim/optimizer.h"
#include "tensor/atomic_file.h"
#include "tensor/cuda_runtime.h"
#include "tensor/error.h"
#include "tensor/warning.h"
#include "tensor/random.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/plots.h"
#include "train/progress.h"
#include "train/stop_request.h"

namespace fgvc {
namespace train {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

TrainConfig resolve_defaults(TrainConfig c) {
  if (c.input_size <= 0) c.input_size = nn::default_input_size(c.model);
  if (c.decay_epochs <= 0) c.decay_epochs = 2.0;
  if (c.bn_decay < 0) c.bn_decay = nn::is_inception(c.model) ? 0.9997 : 0.9;
  if (c.min_crop_area <= 0) c.min_crop_area = data::default_area_min(data::crop_style(c.crop));
  return c;
}

namespace {
json config_object(const TrainConfig& c) {
  return json{{"model", c.model},
              {"data", c.data},
              {"val", c.val},
              {"train_counts_from", c.train_counts},
              {"out", c.out},
              {"input_size", c.input_size},
              {"batch_size", c.batch_size},
              {"epochs", c.epochs},
              {"steps", c.steps},
              {"optimizer", c.optimizer},
              {"lr", c.lr},
              {"lr_decay", c.lr_decay},
              {"decay_epochs", c.decay_epochs},
              {"momentum", c.momentum},
              {"rmsprop_decay", c.rmsprop_decay},
              {"epsilon", c.epsilon},
              {"label_smoothing", c.label_smoothing},
              {"weight_decay", c.weight_decay},
              {"aux_weight", c.aux_weight},
              {"ema_decay", c.ema_decay},
              {"bn_decay", c.bn_decay},
              {"clip_grad_norm", c.clip_grad_norm},
              {"init", c.init},
              {"reset_classifier", c.reset_classifier},
              {"resume", c.resume},
              {"seed", c.seed},
              {"workers", c.workers},
              {"color_distort", c.color_distort},
              {"crop", c.crop},
              {"min_crop_area", c.min_crop_area},
              {"min_crop_covered", c.min_crop_covered},
              {"amp", c.amp},
              {"cudnn_benchmark", c.cudnn_benchmark},
              {"gpus", c.gpus},
              {"sync_bn", c.sync_bn},
              {"world_size", 1},
              {"log_every", c.log_every},
              {"save_every", c.save_every}};
}
}  // namespace

// Paths that are not UTF-8 are written with U+FFFD for their odd bytes: config.json records them,
// and --resume compares no path.
std::string config_json(const TrainConfig& c) {
  return config_object(resolve_defaults(c)).dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

// --resume continues the run as it was set up: every setting that shapes its trajectory (the
// data's classes and counts, the model, the optimizer and its schedule, augmentation, the
// moving average, the seed) must be the run's. --steps and --epochs may grow; the workers,
// logging, devices and paths may change.
constexpr const char* kTrajectoryKeys[] = {
    "model", "input_size", "optimizer", "lr", "lr_decay", "decay_epochs", "momentum", "rmsprop_decay", "epsilon",
    "label_smoothing", "weight_decay", "aux_weight", "ema_decay", "bn_decay", "clip_grad_norm", "seed", "color_distort",
    "crop", "min_crop_area", "min_crop_covered", "amp", "sync_bn", "classes", "train_counts"};

// How a setting of this run differs from the run's: `2 (was 1)`; a list (the classes, their
// training images) by its first difference.
std::string setting_difference(const std::string& key, const json& now, const json& was) {
  if (!now.is_array() || !was.is_array()) return now.dump() + " (was " + was.dump() + ")";
  if (key == "classes") {
    try {
      return "(" + data::class_difference(was.get<std::vector<std::string>>(), "the run", now.get<std::vector<std::string>>(),
                                          "--data") + ")";
    } catch (const json::exception&) {  // not a list of names: a file from elsewhere
    }
  }
  if (now.size() != was.size())
    return "(" + std::to_string(now.size()) + " values, the run's " + std::to_string(was.size()) + ")";
  for (size_t i = 0; i < now.size(); ++i)
    if (now[i] != was[i])
      return "(value " + std::to_string(i) + " " + now[i].dump() + ", the run's " + was[i].dump() + ")";
  return "(not the run's)";
}

// What a checkpoint records of its run (its metadata's "settings"): those settings, and what the
// run started from (--init, --reset-classifier), which a resumed run keeps.
json run_record(const json& now, const json& started_as) {
  json record = json::object();
  for (const char* key : kTrajectoryKeys) record[key] = now.at(key);
  for (const char* key : {"init", "reset_classifier"}) record[key] = started_as.contains(key) ? started_as[key] : now.at(key);
  return record;
}

// The run's settings, from its config.json, or where the folder has none (a checkpoint copied
// alone), from the checkpoint's record of them; checked against this command's (`now`).
// Checkpoints of before 2026-11-29 record none: then only their own checks apply (the model,
// the classes, the global batch). Returns the record (empty where there is none).
json check_same_run(const std::string& config_path, const std::string& last_path, const json& now) {
  json was;
  std::string source = config_path;
  if (fs::exists(config_path)) {
    try {
      std::ifstream in(config_path);
      was = json::parse(in);
    } catch (const std::exception& e) {
      throw Error(config_path + ": not a run's config.json (" + e.what() + ")");
    }
    if (!was.is_object()) throw Error(config_path + ": not a run's config.json");
  } else {
    source = last_path;
    const std::string recorded = checkpoint_settings(last_path);
    if (recorded.empty()) return {};
    try {
      was = json::parse(recorded);
    } catch (const std::exception& e) {
      throw Error(last_path + ": bad \"settings\" metadata (" + e.what() + ")");
    }
    if (!was.is_object()) throw Error(last_path + ": bad \"settings\" metadata (not a JSON object)");
  }
  std::string differences;
  // (The global batch is the checkpoint's to check: its message says which --batch-size fits.)
  for (const char* key : kTrajectoryKeys) {
    // A key that runs of earlier versions did not record: the value they all used.
    if (!was.contains(key) && std::string(key) == "min_crop_covered") was[key] = 0.1;
    if (!was.contains(key) && std::string(key) == "crop") was[key] = "tf-slim";
    if (!was.contains(key) || was[key] == now.at(key)) continue;
    differences += std::string(differences.empty() ? "" : ", ") + key + " " + setting_difference(key, now.at(key), was[key]);
  }
  FGVC_CHECK(differences.empty(), "--resume", "this run is not the one in ", source, ": ", differences,
             "; give the run's own settings to continue it, or another --out for a new run");
  return was;
}

// --init: the weights of another run (stage 2 of the paper's recipe starts from stage 1's).
// A checkpoint that records its classes is matched to --data's by name: the classifier rows
// follow the names when the same classes come in another order (an ImageFolder sorts them by
// name, a COCO/iNat JSON by category id), and other classes need --reset-classifier.
void init_weights(nn::Classifier& model, const TrainConfig& c, const data::Dataset& train_set) {
  const std::vector<std::string> recorded = prefix_errors("--init", [&] {
    const RecordedRun run = read_recorded_run(c.init);
    run.check_model(c.model);
    return run.classes;
  });
  if (c.reset_classifier || recorded.empty() || train_set.numbered || recorded == train_set.classes) {
    const nn::Module::LoadReport report =
        prefix_errors("--init", [&] { return nn::load_weights(model, c.init, c.reset_classifier, /*strict=*/false); });
    if (report.ok()) return;
    // Only the classifiers' shapes differ: a network trained for other classes (ImageNet's
    // 1000), which fine-tuning gives a new classifier.
    const auto in_classifier = [&](const std::string& what) {
      for (const std::string& prefix : model.classifier_prefixes())
        if (what.rfind(prefix, 0) == 0) return true;
      return false;
    };
    const bool classifier_only = report.missing.empty() && report.unexpected.empty() &&
                                 std::all_of(report.mismatched.begin(), report.mismatched.end(), in_classifier);
    throw Error("--init: " + c.init + ": load_state_dict: " + report.str() +
                (classifier_only ? "; a classifier for other classes: add --reset-classifier to fine-tune with a new one"
                                 : ""));
  }
  std::map<std::string, int64_t> row_of;
  for (size_t i = 0; i < recorded.size(); ++i) row_of[recorded[i]] = static_cast<int64_t>(i);
  std::vector<int64_t> rows;
  for (const std::string& name : train_set.classes) {
    const auto it = row_of.find(name);
    FGVC_CHECK(it != row_of.end() && recorded.size() == train_set.classes.size(), "--init", c.init,
               ": trained on other classes than --data ", c.data, " has (",
               data::class_difference(recorded, "the checkpoint", train_set.classes, "--data"),
               "); add --reset-classifier to fine-tune with a new classifier");
    rows.push_back(it->second);
  }
  std::map<std::string, Tensor> weights = prefix_errors("--init", [&] { return nn::read_model_weights(c.init); });
  for (auto& [name, t] : weights)
    for (const std::string& prefix : model.classifier_prefixes()) {
      if (name.rfind(prefix, 0) != 0 || t.dim() < 1 || t.size(0) != static_cast<int64_t>(rows.size())) continue;
      Tensor reordered = Tensor::empty(t.shape(), t.dtype(), t.device());
      for (size_t j = 0; j < rows.size(); ++j)
        reordered.slice(0, static_cast<int64_t>(j), static_cast<int64_t>(j) + 1).copy_(t.slice(0, rows[j], rows[j] + 1));
      t = reordered;
    }
  try {
    nn::load_weights(model, std::move(weights), false);
  } catch (const Error& e) {
    throw Error("--init: " + c.init + ": " + e.what());
  }
}

// Puts the dropout generator at step `pos.step`'s own place for this rank: rank r's step s
// draws from offset + r 2^48 + s 2^24 (2^24 blocks a step, far more than dropout takes), so a
// step's masks follow from the run's start, the step and the rank alone. A resumed run, on
// any rank, draws what the uninterrupted one did, however many values each earlier step took
// (ranks' shares of a batch differ where files are unreadable).
void dropout_stream(const TrainPosition& pos, int rank) {
  default_generator().set_state(pos.rng_seed, pos.rng_offset + (static_cast<uint64_t>(rank) << 48) +
                                                  (static_cast<uint64_t>(pos.step) << 24));
}

void set_batch_norm_momentum(nn::Module& m, double momentum) {
  if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(&m)) bn->momentum = momentum;
  for (auto& [name, child] : m.named_children()) set_batch_norm_momentum(*child, momentum);
}

// What the moving average follows: the parameters and the floating-point buffers (batch-norm
// statistics), as TF-slim averages its moving_average_variables too.
optim::NamedTensors averaged_weights(const nn::Module& m) {
  optim::NamedTensors out = m.named_parameters();
  for (auto& [name, b] : m.named_buffers())
    if (b.dtype() == DType::Float32) out.emplace_back(name, b);
  return out;
}

// Runs `fn` with the moving average loaded into the model, then puts the trained weights back.
template <class Fn>
void with_average(nn::Module& model, const optim::EMA* ema, Fn fn) {
  if (!ema) return fn();
  NoGradGuard no_grad;
  optim::NamedTensors weights = averaged_weights(model);
  std::vector<Tensor> saved;
  for (auto& [name, w] : weights) {
    saved.push_back(w.detach().clone());
    w.copy_(ema->shadow().at(name));
  }
  try {
    fn();
  } catch (...) {
    for (size_t i = 0; i < weights.size(); ++i) weights[i].second.copy_(saved[i]);
    throw;
  }
  for (size_t i = 0; i < weights.size(); ++i) weights[i].second.copy_(saved[i]);
}

// metrics.jsonl: appended line by line; on --resume the lines after the checkpoint's step are
// dropped first, so the file reads as one uninterrupted run. Where the run goes on past the
// checkpoint, so are the lines that only the end of the earlier run wrote: its last step's
// (unless a log interval ends there too) and its partial epoch's.
class MetricsLog {
 public:
  MetricsLog(const std::string& path, bool resume, int64_t resume_step, int64_t resume_epochs_done, bool continuing,
             bool window_open, bool enabled)
      : path_(path) {
    if (!enabled) return;  // another rank writes it
    if (resume && fs::exists(path)) {
      std::ifstream in(path);
      std::ostringstream kept;
      std::string line;
      while (std::getline(in, line)) {
        if (line.empty()) continue;
        const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (!j.is_object()) continue;
        const int64_t step = j.value("step", int64_t(0));
        const std::string kind = j.value("kind", std::string());
        // The earlier run's last step line closed no log window (the checkpoint's is still
        // open): the run going on logs that window later (step 1's line is always there).
        const bool run_end_only = continuing && step == resume_step &&
                                  ((kind == "step" && window_open && step != 1) ||
                                   (kind == "epoch" && !j.value("complete", true)));
        // An epoch the checkpoint has not closed (a --save-every checkpoint on an epoch's last
        // step, its epoch-end save cut short) is closed again by the resumed run: its line too.
        const bool closed_again = kind == "epoch" && j.value("complete", false) &&
                                  j.value("epoch", int64_t(0)) > resume_epochs_done;
        if (step <= resume_step && !run_end_only && !closed_again) kept << line << '\n';
      }
      write_file_atomic(path, kept.str());
    } else {
      write_file_atomic(path, "");
    }
    out_.open(path, std::ios::app);
    FGVC_CHECK(out_, "metrics", path, ": cannot write");
  }
  void write(const json& j) {
    if (!out_.is_open()) return;
    out_ << j.dump() << '\n';
    out_.flush();
  }

 private:
  std::string path_;
  std::ofstream out_;
};

// Validation on several ranks: each scored its share of the images; sum the counts.
void reduce_eval(EvalResult& r, dist::Communicator& comm, Device device) {
  if (comm.size() == 1) return;
  const size_t k = r.per_class.size();
  std::vector<int64_t> counts;
  for (const ClassResult& c : r.per_class) counts.insert(counts.end(), {c.images, c.top1, c.top5});
  counts.push_back(r.nonfinite);
  counts.push_back(r.skipped);
  // On the communicator's device (NCCL sums CUDA tensors, MPI CPU ones).
  Tensor t = Tensor::from_vector(counts, {static_cast<int64_t>(counts.size())}).to(device);
  Tensor loss = Tensor::from_vector(std::vector<double>{r.loss * static_cast<double>(r.images)}, {1}).to(device);
  comm.all_reduce_sum(t);
  comm.all_reduce_sum(loss);
  counts = t.to_vector<int64_t>();
  r.images = r.top1 = r.top5 = 0;
  for (size_t c = 0; c < k; ++c) {
    r.per_class[c] = {counts[3 * c], counts[3 * c + 1], counts[3 * c + 2]};
    r.images += counts[3 * c], r.top1 += counts[3 * c + 1], r.top5 += counts[3 * c + 2];
  }
  r.skipped = counts.back();
  r.nonfinite = counts[counts.size() - 2];
  r.loss = r.images ? loss.to_vector<double>()[0] / static_cast<double>(r.images) : 0.0;
}

// Sums over the ranks of per-rank numbers, in one collective.
std::vector<double> rank_sums(const std::vector<double>& v, dist::Communicator& comm, Device device) {
  if (comm.size() == 1) return v;
  Tensor t = Tensor::from_vector(v, {static_cast<int64_t>(v.size())}).to(device);
  comm.all_reduce_sum(t);
  return t.to_vector<double>();
}

// The sum and the mean over the ranks of a per-rank number.
double rank_sum(double v, dist::Communicator& comm, Device device) { return rank_sums({v}, comm, device)[0]; }

double rank_mean(double v, dist::Communicator& comm, Device device) {
  return rank_sum(v, comm, device) / comm.size();
}

// How many of a training batch's predictions (the arg max of its logits, on their device)
// are its labels (on the host). Only the indices, 8 bytes an image, come back.
int64_t top1_hits(const Tensor& logits, const Tensor& labels) {
  const Tensor l = compute_dtype(logits.dtype()) != logits.dtype() ? logits.to(DType::Float32) : logits;
  const std::vector<int64_t> predicted = kernels::topk(l, 1).indices.to(Device::cpu()).to_vector<int64_t>();
  const std::vector<int64_t> truth = labels.to(Device::cpu()).to_vector<int64_t>();
  int64_t hits = 0;
  for (size_t i = 0; i < predicted.size() && i < truth.size(); ++i) hits += predicted[i] == truth[i];
  return hits;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

}  // namespace

static TrainSummary train_with(const TrainConfig& config, Device device, dist::Communicator& comm);

TrainSummary train_model(const TrainConfig& config, Device device) {
  // Under mpirun: one process per GPU (the local rank's), or per CPU slot.
  std::unique_ptr<dist::Communicator> comm;
  try {
    // One GPU per process: the local rank's (modulo the GPUs this process sees, for launchers
    // that give each rank its own CUDA_VISIBLE_DEVICES).
    if (dist::launched_by_mpi() && device.is_cuda()) {
      // NCCL refuses two ranks on one GPU: say so before it does. (Unless the launcher gives
      // each rank its own CUDA_VISIBLE_DEVICES, when every rank sees fewer GPUs than ranks.)
      const int local = dist::local_size_from_environment(), gpus = cuda_device_count();
      FGVC_CHECK(std::getenv("CUDA_VISIBLE_DEVICES") || local <= gpus, "fgvc-train", local,
                 " processes on this machine share ", gpus, " CUDA device(s); each needs its own GPU (start at most ",
                 gpus, " per machine)");
      device = Device::cuda(dist::local_rank_from_environment() % std::max(1, gpus));
    }
    // Current before anything touches CUDA (NCCL, the loader's pinned buffers), so that no
    // rank makes a context on another rank's GPU.
    if (device.is_cuda()) cuda_set_home_device(device.index);
    comm = dist::make_communicator(device);
  } catch (const std::exception& e) {
    if (!dist::launched_by_mpi()) throw;
    std::fprintf(stderr, "%s: error: setting up the processes: %s\n", program_name().c_str(), e.what());
    dist::abort_job(1);
  }
  try {
    return train_with(config, device, *comm);
  } catch (const std::exception& e) {
    if (comm->size() == 1) throw;
    // One rank failing ends them all, now, rather than leaving them in a collective.
    std::fprintf(stderr, "%s: error: rank %d: %s\n", program_name().c_str(), comm->rank(), e.what());
    comm->abort(1);
    throw;  // not reached: abort() ends the process
  }
}

static TrainSummary train_with(const TrainConfig& config, Device device, dist::Communicator& comm) {
  const TrainConfig c = resolve_defaults(config);
  const bool leader = comm.rank() == 0;  // writes the run folder; every rank trains
  FGVC_CHECK((c.epochs > 0) != (c.steps > 0), "--epochs/--steps", "give exactly one of them");
  FGVC_CHECK(c.optimizer == "rmsprop" || c.optimizer == "sgd", "--optimizer", "rmsprop or sgd, got '",
             c.optimizer, "'");
  FGVC_CHECK(c.amp == "off" || device.is_cuda(), "--amp", c.amp, ": mixed precision needs a CUDA device (this run is on ",
             device.str(), "); use --amp off");
  FGVC_CHECK(c.amp == "off" || c.amp == "bf16" || c.amp == "fp16", "--amp", "bf16, fp16 or off, got '",
             c.amp, "'");
  FGVC_CHECK(c.batch_size >= 2, "--batch-size", " is ", c.batch_size,
             ": training takes at least 2 images per process (batch norm in training needs two values per channel)");
  kernels::set_cudnn_benchmark(c.cudnn_benchmark);
  const std::string last_path = (fs::path(c.out) / "last.safetensors").string();
  const std::string best_path = (fs::path(c.out) / "best.safetensors").string();
  if (c.resume)
    FGVC_CHECK(fs::exists(last_path), "--resume", last_path, " does not exist",
               comm.size() > 1 ? " on rank " + std::to_string(comm.rank()) +
                                     "'s machine (every rank reads the run folder: put --out on a filesystem they share)"
                               : std::string());
  else
    FGVC_CHECK(!fs::exists(last_path), "--out", c.out,
               " already holds a run (last.safetensors): add --resume to continue it, or choose another --out");

  const data::Dataset train_set = prefix_errors("--data", [&] { return data::load_dataset(c.data); });
  const int64_t K = static_cast<int64_t>(train_set.classes.size());
  FGVC_CHECK(K >= 2, "--data", c.data, ": ", K, " class(es); training needs at least 2");
  FGVC_CHECK(!train_set.samples.empty(), "--data", c.data, ": no images");
  // Two images a process at least: a process's share of one image is a batch that cannot train
  // (batch norm), and a data set smaller than one global batch is one such batch an epoch.
  FGVC_CHECK(static_cast<int64_t>(train_set.samples.size()) >= 2 * comm.size(), "--data", c.data, ": ",
             train_set.samples.size(), " image(s) for ", comm.size(),
             " process(es); training needs at least 2 for each (batch norm)");
  std::optional<data::Dataset> val_set;
  if (!c.val.empty()) {
    // By class name: a validation set may lack classes, or list them in another order.
    val_set = data::align_classes(prefix_errors("--val", [&] { return data::load_dataset(c.val); }), train_set.classes,
                                  "--val " + c.val, "--data " + c.data);
  }
  const std::string config_path = (fs::path(c.out) / "config.json").string();
  json this_run = config_object(c);
  this_run["classes"] = train_set.classes;
  this_run["train_counts"] = train_set.counts();
  json started_as;  // a resumed run's config.json (or its checkpoint's record)
  if (c.resume) {  // before the checkpoint's tensors are read: its settings are the run's
    started_as = check_same_run(config_path, last_path, this_run);
    if (!c.init.empty() && comm.rank() == 0)
      warn("--init %s is not read: a resumed run goes on from %s", c.init.c_str(), last_path.c_str());
  }
  // The model, initialised from the seed (and from --init); on --resume from the checkpoint.
  manual_seed(c.seed);
  // With TF-slim's auxiliary classifier where the model has one and the loss weighs it; a run
  // resumed goes on as it was built (runs of Inception-v4/-ResNet-v2 from before fgvc gave
  // them the head have none: they go on without it).
  bool aux_classifier = c.aux_weight > 0;
  if (aux_classifier && c.resume && fs::exists(last_path)) {
    bool has = false;  // from the checkpoint's header: its tensors stay unread here
    for (const SafetensorsEntry& e : read_safetensors_header(last_path).entries) has = has || e.name.rfind("AuxLogits.", 0) == 0;
    aux_classifier = has;
  }
  std::shared_ptr<nn::Classifier> model = nn::create_model(c.model, K, aux_classifier);
  set_batch_norm_momentum(*model, 1.0 - c.bn_decay);
  if (!c.init.empty() && !c.resume) init_weights(*model, c, train_set);
  // The run's plots and checkpoints would join the images it reads.
  const std::vector<std::pair<std::string, const data::Dataset*>> read = {{"--data", &train_set},
                                                                          {"--val", val_set ? &*val_set : nullptr}};
  for (const auto& [data_flag, data] : read)
    if (data) {
      const std::string why = data::output_folder_among_images("--out", c.out, data_flag, *data);
      if (!why.empty()) throw Error(why);
    }
  {  // once the inputs are known to be good: a bad call leaves no empty folder
    std::error_code ec;
    fs::create_directories(c.out, ec);
    FGVC_CHECK(!ec, "train", "run folder ", c.out, ": cannot make it: ", ec.message());
  }
  model->to(device);
  model->train();
  const optim::NamedTensors params = model->named_parameters();
  std::unique_ptr<optim::Optimizer> optimizer;
  if (c.optimizer == "rmsprop")
    optimizer = std::make_unique<optim::RMSProp>(params, c.rmsprop_decay, c.momentum, c.epsilon, c.weight_decay);
  else
    optimizer = std::make_unique<optim::SGD>(params, c.momentum, c.weight_decay);
  std::unique_ptr<optim::EMA> ema;
  // The averaged tensors are handles updated in place, so this list holds for the whole run.
  const optim::NamedTensors ema_weights = averaged_weights(*model);
  if (c.ema_decay > 0) ema = std::make_unique<optim::EMA>(ema_weights, c.ema_decay);

  // Mixed precision: convolutions and the activations after them in bfloat16/float16
  // (autograd/autocast.h); float16 also
  // needs the loss scaled (optim/grad_scaler.h).
  const DType amp_dtype = c.amp == "bf16" ? DType::BFloat16 : c.amp == "fp16" ? DType::Float16 : DType::Float32;
  std::unique_ptr<optim::GradScaler> scaler;
  if (amp_dtype == DType::Float16) scaler = std::make_unique<optim::GradScaler>();

  TrainPosition pos;
  pos.model = c.model;
  pos.num_classes = K;
  // Dropout's stream starts where the model's initialisation left the generator (a resumed
  // run keeps its checkpoint's start); each step draws from a place of its own (dropout_stream).
  pos.rng_seed = default_generator().seed();
  pos.rng_offset = default_generator().offset();
  if (c.resume) {
    Checkpoint ck = load_checkpoint(last_path);
    FGVC_CHECK(ck.position.model == c.model && ck.position.num_classes == K, "--resume", last_path,
               ": a checkpoint of ", ck.position.model, " with ", ck.position.num_classes, " classes; this run is ",
               c.model, " with ", K);
    FGVC_CHECK(ck.position.classes.empty() || train_set.numbered || ck.position.classes == train_set.classes, "--resume",
               last_path, ": trained on other classes than --data ", c.data, " has: ",
               data::class_difference(ck.position.classes, "the checkpoint", train_set.classes, "--data"));
    // A run that has updated its weights has optimiser state; a file without it (best.safetensors,
    // written without, copied over last) would go on with the slots restarted and no word said.
    FGVC_CHECK(!ck.optimizer.empty() || ck.position.step <= ck.position.skipped_steps, "--resume", last_path,
               " holds no optimiser state (best.safetensors and weights files are written without it) for the ",
               ck.position.step, " step(s) it has taken; resume from the run's own last.safetensors, or start a run "
               "from these weights with --init");
    try {
      model->load_state_dict(ck.model, /*strict=*/true);
      optimizer->load_state(ck.optimizer);
      if (ema) {
        FGVC_CHECK(!ck.ema.empty(), "--ema-decay", "the checkpoint has no moving average to continue");
        ema->load(ck.ema);
      }
    } catch (const Error& e) {
      throw Error(last_path + ": " + e.what());
    }
    pos = ck.position;
    // Any number of ranks, as long as the global batch (steps, schedule and epoch position
    // all count in it) stays: 2 x 16 resumes as 1 x 32 or 4 x 8.
    const int64_t global_batch = c.batch_size * comm.size();
    if (pos.batch_size > 0 && pos.batch_size * pos.world_size != global_batch) {
      // What would fit: this many processes with a whole --batch-size of at least 2, or else
      // the process counts that can continue the run.
      const int64_t saved = pos.batch_size * pos.world_size;
      std::string fix;
      if (saved % comm.size() == 0 && saved / comm.size() >= 2) {
        fix = "give --batch-size " + std::to_string(saved / comm.size()) + " to continue it";
      } else {
        std::string counts;
        for (int64_t p = 1; p <= saved / 2; ++p)
          if (saved % p == 0) counts += (counts.empty() ? "" : ", ") + std::to_string(p);
        fix = "no --batch-size continues it on " + std::to_string(comm.size()) + " process(es); " + counts +
              " process(es) can (a global batch of " + std::to_string(saved) + " in whole shares of 2 or more)";
      }
      FGVC_CHECK(false, "--resume", last_path, " was trained with a global batch of ", saved, " (", pos.world_size,
                 " process(es) x --batch-size ", pos.batch_size, "); this run has ", comm.size(), " x ", c.batch_size,
                 ": ", fix);
    }
    pos.world_size = comm.size();
    pos.batch_size = c.batch_size;
    if (!leader) pos.epoch_correct = 0, pos.epoch_images = 0;  // rank 0 holds the ranks' sums
    if (scaler && pos.loss_scale > 0) scaler->load(pos.loss_scale, pos.scale_good_steps, pos.skipped_steps);
  }

  if (comm.size() > 1 && c.resume) {
    // Every rank read RUN_DIR/last.safetensors itself: a copy of another age (a run folder not
    // on a filesystem the ranks share) would pair the ranks' collectives wrongly.
    Tensor where = Tensor::from_vector(std::vector<double>{double(pos.step), double(pos.epoch), double(pos.batch)}, {3})
                       .to(device);
    comm.broadcast(where, 0);
    const std::vector<double> w = where.to_vector<double>();
    FGVC_CHECK(w[0] == double(pos.step) && w[1] == double(pos.epoch) && w[2] == double(pos.batch), "--resume",
               "rank ", comm.rank(), " read ", last_path, " at step ", pos.step, ", rank 0 at step ",
               static_cast<int64_t>(w[0]), ": every rank must see the same run folder (put --out on a filesystem they share)");
  }
  if (comm.size() > 1) {
    // Every rank starts from rank 0's weights (and moving average), whatever it loaded.
    for (auto& [name, t] : model->state_dict()) {
      Tensor tt = t;
      comm.broadcast(tt, 0);
    }
    if (ema)
      for (auto& [name, t] : ema->shadow()) {
        Tensor tt = t;
        comm.broadcast(tt, 0);
      }
  }

  data::LoaderOptions lo;
  lo.batch_size = c.batch_size;
  lo.rank = comm.rank();
  lo.world_size = comm.size();
  lo.size = c.input_size;
  lo.mode = data::Mode::Train;
  lo.normalization = nn::is_inception(c.model) ? data::Normalization::Inception : data::Normalization::ImageNet;
  lo.augment.color_distort = c.color_distort;
  lo.augment.crop = data::crop_style(c.crop);
  lo.augment.area_min = c.min_crop_area;
  lo.augment.min_covered = c.min_crop_covered;
  lo.workers = c.workers;
  lo.seed = c.seed;
  // A last batch of one image would break batch norm; drop the remainder when there is at
  // least one whole global batch (every process's --batch-size together).
  lo.drop_last = static_cast<int64_t>(train_set.samples.size()) >= c.batch_size * comm.size();
  const std::vector<int64_t> train_counts = train_set.counts();
  const std::vector<std::string> class_names = train_set.classes;
  // The counts per_class.csv shows beside each class's accuracy: --train-counts', matched to
  // --data's classes by name.
  const std::vector<int64_t> shown_counts =
      c.train_counts.empty()
          ? train_counts
          : data::align_classes(prefix_errors("--train-counts", [&] { return data::load_dataset(c.train_counts); }),
                                train_set.classes, "--train-counts " + c.train_counts, "--data " + c.data)
                .counts();
  data::Loader loader(train_set, lo);
  const int64_t steps_per_epoch = loader.batches_per_epoch();
  FGVC_CHECK(steps_per_epoch > 0, "--data", c.data, ": no batch in an epoch");
  const int64_t decay_steps = optim::decay_steps(steps_per_epoch, c.decay_epochs);
  FGVC_CHECK(c.steps > 0 || c.epochs <= std::numeric_limits<int64_t>::max() / steps_per_epoch, "--epochs", c.epochs,
             " epochs of ", steps_per_epoch, " steps overflow a 64-bit step count");
  // --epochs ends the run at an epoch's end: a batch whose files were all unreadable makes no
  // step, so an epoch can have fewer steps than batches, and total_steps is then an upper bound
  // (the schedule, which follows the steps as TF-slim's global step does, and the ETA use it).
  const int64_t total_steps = c.steps > 0 ? c.steps : c.epochs * steps_per_epoch;
  auto finished = [&] { return c.steps > 0 ? pos.step >= total_steps : pos.epoch >= c.epochs; };
  // The step that ends the run, as it is taken (the last batch of the last epoch, or --steps).
  auto last_step = [&] {
    return c.steps > 0 ? pos.step == total_steps : pos.epoch + 1 == c.epochs && pos.batch == steps_per_epoch;
  };
  std::unique_ptr<data::Loader> val_loader;
  if (val_set) {
    data::LoaderOptions vo = lo;
    vo.mode = data::Mode::Eval;
    vo.shuffle = false;
    vo.drop_last = false;
    val_loader = std::make_unique<data::Loader>(*val_set, vo);
  }

  // Recorded in every checkpoint, so that fgvc-eval matches a data set by them; a list file
  // without names has none to record (its labels are the outputs' indices).
  pos.classes = train_set.numbered ? std::vector<std::string>{} : class_names;
  pos.settings = run_record(this_run, started_as).dump(-1, ' ', false, json::error_handler_t::replace);
  json cfg = config_object(c);
  cfg["num_classes"] = K;
  cfg["train_images"] = train_set.samples.size();
  cfg["steps_per_epoch"] = steps_per_epoch;
  cfg["total_steps"] = total_steps;
  cfg["device"] = device.str();
  cfg["backend"] = comm.backend();
  cfg["world_size"] = comm.size();
  cfg["global_batch_size"] = c.batch_size * comm.size();
  cfg["classes"] = class_names;
  cfg["train_counts"] = train_counts;
  // What the run started from stays recorded when it is resumed (without --init again).
  for (const char* key : {"init", "reset_classifier"})
    if (started_as.contains(key)) cfg[key] = started_as[key];
  if (leader) write_file_atomic(config_path, cfg.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
  MetricsLog metrics((fs::path(c.out) / "metrics.jsonl").string(), c.resume, pos.step, pos.epoch, !finished(),
                     pos.window_steps > 0, leader);
  Progress progress(c.progress && leader);
  std::unique_ptr<dist::GradientReducer> reducer;
  if (comm.size() > 1) reducer = std::make_unique<dist::GradientReducer>(comm, params);
  // --sync-bn: batch norm's sums go over all ranks for the whole run (reset when it ends).
  struct SyncBatchNorm {
    explicit SyncBatchNorm(dist::Communicator* comm) {
      if (comm) set_batch_norm_all_reduce([comm](Tensor& t) { comm->all_reduce_sum(t); });
    }
    ~SyncBatchNorm() { set_batch_norm_all_reduce(nullptr); }
  } sync_bn(c.sync_bn && comm.size() > 1 ? &comm : nullptr);

  TrainSummary summary;
  summary.resumed = c.resume;
  summary.rank = comm.rank();
  summary.world_size = comm.size();
  summary.best_top1 = pos.best_top1;
  auto save = [&](const std::string& path, bool with_optimizer) {
    if (scaler) {
      pos.loss_scale = scaler->scale_value();
      pos.scale_good_steps = scaler->good_steps();
      pos.skipped_steps = scaler->skipped_steps();
    }
    pos.world_size = comm.size();
    pos.batch_size = c.batch_size;
    if (leader) save_checkpoint(path, *model, with_optimizer ? optimizer.get() : nullptr, ema.get(), pos);
  };
  // Without --sync-bn each rank's batch-norm statistics follow its own batches; what is
  // evaluated and saved is rank 0's (as DDP's broadcast_buffers does).
  auto broadcast_buffers = [&]() {
    if (comm.size() == 1) return;
    NoGradGuard no_grad;
    for (auto& [name, b] : model->named_buffers()) {
      Tensor t = b;
      comm.broadcast(t, 0);
    }
    if (ema)
      for (auto& [name, b] : model->named_buffers()) {
        const auto it = ema->shadow().find(name);
        if (it == ema->shadow().end()) continue;
        Tensor t = it->second;
        comm.broadcast(t, 0);
      }
  };
  bool saved_once = c.resume;
  // Unreadable files of the current epoch skipped before this process took it up (--resume),
  // over all ranks; the loader counts the rest.
  int64_t skipped_before = 0;
  const auto epoch_skipped = [&]() {
    return skipped_before + static_cast<int64_t>(rank_sum(static_cast<double>(loader.skipped()), comm, device));
  };
  // A number that is not finite stops the run: rank 0's error line (`line` with the kind, step
  // and epoch added), then the same error on every rank, saying what the last good checkpoint is.
  auto stop_not_finite = [&](int64_t step, int64_t epoch, json line, const std::string& what) {
    line["kind"] = "error", line["step"] = step, line["epoch"] = epoch;
    metrics.write(line);
    comm.barrier();
    throw Error(detail::concat("training: step ", step, " (epoch ", epoch, "): ", what, "; training stopped. ",
                               saved_once ? last_path + " keeps the last good checkpoint"
                                          : std::string("no checkpoint had been written yet"),
                               amp_dtype == DType::Float16 ? " (try a smaller --lr, or --amp bf16)" : " (try a smaller --lr)"));
  };
  auto save_last = [&]() {
    broadcast_buffers();
    // Everything the checkpoint keeps that a diverging run can spoil: the weights, the batch-norm
    // statistics (their variances overflow while the weights and the loss are still finite),
    // the moving average and the optimizer's slots. One host sync; the culprit is looked for
    // only when something is not finite. Each rank sees the same tensors (all-reduced
    // gradients, buffers broadcast above), so all of them stop here together.
    optim::NamedTensors kept = params;
    for (auto& [name, b] : model->named_buffers())
      if (is_floating(b.dtype())) kept.emplace_back(name, b);
    if (ema)
      for (const auto& [name, t] : ema->shadow()) kept.emplace_back(nn::kEmaPrefix + name, t);
    for (const auto& [name, t] : optimizer->state()) kept.emplace_back(nn::kOptimizerPrefix + name, t);
    std::vector<Tensor> all;
    for (const auto& [name, t] : kept) all.push_back(t);
    if (!optim::all_finite(all)) {
      std::string culprit;
      for (const auto& [name, t] : kept)
        if (culprit.empty() && !optim::all_finite({t})) culprit = name;
      // (At an epoch's end the position has moved on to the next epoch; the step was the last's.)
      const int64_t epoch = pos.batch > 0 ? pos.epoch + 1 : std::max<int64_t>(pos.epoch, 1);
      stop_not_finite(pos.step, epoch, {{"not_finite", culprit}}, culprit + " is not finite");
    }
    // The checkpoint keeps rank 0's position, and every rank resumes from it: the loss sums of
    // the open log window and epoch become the ranks' means first (what is logged is their
    // mean: a linear function of the sums), so a resumed run logs what an uninterrupted one does.
    // The epoch's hit and image counts, summed over the ranks at its end, go to rank 0 whole
    // (the others hold 0), so that they stay whole counts on any number of ranks after a resume.
    if (comm.size() > 1) {
      const std::vector<double> sums =
          rank_sums({pos.window_loss, pos.epoch_loss, pos.epoch_correct, pos.epoch_images}, comm, device);
      pos.window_loss = sums[0] / comm.size();
      pos.epoch_loss = sums[1] / comm.size();
      pos.epoch_correct = leader ? sums[2] : 0.0;
      pos.epoch_images = leader ? sums[3] : 0.0;
    }
    pos.epoch_skipped = pos.batch > 0 ? epoch_skipped() : 0;  // 0: a new epoch is next
    save(last_path, true);
    saved_once = true;
  };
  auto validate = [&](bool epoch_end) {
    broadcast_buffers();
    EvalResult r;
    with_average(*model, ema.get(), [&] { r = evaluate({{model.get(), val_loader.get()}}, device); });
    model->train();
    reduce_eval(r, comm, device);
    if (leader) write_per_class_csv((fs::path(c.out) / "per_class.csv").string(), r, class_names, shown_counts);
    // best.safetensors: the best end-of-epoch evaluation; a mid-epoch one (the end of a run
    // by --steps) only while there is nothing better to keep.
    summary.val_skipped = r.skipped;
    // An evaluation without one readable image has no accuracy (not 0%), and a model whose
    // scores are all NaN or infinite has diverged: neither is ever the best.
    const bool best = r.images > 0 && r.nonfinite < r.images &&
                      (epoch_end ? pos.best_partial || r.top1_accuracy() > pos.best_top1 : pos.best_top1 < 0);
    if (best) {
      pos.best_top1 = r.top1_accuracy();
      pos.best_epoch = pos.epoch;
      pos.best_partial = !epoch_end;
      save(best_path, false);
    }
    summary.best_top1 = pos.best_top1;
    return std::make_pair(r, best);
  };

  const auto run_start = Clock::now();
  const int64_t start_step = pos.step;  // a resumed run's, where this call starts
  double train_seconds = 0;
  int64_t window_images = 0, logged_windows = 0;
  auto window_start = Clock::now();
  // The Inception models' auxiliary loss, as TF-slim's train_image_classifier adds it.
  const bool inception_aux = c.aux_weight > 0 && model->has_aux_classifier();
  model->set_aux_enabled(inception_aux);

  int stopped_by = 0;  // the signal that asked this run to stop before its total
  try {
    while (!finished() && !stopped_by) {
      loader.start_epoch(static_cast<uint64_t>(pos.epoch), pos.batch);
      const bool whole_epoch = pos.batch == 0;  // not the rest of one, after --resume
      if (whole_epoch)  // else: the steps before the resume count
        pos.epoch_loss = 0, pos.epoch_steps = 0, pos.epoch_correct = 0, pos.epoch_images = 0, pos.epoch_skipped = 0;
      skipped_before = pos.epoch_skipped;
      double& epoch_loss = pos.epoch_loss;
      int64_t& epoch_steps = pos.epoch_steps;
      const auto epoch_start = Clock::now();
      data::Batch batch;
      while (!finished() && loader.next(&batch)) {
        pos.batch++;
        // A batch whose files were all unreadable is skipped, by every rank together (the
        // collectives of a step must pair up); so is one where any rank's share was (a rank
        // without an image has no forward pass to join the others' with), or was one image
        // (unreadable files can leave one): batch norm in training needs two values per
        // channel, and a 1 x 1 map (Inception's auxiliary head at 299) has one per image. A stop request on
        // any rank stops them all here, before the step: the batch goes back (the checkpoint's
        // position is the batch before it), and a resumed run takes it again.
        const double images_here = static_cast<double>(batch.indices.size());
        const int signal_here = stop_signal();
        // One slot per stop signal: a rank that got none names the one another rank got.
        const std::vector<double> batch_sums =
            rank_sums({batch.indices.empty() ? 1.0 : 0.0, images_here, signal_here == SIGINT ? 1.0 : 0.0,
                       signal_here == SIGTERM ? 1.0 : 0.0, signal_here == SIGUSR1 ? 1.0 : 0.0,
                       signal_here != 0 ? 1.0 : 0.0, batch.indices.size() == 1 ? 1.0 : 0.0},
                      comm, device);
        if (batch_sums[5] > 0) {
          stopped_by = signal_here;
          for (const auto& [slot, signal] : {std::pair<int, int>{2, SIGINT}, {3, SIGTERM}, {4, SIGUSR1}})
            if (!stopped_by && batch_sums[slot] > 0) stopped_by = signal;
          if (!stopped_by) stopped_by = SIGTERM;  // (request_stop with another number, on another rank)
          pos.batch--;
          loader.give_back(batch);  // its unreadable files are counted when it is taken again
          break;
        }
        if (batch_sums[0] > 0) continue;
        if (batch_sums[6] > 0) {
          if (comm.rank() == 0)
            warn("a batch of epoch %lld skipped: a process's share of it was one image (unreadable files), "
                 "and batch norm in training needs two",
                 static_cast<long long>(pos.epoch + 1));
          continue;
        }
        // Each rank's loss is the mean over its images, and the reducer averages the ranks: where
        // the ranks hold different numbers of images (unreadable files), each rank's loss weighs
        // by its share, so that the gradient is the mean over all the step's images.
        const double share = images_here * comm.size() / batch_sums[1];
        const auto t0 = Clock::now();
        pos.lr = optim::exponential_decay(c.lr, c.lr_decay, decay_steps, pos.step);
        const Tensor x = batch.images.to(device, /*non_blocking=*/true), y = batch.labels.to(device, true);
        dropout_stream(pos, comm.rank());
        Tensor loss, logits;
        {
          AutocastGuard autocast(amp_dtype);  // float32: no change
          logits = model->forward(x);
          loss = cross_entropy(logits, y, c.label_smoothing);
          if (inception_aux) {
            const Tensor& aux = model->aux_logits();
            if (aux.defined()) loss = add(loss, mul(cross_entropy(aux, y, c.label_smoothing), c.aux_weight));
          }
        }
        if (share != 1.0) loss = mul(loss, share);  // (1 on one process, and with even batches)
        const double value = loss.item<float>();
        pos.epoch_correct += static_cast<double>(top1_hits(logits, batch.labels));
        pos.epoch_images += static_cast<double>(batch.indices.size());
        // Every rank stops at a rank's non-finite loss, before its gradients reach the others
        // (a NaN or infinity on any rank carries into the ranks' mean), and rank 0 writes the
        // error line, with that mean, before any rank ends the job.
        const double mean_loss = rank_mean(value, comm, device);
        if (!std::isfinite(mean_loss)) {
          const std::string what = std::isnan(value) ? "the loss is nan"
                                   : std::isinf(value) ? "the loss is infinite"
                                                       : "another rank's loss is not finite";
          stop_not_finite(pos.step + 1, pos.epoch + 1, {{"loss", mean_loss}}, what);
        }
        if (reducer) reducer->prepare();
        backward(scaler ? scaler->scale(loss) : loss);
        if (reducer) reducer->finish();  // gradients averaged over the ranks
        bool update = true;
        if (scaler) {  // float16: unscale; an overflow skips this step and halves the scale
          update = scaler->unscale(params);
          scaler->update(update);
        }
        if (update) {
          if (c.clip_grad_norm > 0) optim::clip_grad_norm(params, c.clip_grad_norm);
          optimizer->step(pos.lr);
        }
        optimizer->zero_grad();
        pos.step++;
        if (ema && update) {
          const double d = std::min(c.ema_decay, (1.0 + pos.step) / (10.0 + pos.step));
          ema->update(ema_weights, d);
        }
        const int64_t n = static_cast<int64_t>(batch.indices.size());
        train_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
        summary.images += n;
        pos.window_loss += value, pos.window_steps++, window_images += n;
        epoch_loss += value, epoch_steps++;
        // Step 1 too: a first point of the loss curve, and a run shorter than --log-every
        // still has a first and a last window.
        const bool log = pos.step % c.log_every == 0 || last_step() || pos.step == 1;
        const double window_s = std::chrono::duration<double>(Clock::now() - window_start).count();
        const double elapsed = std::chrono::duration<double>(Clock::now() - run_start).count();
        const double eta = elapsed / static_cast<double>(summary.images) * n * static_cast<double>(total_steps - pos.step);
        // A logged line is over all ranks: the loss's mean, and the images every rank took in
        // the window. Between them a terminal's status line shows this rank's loss and, since
        // the ranks step together, its images times the ranks (no collective every step).
        double loss_shown = pos.window_loss / pos.window_steps;
        double ips = window_s > 0 ? window_images * static_cast<double>(comm.size()) / window_s : 0.0;
        if (log) {
          const std::vector<double> sums = rank_sums({loss_shown, static_cast<double>(window_images)}, comm, device);
          loss_shown = sums[0] / comm.size(), ips = window_s > 0 ? sums[1] / window_s : 0.0;
        }
        progress.status("epoch " + std::to_string(pos.epoch + 1) + " step " + std::to_string(pos.step) + "/" +
                            std::to_string(total_steps) + " loss " + fixed(loss_shown, 4) + " lr " + fixed(pos.lr, 6) +
                            " " + fixed(ips, 1) + " img/s ETA " + format_duration(eta),
                        log);
        if (log) {
          json line = {{"kind", "step"}, {"step", pos.step},   {"epoch", pos.epoch + 1}, {"loss", loss_shown},
                       {"lr", pos.lr},   {"images_per_sec", ips}, {"seconds", elapsed}};
          if (scaler) line["loss_scale"] = scaler->scale_value(), line["skipped_steps"] = scaler->skipped_steps();
          metrics.write(line);
          if (logged_windows++ == 0) summary.first_loss = loss_shown;
          summary.loss_lines = logged_windows;
          summary.last_loss = loss_shown;
          // A line at the end of a run between two intervals leaves the window open, so the
          // next interval's line covers the same steps whether or not the run was resumed.
          if (pos.step % c.log_every == 0) pos.window_loss = 0, pos.window_steps = 0;
          window_images = 0;
          window_start = Clock::now();
        }
        if (c.save_every > 0 && pos.step % c.save_every == 0 && !last_step()) save_last();
        if (c.on_step) c.on_step(pos.step);
      }
      const bool epoch_done = pos.batch >= steps_per_epoch;
      // A whole epoch without one readable batch would repeat forever (the same files fail
      // every epoch). Every rank sees the same count: empty batches are skipped together.
      FGVC_CHECK(!(epoch_done && whole_epoch && epoch_steps == 0), "--data", c.data, ": epoch ",
                 pos.epoch + 1, " had no readable image (", loader.skipped(), " unreadable file(s) skipped)");
      if (epoch_done) {
        pos.epoch++;
        pos.batch = 0;
      }
      if (epoch_done || finished()) {
        // Over all ranks, as the step lines' loss (every rank took the same number of steps).
        // One collective: the loss's mean, and the epoch's hits and images.
        const std::vector<double> sums =
            rank_sums({epoch_steps ? epoch_loss / epoch_steps : 0.0, pos.epoch_correct, pos.epoch_images}, comm, device);
        const double train_loss = sums[0] / comm.size();
        const double train_top1 = sums[2] > 0 ? sums[1] / sums[2] : 0.0;
        json line = {{"kind", "epoch"},
                     {"epoch", epoch_done ? pos.epoch : pos.epoch + 1},
                     {"complete", epoch_done},
                     {"step", pos.step},
                     {"train_loss", train_loss},
                     {"train_top1", train_top1},
                     {"lr", pos.lr},
                     {"skipped", epoch_skipped()},
                     {"seconds", std::chrono::duration<double>(Clock::now() - epoch_start).count()}};
        std::string text = "epoch " + std::to_string(epoch_done ? pos.epoch : pos.epoch + 1) + ": step " +
                           std::to_string(pos.step) + " train loss " + fixed(train_loss, 4) + " top-1 " +
                           fixed(100 * train_top1, 2) + "%";
        if (val_loader) {
          const auto [r, best] = validate(epoch_done);
          const bool scored = r.images > 0;
          line["val_top1"] = scored ? json(r.top1_accuracy()) : json(nullptr);
          line["val_top5"] = scored ? json(r.top5_accuracy()) : json(nullptr);
          line["val_loss"] = scored ? json(r.loss) : json(nullptr);
          line["val_images"] = r.images;
          line["val_skipped"] = r.skipped;
          line["val_nonfinite"] = r.nonfinite;
          if (scored)
            text += " val top-1 " + fixed(100 * r.top1_accuracy(), 2) + "% top-5 " +
                    fixed(100 * r.top5_accuracy(), 2) + "%" + (best ? " (best)" : "") +
                    (r.nonfinite > 0 ? " (" + std::to_string(r.nonfinite) + " image(s) with NaN or infinite scores)" : "");
          else
            text += " val: no readable image (" + std::to_string(r.skipped) + " unreadable file(s) skipped)";
        }
        metrics.write(line);
        progress.line(text);
        save_last();
      }
    }
  } catch (const Error& e) {
    // The allocator names the request and what is in use; say what to change.
    if (std::string(e.what()).find("CUDA out of memory") == std::string::npos) throw;
    throw Error(std::string(e.what()) + "; try a smaller --batch-size (now " + std::to_string(c.batch_size) + ")" +
                (c.amp == "off" ? " or --amp bf16" : ""));
  }
  // Stopped: this step's position, where --resume goes on (the caller says so).
  if (stopped_by || !saved_once) save_last();
  summary.stopped_by = stopped_by;
  // Over all ranks (each trained on its share of every batch): images, and the distinct files
  // skipped (one rank may meet a file in one epoch and another in the next: a flag per
  // sample, summed over the ranks, counts it once).
  summary.images = static_cast<int64_t>(std::llround(rank_sum(static_cast<double>(summary.images), comm, device)));
  if (comm.size() == 1) {
    summary.skipped = loader.skipped_files();
  } else {
    std::vector<float> met(train_set.samples.size(), 0.0f);
    for (int64_t index : loader.skipped_indices()) met[static_cast<size_t>(index)] = 1.0f;
    Tensor flags = Tensor::from_vector(met, {static_cast<int64_t>(met.size())}).to(device);
    comm.all_reduce_sum(flags);
    summary.skipped = 0;
    for (float f : flags.to_vector<float>()) summary.skipped += f > 0;
  }
  summary.steps = pos.step;
  summary.steps_run = pos.step - start_step;
  summary.epochs_done = pos.epoch;  // the run's, as steps: a resumed run counts the epochs before it
  summary.seconds = std::chrono::duration<double>(Clock::now() - run_start).count();
  summary.images_per_sec = train_seconds > 0 ? summary.images / train_seconds : 0.0;
  if (c.plots && leader) {
    const std::string message = make_plots(c.out);
    if (!message.empty()) progress.line(message);
  }
  comm.barrier();  // the run folder is complete when any rank returns
  return summary;
}

}  // namespace train
}  // namespace fgvc
