// Training end to end on generated image folders: the loss falls, --resume continues bit for
// bit, a NaN stops the run with the last good checkpoint kept, mismatching checkpoints are
// refused by name; evaluation's head/tail split against a hand count, ensembles against a
// direct computation; fgvc-train and fgvc-eval as a user runs them.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "app_runner.h"
#include "autograd/grad_mode.h"
#include "data/dataset.h"
#include "data/idx.h"
#include "emd/domain.h"
#include "kernels/softmax.h"
#include "tensor/atomic_file.h"
#include "tensor/random.h"
#include "tensor/safetensors.h"
#include "data/decode.h"
#include "train/chart.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/features.h"
#include "train/plots.h"
#include "train/stop_request.h"
#include "train/trainer.h"
#include "image_files.h"
#include "test_util.h"

namespace fgvc {
namespace {

namespace fs = std::filesystem;
using testing::test_dir;

// An ImageFolder of testing::write_class_folder's images, written once per test folder and
// kept for the next run; a marker beside it, written last, says it is whole (a run killed
// while writing leaves none, and the next run writes the folder again) and what it holds (the
// counts, seed, size and kFolderVersion: a folder of other arguments, or of an older
// generator, is written again). `extra` adds files; `extra_version` names what it adds.
constexpr int kFolderVersion = 2;  // bump when write_class_folder or an extra changes what it writes
void class_folder(const std::string& root, const std::vector<int>& counts, uint32_t seed,
                  const std::function<void()>& extra = nullptr, const std::string& extra_version = "") {
  const std::string done = root + ".complete";
  std::string what = "v" + std::to_string(kFolderVersion) + " size 36 seed " + std::to_string(seed) + " counts";
  for (int c : counts) what += " " + std::to_string(c);
  what += extra ? " extra " + extra_version : "";
  std::ifstream marker(done);
  const std::string had((std::istreambuf_iterator<char>(marker)), std::istreambuf_iterator<char>());
  if (had == what) return;
  fs::remove_all(root);
  fs::remove(done);
  testing::write_class_folder(root, counts, 36, seed);
  if (extra) extra();
  testing::write_bytes(done, std::vector<uint8_t>(what.begin(), what.end()));
}

// A long-tailed training folder (imbalance 16) and a balanced validation folder, 5 classes.
struct Folders {
  std::string dir, train, val;
  Folders() {
    dir = test_dir("fgvc_train_");
    train = dir + "/train";
    val = dir + "/val";
    class_folder(train, {48, 24, 12, 6, 3}, 1);
    class_folder(val, {6, 6, 6, 6, 6}, 2);
  }
};

train::TrainConfig small_config(const Folders& f, const std::string& out) {
  train::TrainConfig c;
  c.model = "resnet20";
  c.data = f.train;
  c.out = f.dir + "/" + out;
  c.batch_size = 8;
  c.plots = false;
  c.progress = false;
  c.log_every = 5;
  fs::remove_all(c.out);  // a fresh run each time the test runs
  return c;
}

// The message of the fgvc::Error that training with `c` throws ("" and a failure if none).
std::string training_error(const train::TrainConfig& c) {
  try {
    train::train_model(c, Device::cpu());
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "training with " << c.out << " did not fail";
  return "";
}

// A run's metrics.jsonl, line by line, without its times and speeds (which vary run to run).
std::vector<std::string> log_lines(const std::string& run) {
  std::vector<std::string> out;
  std::ifstream in(run + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    j.erase("seconds"), j.erase("images_per_sec");
    out.push_back(j.dump());
  }
  return out;
}

bool same_bytes(const std::string& a, const std::string& b) { return testing::slurp(a) == testing::slurp(b); }

// The same shape, dtype and bits (float32 or int64 tensors).
bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  if (a.dtype() == DType::Int64) return a.to_vector<int64_t>() == b.to_vector<int64_t>();
  const std::vector<float> x = a.to_vector<float>(), y = b.to_vector<float>();
  return std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// What fgvc-train's settings do, rebuilt here from the library's parts: three steps of
// resnet20 (batch-norm decay 0.95, not BatchNorm2d's default momentum 0.1) with RMSProp (decay 0.9, momentum 0.9, epsilon 1), weight
// decay, label smoothing 0.1, a staircase schedule that halves the rate each step, and a
// moving average with TF-slim's warm-up decay min(0.99, (1 + s) / (10 + s)). The run's
// checkpoint holds these weights and averages bit for bit, and its validation scores the
// average, not the trained weights.
TEST(Train, StepsAreTheHandBuiltSteps) {
  Folders f;
  train::TrainConfig c = small_config(f, "hand_built");
  c.val = f.val;
  c.steps = 3;
  c.lr = 0.02;
  c.lr_decay = 0.5;
  c.decay_epochs = 1e-3;  // one step
  c.ema_decay = 0.99;
  c.weight_decay = 1e-3;
  c.bn_decay = 0.95;
  c.seed = 17;
  c.workers = 2;
  train::train_model(c, Device::cpu());

  manual_seed(c.seed);
  const data::Dataset train_set = data::load_dataset(f.train);
  auto model = nn::create_model("resnet20", 5);
  std::function<void(nn::Module&)> bn_decay = [&](nn::Module& m) {
    if (auto* bn = dynamic_cast<nn::BatchNorm2d*>(&m)) bn->momentum = 1.0 - 0.95;
    for (auto& [name, child] : m.named_children()) bn_decay(*child);
  };
  bn_decay(*model);
  model->train();
  optim::RMSProp optimizer(model->named_parameters(), 0.9, 0.9, 1.0, c.weight_decay);
  optim::NamedTensors averaged = model->named_parameters();
  for (auto& [name, b] : model->named_buffers())
    if (b.dtype() == DType::Float32) averaged.emplace_back(name, b);
  optim::EMA ema(averaged, c.ema_decay);
  data::LoaderOptions o;
  o.batch_size = 8;
  o.size = 32;
  o.mode = data::Mode::Train;
  o.normalization = data::Normalization::ImageNet;
  o.seed = c.seed;
  o.drop_last = true;
  data::Loader loader(train_set, o);
  loader.start_epoch(0);
  for (int64_t step = 0; step < 3; ++step) {
    data::Batch batch;
    ASSERT_TRUE(loader.next(&batch));
    const double lr = 0.02 * std::pow(0.5, static_cast<double>(step));
    backward(cross_entropy(model->forward(batch.images), batch.labels, 0.1));
    optimizer.step(lr);
    optimizer.zero_grad();
    ema.update(averaged, std::min(0.99, (2.0 + step) / (11.0 + step)));
  }
  const train::Checkpoint ck = train::load_checkpoint(c.out + "/last.safetensors");
  int compared = 0;
  for (const auto& [name, t] : model->state_dict()) {
    ASSERT_TRUE(ck.model.count(name)) << name;
    EXPECT_TRUE(same_bits(ck.model.at(name), t)) << name << ": not the hand-built step's bits";
    ++compared;
  }
  EXPECT_GT(compared, 60);
  for (const auto& [name, t] : ema.shadow()) {
    ASSERT_TRUE(ck.ema.count(name)) << name;
    EXPECT_TRUE(same_bits(ck.ema.at(name), t)) << name << ": not the hand-built average's bits";
  }
  // The validation at the run's end scored the average: its loss, not the trained weights'.
  auto val_loss = [&](const std::map<std::string, Tensor>& weights) {
    auto m = nn::create_model("resnet20", 5);
    m->load_state_dict(weights, /*strict=*/false);
    data::LoaderOptions vo = o;
    vo.mode = data::Mode::Eval;
    vo.shuffle = false;
    vo.drop_last = false;
    const data::Dataset val = data::load_dataset(f.val);
    data::Loader vl(val, vo);
    return train::evaluate({{m.get(), &vl}}, Device::cpu()).loss;
  };
  double logged = -1;
  std::ifstream in(c.out + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("val_loss")) logged = j.at("val_loss").get<double>();
  }
  std::map<std::string, Tensor> averaged_weights = ck.model;
  for (const auto& [name, t] : ck.ema) averaged_weights[name] = t;
  EXPECT_NEAR(logged, val_loss(averaged_weights), 1e-12);
  EXPECT_GT(std::fabs(logged - val_loss(ck.model)), 1e-6);
}

// The defaults that depend on the model (SPEC section 4): TF-slim's batch-norm decay 0.9997 and
// 299 px for the Inception family, 0.9 for the ResNets (torchvision's and timm's), decay every
// 2 epochs; the step above shows a decay reaching batch norm's running statistics.
TEST(Train, ModelDependentDefaults) {
  train::TrainConfig c;
  for (const auto& [model, decay, size] : std::vector<std::tuple<std::string, double, int>>{
           {"inception_v3", 0.9997, 299}, {"inception_resnet_v2", 0.9997, 299}, {"resnet50", 0.9, 299}, {"resnet20", 0.9, 32}}) {
    c.model = model;
    const nlohmann::json j = nlohmann::json::parse(train::config_json(c));
    EXPECT_EQ(j.at("bn_decay").get<double>(), decay) << model;
    EXPECT_EQ(j.at("input_size").get<int>(), size) << model;
    EXPECT_EQ(j.at("decay_epochs").get<double>(), 2.0) << model;
    train::TrainConfig zero = c;  // a decay of 0 (the last batch's statistics) is a setting, not "the default"
    zero.bn_decay = 0;
    EXPECT_EQ(nlohmann::json::parse(train::config_json(zero)).at("bn_decay").get<double>(), 0.0) << model;
    EXPECT_EQ(j.at("lr").get<double>(), 0.045) << model;
    EXPECT_EQ(j.at("label_smoothing").get<double>(), 0.1) << model;
    EXPECT_EQ(j.at("weight_decay").get<double>(), 4e-5) << model;
    // SPEC section 4's other defaults, the paper's and TF-slim's.
    EXPECT_EQ(j.at("batch_size").get<int64_t>(), 32) << model;
    EXPECT_EQ(j.at("optimizer"), "rmsprop") << model;
    EXPECT_EQ(j.at("lr_decay").get<double>(), 0.94) << model;
    EXPECT_EQ(j.at("rmsprop_decay").get<double>(), 0.9) << model;
    EXPECT_EQ(j.at("momentum").get<double>(), 0.9) << model;
    EXPECT_EQ(j.at("epsilon").get<double>(), 1.0) << model;
    EXPECT_EQ(j.at("aux_weight").get<double>(), 0.4) << model;
    EXPECT_EQ(j.at("amp"), "off") << model;
  }
}

TEST(Train, LossFallsOnALongTailedFolder) {
  Folders f;
  train::TrainConfig c = small_config(f, "run");
  c.optimizer = "sgd";
  c.lr = 0.05;
  c.steps = 60;
  c.batch_size = 16;
  c.color_distort = false;
  c.min_crop_area = 0.3;
  c.log_every = 10;
  c.val = f.val;
  const train::TrainSummary s = train::train_model(c, Device::cpu());
  EXPECT_EQ(s.steps, 60);
  EXPECT_EQ(s.skipped, 0);
  // Label smoothing 0.1 over 5 classes puts the floor near 0.39; it starts near log 5 = 1.6.
  EXPECT_LT(s.last_loss, 0.6 * s.first_loss) << s.first_loss << " -> " << s.last_loss;
  // The validation images of a class are alike, so its accuracy moves a class (0.2) at a time:
  // at least four classes of five right at some epoch (chance: one).
  EXPECT_GE(s.best_top1, 0.8 - 1e-9);
  for (const char* file : {"config.json", "metrics.jsonl", "last.safetensors", "best.safetensors", "per_class.csv"})
    EXPECT_TRUE(fs::exists(c.out + "/" + file)) << file;
  // config.json: every effective setting, defaults resolved.
  std::ifstream cfg(c.out + "/config.json");
  const nlohmann::json j = nlohmann::json::parse(cfg);
  EXPECT_EQ(j.at("input_size"), 32);
  EXPECT_EQ(j.at("decay_epochs"), 2.0);
  EXPECT_EQ(j.at("bn_decay"), 0.9);
  EXPECT_EQ(j.at("num_classes"), 5);
  EXPECT_EQ(j.at("steps_per_epoch"), 93 / 16);
  EXPECT_EQ(j.at("train_counts"), (std::vector<int64_t>{48, 24, 12, 6, 3}));
  EXPECT_EQ(j.at("world_size"), 1);
}

// N steps in one run == k steps, then --resume up to N, bit for bit: weights, batch-norm
// statistics, optimizer slots, moving average, position and best.safetensors. The resumed
// part also runs with another number of loader threads.
TEST(Train, ResumeIsBitIdentical) {
  Folders f;
  train::TrainConfig whole = small_config(f, "whole");
  whole.steps = 26;  // 11 steps per epoch: the break falls inside epoch 1, the end inside epoch 3
  whole.val = f.val;
  whole.ema_decay = 0.99;
  train::train_model(whole, Device::cpu());

  train::TrainConfig part = whole;
  part.out = f.dir + "/parts";
  part.steps = 7;
  part.workers = 2;
  fs::remove_all(part.out);
  train::train_model(part, Device::cpu());
  EXPECT_THROW(train::train_model(part, Device::cpu()), Error);  // a run is there: --resume or another --out
  part.steps = 26;
  part.resume = true;
  part.workers = 1;
  const train::TrainSummary s = train::train_model(part, Device::cpu());
  EXPECT_TRUE(s.resumed);
  EXPECT_EQ(s.steps, 26);
  EXPECT_EQ(s.epochs_done, 2);
  EXPECT_TRUE(same_bytes(whole.out + "/last.safetensors", part.out + "/last.safetensors"));
  EXPECT_TRUE(same_bytes(whole.out + "/best.safetensors", part.out + "/best.safetensors"));
  // Resuming a run that already reached its total trains nothing (fgvc-train says so).
  const train::TrainSummary again = train::train_model(part, Device::cpu());
  EXPECT_TRUE(again.resumed);
  EXPECT_EQ(again.images, 0);
  EXPECT_EQ(again.steps, 26);
  EXPECT_EQ(again.epochs_done, 2);  // the run's, as its steps (this call finished none)
  const train::Checkpoint ck = train::load_checkpoint(part.out + "/last.safetensors");
  EXPECT_EQ(ck.position.step, 26);
  EXPECT_EQ(ck.position.epoch, 2);
  EXPECT_EQ(ck.position.batch, 4);
  EXPECT_FALSE(ck.ema.empty());
  EXPECT_EQ(ck.optimizer.size(), 2 * ck.model.size() - 2 * 3 * 19);  // ms and mom per parameter, not per buffer
  // The logged training losses agree at every logging interval (5 steps).
  auto losses = [](const std::string& run) {
    std::map<int64_t, double> out;
    std::ifstream in(run + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.at("kind") == "step" && j.at("step").get<int64_t>() % 5 == 0) out[j.at("step")] = j.at("loss");
    }
    return out;
  };
  EXPECT_EQ(losses(whole.out), losses(part.out));
  // And every complete epoch's training loss, epoch 1 included (interrupted at step 7).
  auto epoch_losses = [](const std::string& run) {
    std::map<int64_t, double> out;
    std::ifstream in(run + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.at("kind") == "epoch" && j.at("complete").get<bool>()) out[j.at("epoch")] = j.at("train_loss");
    }
    return out;
  };
  EXPECT_EQ(epoch_losses(whole.out).size(), 2u);
  EXPECT_EQ(epoch_losses(whole.out), epoch_losses(part.out));
  // Each epoch line has the training top-1 of its batches (the same after the resume: below).
  {
    std::ifstream in(whole.out + "/metrics.jsonl");
    int epochs = 0;
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.at("kind") != "epoch") continue;
      const double top1 = j.at("train_top1");
      EXPECT_TRUE(top1 >= 0 && top1 <= 1) << line;
      ++epochs;
    }
    EXPECT_GE(epochs, 2);
  }
  // Line for line the same log (times and speeds aside): the first run's closing step line at 7 and its
  // partial epoch line are gone.
  EXPECT_EQ(log_lines(whole.out), log_lines(part.out));
}

// A stop request (SIGTERM, Ctrl-C: train/stop_request.h) ends the run before its next step
// with a checkpoint there; --resume continues as if it had not stopped: stopped mid-epoch
// (after step 4) and at an epoch's end (after step 11, its validation and epoch line done),
// resumed twice, the run's checkpoint, best weights and log are the uninterrupted run's.
TEST(Train, AStopRequestCheckpointsAndResumesBitIdentically) {
  Folders f;
  train::TrainConfig whole = small_config(f, "stop_whole");
  whole.steps = 15;  // 11 steps per epoch
  whole.val = f.val;
  whole.ema_decay = 0.99;
  train::train_model(whole, Device::cpu());

  train::TrainConfig part = whole;
  part.out = f.dir + "/stop_parts";
  fs::remove_all(part.out);
  int64_t stop_at = 4;
  part.on_step = [&stop_at](int64_t step) {
    if (step == stop_at) train::request_stop(SIGTERM);
  };
  for (const int64_t at : {4, 11}) {
    stop_at = at;
    const train::TrainSummary s = train::train_model(part, Device::cpu());
    train::request_stop(0);
    EXPECT_EQ(s.stopped_by, SIGTERM);
    EXPECT_EQ(s.steps, at);
    const train::Checkpoint ck = train::load_checkpoint(part.out + "/last.safetensors");
    EXPECT_EQ(ck.position.step, at);
    EXPECT_EQ(ck.position.epoch, at / 11);
    EXPECT_EQ(ck.position.batch, at % 11);
    part.resume = true;
  }
  stop_at = -1;
  const train::TrainSummary s = train::train_model(part, Device::cpu());
  EXPECT_EQ(s.stopped_by, 0);
  EXPECT_EQ(s.steps, 15);
  EXPECT_TRUE(same_bytes(whole.out + "/last.safetensors", part.out + "/last.safetensors"));
  EXPECT_TRUE(same_bytes(whole.out + "/best.safetensors", part.out + "/best.safetensors"));
  EXPECT_EQ(log_lines(whole.out), log_lines(part.out));
}

// The paper's model through the same loop: Inception-v3 with its auxiliary head (weighted
// 0.4), dropout before the classifier (each step draws from a place of the default generator
// that follows from the run's start, kept in the checkpoint, and the step), batch-norm decay 0.9997 and a moving average, interrupted
// after a step and resumed: the checkpoint is that of the uninterrupted run, bit for bit.
// At 299 px (the aux head's smallest input in training), two images a batch, no validation.
TEST(Train, InceptionV3ResumeIsBitIdentical) {
  Folders f;
  train::TrainConfig whole = small_config(f, "inception_whole");
  whole.model = "inception_v3";
  whole.input_size = 299;
  whole.batch_size = 2;
  whole.steps = 2;
  whole.ema_decay = 0.99;
  whole.log_every = 1;
  const train::TrainSummary w = train::train_model(whole, Device::cpu());
  EXPECT_EQ(w.steps, 2);
  EXPECT_TRUE(std::isfinite(w.last_loss));
  train::TrainConfig part = whole;
  part.out = f.dir + "/inception_parts";
  part.steps = 1;
  fs::remove_all(part.out);
  train::train_model(part, Device::cpu());
  part.steps = 2;
  part.resume = true;
  EXPECT_TRUE(train::train_model(part, Device::cpu()).resumed);
  EXPECT_TRUE(same_bytes(whole.out + "/last.safetensors", part.out + "/last.safetensors"));
  const train::Checkpoint ck = train::load_checkpoint(part.out + "/last.safetensors");
  EXPECT_EQ(ck.position.step, 2);
  EXPECT_TRUE(ck.model.count("AuxLogits.fc.weight")) << "the aux head is trained and saved";
  EXPECT_FALSE(ck.ema.empty());
  // The aux head learns: its classifier has gradients (RMSProp's momentum moved from 0).
  ASSERT_TRUE(ck.optimizer.count("AuxLogits.fc.weight.mom"));
  double moved = 0;
  for (float v : ck.optimizer.at("AuxLogits.fc.weight.mom").to_vector<float>()) moved += std::abs(v);
  EXPECT_GT(moved, 0.0);
}

// --amp fp16 through the trainer: the loss is scaled, each line logs the dynamic loss scale,
// and the scaler's state (scale, clean steps since it changed, skipped steps) is checkpointed
// and restored: a run interrupted at step 4 and resumed ends with the uninterrupted run's
// state (restarted, its scaler would have counted only the last 6 steps).
TEST(Train, AmpFp16KeepsItsLossScaleAcrossAResumeOnTheGpu) {
  FGVC_REQUIRE_CUDA();
  Folders f;
  train::TrainConfig whole = small_config(f, "fp16_whole");
  whole.amp = "fp16";
  whole.steps = 10;
  whole.log_every = 1;
  const train::TrainSummary w = train::train_model(whole, Device::cuda());
  EXPECT_TRUE(std::isfinite(w.last_loss));
  train::TrainConfig part = whole;
  part.out = f.dir + "/fp16_parts";
  part.steps = 4;
  fs::remove_all(part.out);
  train::train_model(part, Device::cuda());
  part.steps = 10;
  part.resume = true;
  EXPECT_TRUE(train::train_model(part, Device::cuda()).resumed);
  const train::TrainPosition a = train::load_checkpoint(whole.out + "/last.safetensors").position;
  const train::TrainPosition b = train::load_checkpoint(part.out + "/last.safetensors").position;
  EXPECT_EQ(b.step, 10);
  EXPECT_GT(a.loss_scale, 0.0);
  EXPECT_EQ(a.loss_scale, b.loss_scale);
  EXPECT_EQ(b.scale_good_steps, a.scale_good_steps);
  EXPECT_EQ(b.skipped_steps, a.skipped_steps);
  std::ifstream in(part.out + "/metrics.jsonl");
  int64_t step_lines = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.at("kind") != "step") continue;
    ++step_lines;
    EXPECT_GT(j.at("loss_scale").get<double>(), 0.0) << line;
    EXPECT_TRUE(std::isfinite(j.at("loss").get<double>())) << line;
  }
  EXPECT_EQ(step_lines, 10);
}

// --log-every may change on --resume: the earlier run's closing step line stays where it
// closed its window (the next line starts after it) and goes where the window was left open
// (the next line covers its steps again).
TEST(Train, ResumeWithAnotherLogIntervalCountsEveryStepOnce) {
  Folders f;
  const auto step_lines = [](const std::string& run) {
    std::set<int64_t> out;
    std::ifstream in(run + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.at("kind") == "step") out.insert(j.at("step").get<int64_t>());
    }
    return out;
  };
  for (const auto& [first_every, then_every] : std::vector<std::pair<int, int>>{{3, 2}, {2, 3}}) {
    train::TrainConfig c = small_config(f, "log" + std::to_string(first_every));
    c.steps = 9;
    c.log_every = first_every;
    train::train_model(c, Device::cpu());
    c.steps = 12;
    c.log_every = then_every;
    c.resume = true;
    train::train_model(c, Device::cpu());
    const std::set<int64_t> lines = step_lines(c.out);
    if (first_every == 3) {
      EXPECT_EQ(lines, (std::set<int64_t>{1, 3, 6, 9, 10, 12}));  // 9 closed a window
    } else {
      EXPECT_EQ(lines, (std::set<int64_t>{1, 2, 4, 6, 8, 12}));  // 9's window ran on to 12
    }
  }
}

TEST(Train, NonFiniteLossStopsWithTheLastGoodCheckpoint) {
  Folders f;
  train::TrainConfig c = small_config(f, "nan");
  c.optimizer = "sgd";
  c.lr = 1e30;
  c.steps = 20;
  c.save_every = 1;
  const std::string what = training_error(c);
  EXPECT_NE(what.find("step "), std::string::npos) << what;
  EXPECT_TRUE(what.find("the loss is") != std::string::npos || what.find("is not finite") != std::string::npos)
      << what;
  EXPECT_NE(what.find("last.safetensors keeps the last good checkpoint"), std::string::npos) << what;
  const train::Checkpoint ck = train::load_checkpoint(c.out + "/last.safetensors");
  EXPECT_GE(ck.position.step, 1);
  EXPECT_LT(ck.position.step, 20);
  for (const auto& [name, t] : ck.model) {
    if (t.dtype() != DType::Float32) continue;
    for (float v : t.to_vector<float>()) ASSERT_TRUE(std::isfinite(v)) << name;
  }
}

// Each step's dropout draws from its own block of the generator, 2^24 values a step from the
// run's start (so a resumed run draws what the uninterrupted one did): after step k the
// generator stands k blocks on from step 0's (resnet20 draws nothing of it, so exactly).
TEST(Train, EachStepDrawsDropoutFromItsOwnBlock) {
  Folders f;
  train::TrainConfig c = small_config(f, "dropout_blocks");
  c.steps = 4;
  std::vector<uint64_t> offsets;
  c.on_step = [&](int64_t) { offsets.push_back(default_generator().offset()); };
  train::train_model(c, Device::cpu());
  ASSERT_EQ(offsets.size(), 4u);
  for (size_t k = 1; k < offsets.size(); ++k) EXPECT_EQ(offsets[k] - offsets[0], k << 24) << k;
}

// A loss that is infinite but not NaN (float32's range overflowed) stops the run at that step,
// saying so, before its gradients are applied: logits of +-3e38 (class 0 far below the others)
// make each class-0 image's loss 6e38, beyond float32.
TEST(Train, AnInfiniteLossStopsAtItsStep) {
  Folders f;
  manual_seed(9);
  std::map<std::string, Tensor> w = nn::create_model("resnet20", 5)->state_dict();
  w.at("linear.weight").fill_(0.0);
  w.at("linear.bias").copy_(Tensor::from_vector(std::vector<float>{-3e38f, 3e38f, 3e38f, 3e38f, 3e38f}, {5}));
  write_safetensors(f.dir + "/overflowing.safetensors", w);
  train::TrainConfig c = small_config(f, "inf");
  c.init = f.dir + "/overflowing.safetensors";
  c.label_smoothing = 0;
  c.steps = 3;
  const std::string what = training_error(c);
  EXPECT_NE(what.find("the loss is infinite"), std::string::npos) << what;
  EXPECT_NE(what.find("step 1"), std::string::npos) << what;
}

// A model diverging between two validations: its scores are all NaN at the end of the first
// epoch (while the training loss is still finite, 1e20), which is 0% top-1, not a best model;
// the epoch line counts them. Its batch-norm variances have overflowed by then, so the
// checkpoint after that validation is refused (naming the tensor) and the run stops.
TEST(Train, ADivergedModelIsNeverTheBest) {
  Folders f;
  train::TrainConfig c = small_config(f, "diverged");
  c.data = f.val;  // 30 images: 4 steps an epoch
  c.val = f.val;
  c.optimizer = "sgd";
  c.lr = 1e6;
  c.steps = 30;
  c.save_every = 0;  // only at the epoch's end, after its validation
  const std::string what = training_error(c);
  EXPECT_TRUE(what.find("the loss is nan") != std::string::npos || what.find("is not finite") != std::string::npos)
      << what;
  EXPECT_FALSE(fs::exists(c.out + "/best.safetensors"));
  std::ifstream in(c.out + "/metrics.jsonl");
  int validations = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.at("kind") != "epoch") continue;
    ++validations;
    EXPECT_EQ(j.at("val_nonfinite"), 30) << line;
  }
  EXPECT_GE(validations, 1);
}

// The checkpoint a stopped run calls good is good in every tensor it keeps: its batch-norm
// statistics and momentum slots too, not only its weights (the variances overflow first, while
// the weights and the loss are still finite: that checkpoint is refused, naming the tensor).
TEST(Train, TheLastGoodCheckpointIsFiniteThroughout) {
  Folders f;
  for (const bool average : {false, true}) {
    train::TrainConfig c = small_config(f, average ? "diverged_ema" : "diverged");
    c.data = f.val;
    c.optimizer = "sgd";
    c.lr = 1e6;
    c.steps = 30;
    c.save_every = 1;
    if (average) c.ema_decay = 0.9;
    const std::string what = training_error(c);
    EXPECT_NE(what.find("keeps the last good checkpoint"), std::string::npos) << what;
    EXPECT_NE(what.find("training stopped"), std::string::npos) << what;
    if (what.find("is not finite") != std::string::npos) {  // the statistics, not the loss: logged as well
      std::ifstream in(c.out + "/metrics.jsonl");
      std::string line, last;
      while (std::getline(in, line)) last = line;
      const nlohmann::json j = nlohmann::json::parse(last);
      EXPECT_EQ(j.at("kind"), "error") << last;
      EXPECT_NE(what.find(j.at("not_finite").get<std::string>() + " is not finite"), std::string::npos) << last;
    }
    const train::Checkpoint ck = train::load_checkpoint(c.out + "/last.safetensors");
    EXPECT_EQ(ck.ema.empty(), !average);
    EXPECT_FALSE(ck.optimizer.empty());
    for (const auto* part : {&ck.model, &ck.ema, &ck.optimizer})
      for (const auto& [name, t] : *part) {
        if (!is_floating(t.dtype())) continue;
        for (double v : t.to_vector<double>()) ASSERT_TRUE(std::isfinite(v)) << name;
      }
  }
}

// A later epoch that only ties the best top-1 does not replace best.safetensors: the first
// epoch to reach it stays. With lr 0 and batch norm's running statistics frozen (decay 1), every
// epoch's evaluation is the same.
TEST(Train, ATieKeepsTheFirstBestEpoch) {
  Folders f;
  train::TrainConfig c = small_config(f, "tie");
  c.val = f.val;
  c.epochs = 3;
  c.lr = 0;
  c.bn_decay = 1.0;
  train::train_model(c, Device::cpu());
  std::vector<double> top1;
  std::ifstream in(c.out + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.at("kind") == "epoch") top1.push_back(j.at("val_top1").get<double>());
  }
  ASSERT_EQ(top1.size(), 3u);
  ASSERT_EQ(top1[0], top1[1]);
  ASSERT_EQ(top1[0], top1[2]);
  const int64_t last = train::load_checkpoint(c.out + "/last.safetensors").position.step;
  EXPECT_EQ(train::load_checkpoint(c.out + "/best.safetensors").position.step * 3, last);
}

// Class-mean features are taken in evaluation mode, and a model in training stays in training
// (mid-run use must not freeze batch norm and dropout); each class's count is its images.
TEST(Train, ClassMeanFeaturesLeaveTheModeAsItWas) {
  Folders f;
  const std::shared_ptr<nn::Classifier> model = nn::create_model("resnet20", 5);
  data::LoaderOptions o;
  o.mode = data::Mode::Eval;
  o.size = 32;
  o.batch_size = 4;
  data::Loader loader(data::load_dataset(f.val), o);
  model->train();
  const emd::Domain domain = train::class_mean_features(*model, loader, Device::cpu());
  EXPECT_TRUE(model->is_training());
  EXPECT_EQ(domain.counts, (std::vector<double>{6, 6, 6, 6, 6}));
  EXPECT_EQ(domain.classes, data::load_dataset(f.val).classes);
  model->eval();  // the same means from a model already in evaluation mode, which stays there
  const emd::Domain again = train::class_mean_features(*model, loader, Device::cpu());
  EXPECT_FALSE(model->is_training());
  EXPECT_EQ(again.features.to_vector<float>(), domain.features.to_vector<float>());
}

TEST(Train, MismatchingCheckpointsAreRefusedByName) {
  Folders f;
  train::TrainConfig c = small_config(f, "five");
  c.steps = 2;
  train::train_model(c, Device::cpu());
  // Four classes: the same folder without its last class.
  const std::string four = f.dir + "/four";
  class_folder(four, {8, 8, 8, 8}, 3);
  train::TrainConfig ft = small_config(f, "finetune");
  ft.data = four;
  ft.steps = 2;
  ft.init = c.out + "/last.safetensors";
  const std::string what = training_error(ft);  // a 5-class checkpoint into a 4-class model
  EXPECT_NE(what.find("trained on other classes than --data"), std::string::npos) << what;
  EXPECT_NE(what.find("(class 'class4' of the checkpoint is not in --data)"), std::string::npos) << what;
  EXPECT_NE(what.find("--reset-classifier"), std::string::npos) << what;
  EXPECT_FALSE(fs::exists(ft.out));  // a failed --init leaves no empty run folder
  ft.reset_classifier = true;  // fine-tuning to new classes
  ft.out = f.dir + "/finetune2";
  fs::remove_all(ft.out);
  EXPECT_EQ(train::train_model(ft, Device::cpu()).steps, 2);
  EXPECT_EQ(train::resolve_defaults(ft).decay_epochs, 2.0);  // SPEC.md: 2, also with --init (no hidden switch)
  {  // Resumed without --init, the run's config.json still says what it started from.
    train::TrainConfig more = ft;
    more.init = "";
    more.reset_classifier = false;
    more.resume = true;
    more.steps = 3;
    EXPECT_EQ(train::train_model(more, Device::cpu()).steps, 3);
    std::ifstream in(ft.out + "/config.json");
    const nlohmann::json j = nlohmann::json::parse(in);
    EXPECT_EQ(j.at("init"), ft.init);
    EXPECT_EQ(j.at("reset_classifier"), true);
    EXPECT_EQ(j.at("resume"), true);
  }
  // Resuming with another global batch is refused (steps and the schedule count in it).
  train::TrainConfig smaller = c;
  smaller.resume = true;
  smaller.steps = 4;
  smaller.batch_size = 4;
  const std::string smaller_error = training_error(smaller);
  EXPECT_NE(smaller_error.find("global batch of 8"), std::string::npos) << smaller_error;
  EXPECT_NE(smaller_error.find("give --batch-size 8 to continue it"), std::string::npos) << smaller_error;
  // A batch size under 2 is refused before anything is written (batch norm needs two images).
  train::TrainConfig single = c;
  single.out = f.dir + "/single";
  single.batch_size = 1;
  const std::string single_error = training_error(single);
  EXPECT_NE(single_error.find("at least 2 images per process"), std::string::npos) << single_error;
  EXPECT_FALSE(fs::exists(single.out));
  // Resuming a run with another model is refused naming both.
  train::TrainConfig other = c;
  other.model = "resnet32";
  other.resume = true;
  other.steps = 4;
  EXPECT_NE(training_error(other).find("resnet20"), std::string::npos);  // names both models
  // Resuming on data with other classes is refused naming the first class that differs, and
  // the first class whose image count does.
  const std::string renamed = f.dir + "/renamed";
  class_folder(renamed, {8, 8, 8, 8, 8}, 3, [&] { fs::rename(renamed + "/class4", renamed + "/zebra"); }, "zebra");
  train::TrainConfig elsewhere = c;
  elsewhere.data = renamed;
  elsewhere.resume = true;
  elsewhere.steps = 4;
  const std::string other_classes = training_error(elsewhere);
  EXPECT_NE(other_classes.find("classes (class 'zebra' of --data is not one of the 5 of the run)"), std::string::npos)
      << other_classes;
  EXPECT_NE(other_classes.find("train_counts (value 0 8, the run's 48)"), std::string::npos) << other_classes;
  // Resuming with settings that change the run's course is refused naming each one; more
  // steps, other workers and logging are a continuation.
  train::TrainConfig changed = c;
  changed.resume = true;
  changed.steps = 4;
  changed.optimizer = "sgd";
  changed.lr = 0.5;
  changed.crop = "torchvision";
  const std::string refused = training_error(changed);
  EXPECT_NE(refused.find("optimizer \"sgd\" (was \"rmsprop\")"), std::string::npos) << refused;
  EXPECT_NE(refused.find("crop \"torchvision\" (was \"tf-slim\")"), std::string::npos) << refused;
  EXPECT_NE(refused.find("min_crop_area 0.08 (was 0.05)"), std::string::npos) << refused;
  EXPECT_NE(refused.find("lr 0.5"), std::string::npos) << refused;
  train::TrainConfig averaged = c;  // a moving average the run never had: config.json's word
  averaged.resume = true;
  averaged.steps = 4;
  averaged.ema_decay = 0.999;
  const std::string no_average = training_error(averaged);
  EXPECT_NE(no_average.find("ema_decay 0.999 (was 0.0)"), std::string::npos) << no_average;
  train::TrainConfig more = c;
  more.resume = true;
  more.steps = c.steps + 1;
  more.workers = c.workers + 1;
  more.log_every = 1;
  EXPECT_EQ(train::train_model(more, Device::cpu()).steps, c.steps + 1);
  const train::RecordedRun recorded = train::read_recorded_run(c.out + "/last.safetensors");
  EXPECT_EQ(recorded.classes, data::load_dataset(c.data).classes);
  EXPECT_EQ(recorded.model, c.model);
  EXPECT_EQ(recorded.input_size, nn::default_input_size(c.model));  // the size it trained at: resnet20 takes 32 by default
  EXPECT_NO_THROW(recorded.check_model(c.model));
  EXPECT_THROW(recorded.check_model("resnet50"), Error);
  // A list file without class names records none (its labels are the outputs' indices), so
  // fgvc-eval scores other data by position, as before.
  {
    const data::Dataset folder = data::load_dataset(f.train);
    std::ofstream list(f.dir + "/numbered.txt");
    for (const data::Sample& smp : folder.samples) list << smp.path << "\t" << smp.label << "\n";
  }
  train::TrainConfig numbered = small_config(f, "numbered");
  numbered.data = f.dir + "/numbered.txt";
  numbered.steps = 1;
  ASSERT_EQ(train::train_model(numbered, Device::cpu()).steps, 1);
  EXPECT_TRUE(train::read_recorded_run(numbered.out + "/last.safetensors").classes.empty());
}

// Weights of another network are refused for what they are, not by a wall of tensor names:
// an fgvc-train checkpoint names its model (fgvc-eval, fgvc-infer, fgvc-extract, --init), other
// files say how many of the network's tensors they lack; a network trained for other classes,
// given to --init without --reset-classifier, is told to add it.
TEST(TrainApps, WeightsOfAnotherNetworkAreRefusedForWhatTheyAre) {
  Folders f;
  train::TrainConfig c = small_config(f, "another_network");
  c.steps = 1;
  train::train_model(c, Device::cpu());
  const std::string ck = c.out + "/last.safetensors";
  {
    std::ofstream x(f.dir + "/x.txt");  // fgvc-infer's input is never reached
  }
  for (const std::string& command :
       {"fgvc-eval --device cpu --model resnet32 --weights " + ck + " --data " + f.val,
        "fgvc-infer --device cpu --model resnet32 --weights " + ck + " --input " + f.dir + "/x.txt --output " + f.dir +
            "/y.safetensors",
        "fgvc-extract --device cpu --model resnet32 --weights " + ck + " --data " + f.val + " --out " + f.dir +
            "/d.safetensors",
        "fgvc-train --device cpu --model resnet32 --init " + ck + " --data " + f.train + " --out " + f.dir +
            "/init_other --steps 1 --batch-size 8"}) {
    const testing::Outcome r = testing::run_app(command, f.dir);
    EXPECT_EQ(r.code, 1) << command << "\n" << r.err;
    EXPECT_NE(r.err.find(ck + ": a checkpoint of resnet20, not of resnet32 (give --model resnet20)\n"), std::string::npos)
        << command << "\n" << r.err;
  }
  // The same weights without fgvc's metadata (as a timm file would come).
  const SafetensorsFile full = read_safetensors(ck);
  std::map<std::string, Tensor> bare;
  for (const auto& [name, t] : full.tensors)
    if (name.rfind("ema.", 0) != 0 && name.rfind("optim.", 0) != 0) bare[name] = t;
  write_safetensors(f.dir + "/bare.safetensors", bare, {});
  const std::shared_ptr<nn::Classifier> resnet56 = nn::create_model("resnet56", 5);
  try {
    nn::load_weights(*resnet56, f.dir + "/bare.safetensors");
    ADD_FAILURE() << "resnet20's weights loaded into resnet56";
  } catch (const Error& e) {
    const std::string what = e.what();
    // resnet56's blocks 3-8 of each stage are not in resnet20's file, 10 tensors each.
    const size_t all = resnet56->state_dict().size();
    EXPECT_EQ(all, 332u);
    EXPECT_NE(what.find("not weights of this network (180 of its 332 tensors are not in the file); missing (180): "),
              std::string::npos)
        << what;
  }
  // resnet20 for 5 classes into resnet20 for 4.
  const std::string four = f.dir + "/four";
  class_folder(four, {8, 8, 8, 8}, 3);
  train::TrainConfig ft = small_config(f, "finetune_bare");
  ft.data = four;
  ft.steps = 1;
  ft.init = f.dir + "/bare.safetensors";
  const std::string what = training_error(ft);
  EXPECT_NE(what.find("mis-shaped or mistyped (2): linear.bias: [5] vs [4] linear.weight: [5, 64] vs [4, 64]; a classifier for "
                      "other classes: add --reset-classifier to fine-tune with a new one"),
            std::string::npos)
      << what;
  ft.reset_classifier = true;
  EXPECT_EQ(train::train_model(ft, Device::cpu()).steps, 1);
}

// --resume from a file without optimiser state (best.safetensors copied over last, or a last
// with its optim.* tensors removed) is refused: the run would go on with the optimiser's slots
// restarted (RMSProp's mean square at 1, its momentum at 0) and no word said.
TEST(Train, AResumeFromAFileWithoutOptimiserStateIsRefused) {
  Folders f;
  train::TrainConfig c = small_config(f, "no_optim_run");
  c.steps = 2;
  train::train_model(c, Device::cpu());
  SafetensorsFile full = read_safetensors(c.out + "/last.safetensors");
  std::map<std::string, Tensor> weights;
  for (const auto& [name, t] : full.tensors)
    if (name.rfind("optim.", 0) != 0) weights[name] = t;
  ASSERT_LT(weights.size(), full.tensors.size());
  write_safetensors(c.out + "/last.safetensors", weights, full.metadata);
  train::TrainConfig resumed = c;
  resumed.resume = true;
  resumed.steps = 4;
  const std::string refused = training_error(resumed);
  EXPECT_NE(refused.find("--resume: " + c.out + "/last.safetensors holds no optimiser state"), std::string::npos)
      << refused;
  EXPECT_NE(refused.find("for the 2 step(s) it has taken"), std::string::npos) << refused;
  // With its state back, the same run goes on.
  write_safetensors(c.out + "/last.safetensors", full.tensors, full.metadata);
  EXPECT_EQ(train::train_model(resumed, Device::cpu()).steps, 4);
}

// A checkpoint copied alone into a new folder (no config.json) records its run's settings: a
// --resume with others is refused naming them and the file; the run's own settings continue
// it, and the new config.json says what the run started from (--init). A checkpoint of before
// the record (no "settings") still resumes, on its own checks.
TEST(Train, ACheckpointCopiedAloneKeepsItsRunsSettings) {
  Folders f;
  train::TrainConfig source = small_config(f, "alone_init");
  source.steps = 1;
  train::train_model(source, Device::cpu());
  train::TrainConfig c = small_config(f, "alone_run");
  c.steps = 2;
  c.init = source.out + "/last.safetensors";
  train::train_model(c, Device::cpu());
  const std::string copy = f.dir + "/alone_copy";
  fs::remove_all(copy);
  fs::create_directories(copy);
  fs::copy_file(c.out + "/last.safetensors", copy + "/last.safetensors");

  train::TrainConfig changed = c;
  changed.out = copy;
  changed.init = "";
  changed.resume = true;
  changed.steps = 3;
  changed.lr = 0.5;
  changed.seed = 7;
  const std::string refused = training_error(changed);
  EXPECT_NE(refused.find("this run is not the one in " + copy + "/last.safetensors"), std::string::npos) << refused;
  EXPECT_NE(refused.find("lr 0.5 (was 0.045)"), std::string::npos) << refused;
  EXPECT_NE(refused.find("seed 7 (was 0)"), std::string::npos) << refused;
  EXPECT_FALSE(fs::exists(copy + "/config.json"));  // refused before anything is written

  train::TrainConfig same = changed;
  same.lr = c.lr;
  same.seed = c.seed;
  EXPECT_EQ(train::train_model(same, Device::cpu()).steps, 3);
  std::ifstream in(copy + "/config.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("init"), c.init);
  const nlohmann::json record = nlohmann::json::parse(train::checkpoint_settings(copy + "/last.safetensors"));
  EXPECT_EQ(record.at("init"), c.init);  // the resumed run's checkpoints keep it too
  EXPECT_EQ(record.at("lr"), c.lr);

  // Without the record (a checkpoint of before it), only the checkpoint's own checks apply.
  SafetensorsFile old = read_safetensors(c.out + "/last.safetensors");
  old.metadata.erase("settings");
  fs::remove_all(copy);
  fs::create_directories(copy);
  write_safetensors(copy + "/last.safetensors", old.tensors, old.metadata);
  EXPECT_EQ(train::checkpoint_settings(copy + "/last.safetensors"), "");
  EXPECT_EQ(train::train_model(changed, Device::cpu()).steps, 3);
}

// --init from a run that recorded its classes: the classifier rows follow the names when the
// same classes come in another order (stage 2 on a list whose classes are ordered otherwise),
// and other classes are refused unless --reset-classifier starts a new classifier.
TEST(Train, InitMatchesTheClassifierRowsByClassName) {
  Folders f;
  train::TrainConfig first = small_config(f, "init_source");
  first.steps = 2;
  train::train_model(first, Device::cpu());
  const std::string source = first.out + "/last.safetensors";
  const std::vector<std::string> names = train::read_recorded_run(source).classes;
  ASSERT_EQ(names.size(), 5u);
  // The same images as a list whose classes run backwards: class4 is label 0, and so on.
  const data::Dataset folder = data::load_dataset(f.train);
  const std::string list = f.dir + "/reversed.txt";
  {
    std::ofstream out(list), classes(data::list_classes_path(list));
    for (const data::Sample& smp : folder.samples) out << smp.path << "\t" << 4 - smp.label << "\n";
    for (int k = 4; k >= 0; --k) classes << folder.classes[static_cast<size_t>(k)] << "\n";
  }
  train::TrainConfig second = small_config(f, "init_reversed");
  second.data = list;
  second.init = source;
  second.steps = 1;
  second.lr = 1e-30;  // a step that leaves the weights as loaded
  train::train_model(second, Device::cpu());
  const std::map<std::string, Tensor> was = read_safetensors(source).tensors,
                                      now = read_safetensors(second.out + "/last.safetensors").tensors;
  for (const char* name : {"linear.weight", "linear.bias"}) {
    const Tensor a = was.at(name), b = now.at(name);
    ASSERT_EQ(a.shape(), b.shape()) << name;
    for (int64_t row = 0; row < 5; ++row)
      EXPECT_EQ(b.select(0, row).to_vector<float>(), a.select(0, 4 - row).to_vector<float>()) << name << " row " << row;
  }
  // Other classes (the same count, one name changed): refused, naming the class.
  {
    std::ofstream classes(data::list_classes_path(list));
    for (int k = 4; k >= 1; --k) classes << folder.classes[static_cast<size_t>(k)] << "\n";
    classes << "a_new_class\n";
  }
  train::TrainConfig other = small_config(f, "init_other");
  other.data = list;
  other.init = source;
  other.steps = 1;
  const std::string what = training_error(other);
  EXPECT_NE(what.find("class 'a_new_class' of --data is not one of the 5 of the checkpoint"), std::string::npos) << what;
  other.reset_classifier = true;
  EXPECT_EQ(train::train_model(other, Device::cpu()).steps, 1);
}

// --epochs is a count of epochs: a batch whose files were all unreadable makes no step, and
// the run still ends at the last epoch's end rather than going on into the next.
// A batch that unreadable files leave with one image is skipped, with a warning: batch norm
// in training needs two values per channel, and Inception's auxiliary head at 299 has a 1 x 1
// map (it stopped the run). Four files, one unreadable, batches of 2: whichever way the epoch
// is shuffled, one batch has two images and the other one.
TEST(Train, ABatchLeftWithOneImageIsSkipped) {
  Folders f;
  const std::string data = f.dir + "/one_left_data";
  class_folder(data, {2, 1}, 5, [&] { testing::write_bytes(data + "/class1/bad.jpg", {'n', 'o'}); }, "class1/bad.jpg");
  train::TrainConfig c = small_config(f, "one_left");
  c.data = data;
  c.batch_size = 2;
  c.epochs = 2;
  ::testing::internal::CaptureStderr();
  const train::TrainSummary s = train::train_model(c, Device::cpu());
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.epochs_done, 2);
  EXPECT_EQ(s.steps, 2);
  EXPECT_EQ(s.skipped, 1);  // (each unreadable file counts once)
  EXPECT_NE(err.find("a process's share of it was one image"), std::string::npos) << err;
}

TEST(Train, EpochsEndAtTheEpochWhenBatchesAreUnreadable) {
  Folders f;
  const std::string data = f.dir + "/unreadable_mix5";
  class_folder(data, {5, 5}, 4, [&] {
    for (const char* cls : {"class0", "class1"})
      for (int i = 0; i < 3; ++i) testing::write_bytes(data + "/" + cls + "/bad" + std::to_string(i) + ".jpg", {'n', 'o'});
  }, "3 bad.jpg per class");
  train::TrainConfig c = small_config(f, "epochs_skipping");
  c.data = data;
  c.batch_size = 2;  // 8 batches of 16 files, 10 of them readable: in this seed's orders, batches of no
                     // readable file, of one (skipped too: ABatchLeftWithOneImageIsSkipped) and of two
  c.epochs = 2;
  const train::TrainSummary s = train::train_model(c, Device::cpu());
  EXPECT_EQ(s.epochs_done, 2);
  EXPECT_LT(s.steps, 16);  // batches skipped (6 of the 16 are trained)
  EXPECT_GE(s.steps, 4);   // the stops below come after steps 1 to 3
  EXPECT_EQ(s.skipped, 6);
  const train::Checkpoint ck = train::load_checkpoint(c.out + "/last.safetensors");
  EXPECT_EQ(ck.position.epoch, 2);
  EXPECT_EQ(ck.position.batch, 0);
  EXPECT_EQ(ck.position.step, s.steps);
  std::ifstream in(c.out + "/metrics.jsonl");
  std::vector<int64_t> epochs;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.at("kind") == "epoch") {
      epochs.push_back(j.at("epoch").get<int64_t>());
      EXPECT_TRUE(j.at("complete").get<bool>()) << line;
    }
  }
  EXPECT_EQ(epochs, (std::vector<int64_t>{1, 2}));
  // Each epoch line counts its 6 unreadable files, also where --resume took the epoch up in
  // the middle (the files skipped before are in the checkpoint).
  const auto skipped_per_epoch = [](const std::string& run) {
    std::vector<int64_t> out;
    std::ifstream metrics(run + "/metrics.jsonl");
    for (std::string line; std::getline(metrics, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.at("kind") == "epoch") out.push_back(j.at("skipped").get<int64_t>());
    }
    return out;
  };
  EXPECT_EQ(skipped_per_epoch(c.out), (std::vector<int64_t>{6, 6}));
  for (const int64_t first_steps : {1, 2, 3}) {
    train::TrainConfig part = c;
    part.out = c.out + "_part" + std::to_string(first_steps);
    fs::remove_all(part.out);
    part.epochs = 0;
    part.steps = first_steps;
    train::train_model(part, Device::cpu());
    part.steps = 0;
    part.epochs = 2;
    part.resume = true;
    train::train_model(part, Device::cpu());
    EXPECT_EQ(skipped_per_epoch(part.out), (std::vector<int64_t>{6, 6})) << first_steps;
    EXPECT_TRUE(same_bytes(c.out + "/last.safetensors", part.out + "/last.safetensors")) << first_steps;
    // Stopped (as by SIGTERM) after that step instead: the batch taken and given back, with
    // its unreadable files, is counted once, when the resumed run takes it.
    train::TrainConfig stopped = c;
    stopped.out = c.out + "_stopped" + std::to_string(first_steps);
    fs::remove_all(stopped.out);
    stopped.on_step = [first_steps](int64_t step) {
      if (step == first_steps) train::request_stop(SIGTERM);
    };
    const train::TrainSummary first = train::train_model(stopped, Device::cpu());
    train::request_stop(0);
    EXPECT_EQ(first.stopped_by, SIGTERM) << first_steps;
    stopped.on_step = nullptr;
    stopped.resume = true;
    train::train_model(stopped, Device::cpu());
    EXPECT_EQ(skipped_per_epoch(stopped.out), (std::vector<int64_t>{6, 6})) << first_steps << " stopped";
    EXPECT_TRUE(same_bytes(c.out + "/last.safetensors", stopped.out + "/last.safetensors")) << first_steps << " stopped";
  }
  // Resumed with the same total, the run is complete: nothing to do.
  train::TrainConfig again = c;
  again.resume = true;
  const train::TrainSummary r = train::train_model(again, Device::cpu());
  EXPECT_EQ(r.images, 0);
  EXPECT_EQ(r.steps, s.steps);
}

// A --save-every checkpoint on an epoch's last step holds the epoch still open; if the run is
// cut off after that epoch's line and before its epoch-end save, --resume closes the epoch
// again: metrics.jsonl keeps one line for it, not two. (The checkpoint cut short is made here
// from the epoch-end one: the same weights, the position one save earlier.)
TEST(Train, ResumeAfterAnEpochEndCutShortLogsTheEpochOnce) {
  Folders f;
  train::TrainConfig c = small_config(f, "epoch_cut_short");
  c.steps = 93 / 8;  // one epoch
  const train::TrainSummary s = train::train_model(c, Device::cpu());
  ASSERT_EQ(s.epochs_done, 1);
  const std::string last = c.out + "/last.safetensors";
  SafetensorsFile file = read_safetensors(last);
  nlohmann::json position = nlohmann::json::parse(file.metadata.at("position"));
  ASSERT_EQ(position.at("epoch"), 1);
  position["epoch"] = 0;
  position["batch"] = c.steps;
  file.metadata["position"] = position.dump();
  write_safetensors(last, file.tensors, file.metadata);
  train::TrainConfig more = c;
  more.resume = true;
  more.steps = c.steps + 2;
  EXPECT_EQ(train::train_model(more, Device::cpu()).steps, c.steps + 2);
  std::ifstream in(c.out + "/metrics.jsonl");
  int first_epoch_lines = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    first_epoch_lines += j.at("kind") == "epoch" && j.at("epoch") == 1;
  }
  EXPECT_EQ(first_epoch_lines, 1);
  EXPECT_EQ(train::load_checkpoint(last).position.epoch, 1);
}

// A validation set without one readable image has no accuracy: its lines say null, nothing is
// saved as the best, and the run counts its unreadable files.
TEST(Train, UnreadableValidationIsCountedNotScored) {
  Folders f;
  const std::string val = f.dir + "/val_unreadable";
  for (const char* cls : {"class0", "class1"}) {
    fs::create_directories(val + "/" + cls);
    testing::write_bytes(val + "/" + cls + "/x.jpg", {'n', 'o'});
  }
  train::TrainConfig c = small_config(f, "val_unreadable_run");
  c.val = val;
  c.steps = 2;
  const train::TrainSummary s = train::train_model(c, Device::cpu());
  EXPECT_EQ(s.val_skipped, 2);
  EXPECT_LT(s.best_top1, 0);  // none
  EXPECT_FALSE(fs::exists(c.out + "/best.safetensors"));
  std::ifstream in(c.out + "/metrics.jsonl");
  int epoch_lines = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.at("kind") != "epoch") continue;
    ++epoch_lines;
    EXPECT_TRUE(j.at("val_top1").is_null()) << line;
    EXPECT_EQ(j.at("val_images"), 0) << line;
    EXPECT_EQ(j.at("val_skipped"), 2) << line;
  }
  EXPECT_EQ(epoch_lines, 1);
}

// head/tail against a hand count: classes with >= 10 training images are head.
TEST(Evaluate, HeadTailSplitMatchesAHandCount) {
  train::EvalResult r;
  r.per_class = {{4, 3, 4}, {5, 5, 5}, {2, 0, 1}, {3, 1, 2}, {0, 0, 0}};  // images, top-1 right, top-5 right
  for (const auto& c : r.per_class) r.images += c.images, r.top1 += c.top1, r.top5 += c.top5;
  const train::HeadTailResult h = train::head_tail(r, {50, 10, 9, 1, 30}, 10);
  EXPECT_EQ(h.head_classes, 3);  // class 4 is head-sized without validation images: the groups add up to 5
  EXPECT_EQ(h.tail_classes, 2);
  EXPECT_EQ(h.head_images, 9);
  EXPECT_EQ(h.tail_images, 5);
  EXPECT_DOUBLE_EQ(h.head_top1, 8.0 / 9.0);
  EXPECT_DOUBLE_EQ(h.head_top5, 9.0 / 9.0);
  EXPECT_DOUBLE_EQ(h.tail_top1, 1.0 / 5.0);
  EXPECT_DOUBLE_EQ(h.tail_top5, 3.0 / 5.0);
  EXPECT_THROW(train::head_tail(r, {1, 2}, 10), Error);
}

// An ensemble of two models scores their mean softmax, over one view or 12 (fgvc-eval
// --crops 12), computed here image by image: top-1, top-5 (12 classes, so top-5 is not every
// image), per class, and the loss. The classifiers' biases are set so that averaging logits
// instead of probabilities ranks the images otherwise; the test checks it does.
// The evaluation tests' loader: one 32 px view, batches of 7 in file order.
data::LoaderOptions eval_options() {
  data::LoaderOptions o;
  o.mode = data::Mode::Eval;
  o.size = 32;
  o.batch_size = 7;
  o.shuffle = false;
  return o;
}

// `classes` class folders of `per_class` pictures each under `root`, read back as a dataset.
data::Dataset small_val_set(const std::string& root, int classes, int per_class, uint32_t seed) {
  class_folder(root, std::vector<int>(static_cast<size_t>(classes), per_class), seed);
  data::Dataset val = data::load_dataset(root);
  EXPECT_EQ(val.classes.size(), static_cast<size_t>(classes));
  return val;
}

TEST(Evaluate, EnsembleAndTwelveViewsAverageProbabilities) {
  Folders f;
  const data::Dataset val = small_val_set(f.dir + "/val12", 12, 3, 5);
  const int64_t n = static_cast<int64_t>(val.samples.size()), K = 12;
  manual_seed(11);
  auto a = nn::create_model("resnet20", K);
  auto b = nn::create_model("resnet20", K);
  // Class 3: a favours it, b rules it out. The mean probability keeps it first; the mean
  // logit puts it last.
  auto shift_bias = [](nn::Classifier& m, double by) {
    for (auto& [name, w] : m.named_parameters())
      if (name == "linear.bias") {
        std::vector<float> v = w.to_vector<float>();
        v[3] += static_cast<float>(by);
        Tensor(w).copy_(Tensor::from_vector(v, {static_cast<int64_t>(v.size())}));
      }
  };
  shift_bias(*a, 4.0);
  shift_bias(*b, -60.0);
  for (data::Mode mode : {data::Mode::Eval, data::Mode::Eval12}) {
    data::LoaderOptions o = eval_options();
    o.mode = mode;
    data::Loader la(val, o), lb(val, o);
    const int64_t views = la.views();
    const train::EvalResult r = train::evaluate({{a.get(), &la}, {b.get(), &lb}}, Device::cpu());
    EXPECT_EQ(r.images, n);
    NoGradGuard no_grad;
    int64_t top1 = 0, top5 = 0, by_logits_differ = 0;
    double loss = 0;
    std::vector<int64_t> per_class1(K, 0), per_class5(K, 0);
    for (int64_t i = 0; i < n; ++i) {
      std::vector<float> x(static_cast<size_t>(views * 3 * 32 * 32));
      std::string error;
      ASSERT_TRUE(la.load_sample(i, 0, x.data(), &error)) << error;
      const Tensor in = Tensor::from_vector(x, {views, 3, 32, 32});
      const Tensor za = a->forward(in), zb = b->forward(in);
      const std::vector<float> pa = kernels::softmax(za).to_vector<float>(), pb = kernels::softmax(zb).to_vector<float>();
      const std::vector<float> la_ = za.to_vector<float>(), lb_ = zb.to_vector<float>();
      std::vector<double> p(K, 0.0), z(K, 0.0);
      for (int64_t v = 0; v < views; ++v)
        for (int64_t k = 0; k < K; ++k) {
          p[k] += (double(pa[v * K + k]) + pb[v * K + k]) / (2.0 * views);
          z[k] += double(la_[v * K + k]) + lb_[v * K + k];
        }
      const int64_t label = val.samples[i].label;
      int64_t rank = 0;
      for (int64_t k = 0; k < K; ++k) rank += p[k] > p[label] || (p[k] == p[label] && k < label);
      if (rank == 0) top1++, per_class1[label]++;
      if (rank < 5) top5++, per_class5[label]++;
      loss -= std::log(p[label]);
      by_logits_differ += std::max_element(p.begin(), p.end()) - p.begin() != std::max_element(z.begin(), z.end()) - z.begin();
    }
    const std::string what = views == 1 ? "one view" : "12 views";
    EXPECT_EQ(r.top1, top1) << what;
    EXPECT_EQ(r.top5, top5) << what;
    for (int64_t k = 0; k < K; ++k) {
      EXPECT_EQ(r.per_class[k].top1, per_class1[k]) << what << ", class " << k;
      EXPECT_EQ(r.per_class[k].top5, per_class5[k]) << what << ", class " << k;
    }
    EXPECT_NEAR(r.loss, loss / n, 1e-5 * loss / n) << what;
    EXPECT_LT(top5, n) << what << ": top-5 must be able to miss";
    EXPECT_GT(top5, top1) << what;
    EXPECT_GT(by_logits_differ, 0) << what << ": averaging logits would rank these images the same";
  }
}

// Logits far apart (the classifier's bias alone): float32 probabilities round to 0 for all but
// the first class, and they used to tie and rank by class index (classes 0-3, at -50, came
// in the top 5 ahead of 5-7). Ranked by their log-probabilities, and the loss exact; logits
// all equal rank the true class behind the others (a tie counts against it).
TEST(Evaluate, FarApartLogitsRankByTheirValuesAndTiesCountAgainst) {
  Folders f;
  const data::Dataset val = small_val_set(f.dir + "/val10", 10, 2, 6);
  manual_seed(12);
  auto model = nn::create_model("resnet20", 10);
  const std::vector<float> bias = {-50, -49, -48, -47, 10, 9, 8, 7, 6, 200};
  for (auto& [name, w] : model->named_parameters()) {
    if (name == "linear.weight") Tensor(w).fill_(0.0);
    if (name == "linear.bias") Tensor(w).copy_(Tensor::from_vector(bias, {10}));
  }
  const data::LoaderOptions o = eval_options();
  data::Loader loader(val, o);
  train::EvalResult r = train::evaluate({{model.get(), &loader}}, Device::cpu());
  ASSERT_EQ(r.images, 20);
  EXPECT_EQ(r.top1, 2);   // class 9's images
  EXPECT_EQ(r.top5, 10);  // classes 9, 4, 5, 6, 7
  for (int64_t c = 0; c < 10; ++c) {
    const bool in_top5 = c == 9 || (c >= 4 && c <= 7);
    EXPECT_EQ(r.per_class[c].top5, in_top5 ? 2 : 0) << "class " << c;
  }
  double lse = 0;
  for (float b : bias) lse += std::exp(double(b) - 200.0);
  lse = 200.0 + std::log(lse);
  double loss = 0;
  for (int64_t c = 0; c < 10; ++c) loss += 2 * (lse - bias[c]);
  EXPECT_NEAR(r.loss, loss / 20, 1e-9 * loss / 20);  // about 165; the old floor of 1e-30 capped each image at 69
  for (auto& [name, w] : model->named_parameters())
    if (name == "linear.bias") Tensor(w).fill_(0.0);
  loader.start_epoch(0);
  r = train::evaluate({{model.get(), &loader}}, Device::cpu());
  EXPECT_EQ(r.top1, 0);
  EXPECT_EQ(r.top5, 0);
  EXPECT_NEAR(r.loss, std::log(10.0), 1e-12);
}

// A model with a NaN weight gives NaN scores: every image counts as wrong (a comparison with
// NaN is false, so a naive rank would call each one right), and the count says why.
TEST(Evaluate, NonFiniteScoresCountAsWrong) {
  Folders f;
  const data::Dataset val = data::load_dataset(f.val);
  manual_seed(12);
  auto m = nn::create_model("resnet20", 5);
  for (auto& [name, w] : m->named_parameters())
    if (name == "linear.bias") Tensor(w).fill_(std::nan(""));
  const data::LoaderOptions o = eval_options();
  data::Loader loader(val, o);
  const train::EvalResult r = train::evaluate({{m.get(), &loader}}, Device::cpu());
  EXPECT_EQ(r.images, 30);
  EXPECT_EQ(r.nonfinite, 30);
  EXPECT_EQ(r.top1, 0);
  EXPECT_EQ(r.top5, 0);
  EXPECT_TRUE(std::isnan(r.loss));
  // Fewer than 5 classes: still outside the top 5.
  data::Dataset three = val;
  three.classes.resize(3);
  three.samples.erase(std::remove_if(three.samples.begin(), three.samples.end(),
                                     [](const data::Sample& s) { return s.label >= 3; }),
                      three.samples.end());
  auto m3 = nn::create_model("resnet20", 3);
  for (auto& [name, w] : m3->named_parameters())
    if (name == "linear.bias") Tensor(w).fill_(std::nan(""));
  data::Loader loader3(three, o);
  const train::EvalResult r3 = train::evaluate({{m3.get(), &loader3}}, Device::cpu());
  EXPECT_GT(r3.images, 0);
  EXPECT_EQ(r3.nonfinite, r3.images);
  EXPECT_EQ(r3.top5, 0);
}

TEST(AtomicFile, AnUncommittedWriteLeavesTheOldFile) {
  const std::string path = test_dir("fgvc_train_") + "/file.txt";
  write_file_atomic(path, "old");
  {
    AtomicFile f(path);
    f.write("new and half written");
  }  // no commit: as if the process died here
  EXPECT_EQ(testing::slurp(path), "old");
  for (const auto& e : fs::directory_iterator(fs::path(path).parent_path()))
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
}

// The replacement keeps the replaced file's permissions (a private checkpoint stays
// private), and a link planted under the temporary's name is not followed.
TEST(AtomicFile, KeepsPermissionsAndFollowsNoPlantedLink) {
  const std::string dir = test_dir("fgvc_train_");
  const std::string path = dir + "/private.txt", elsewhere = dir + "/elsewhere.txt";
  fs::remove(path);
  write_file_atomic(path, "v1");
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
  write_file_atomic(elsewhere, "untouched");
  fs::remove(path + atomic_temporary_suffix(::getpid()));
  fs::create_symlink(elsewhere, path + atomic_temporary_suffix(::getpid()));
  write_file_atomic(path, "v2");
  EXPECT_EQ(testing::slurp(path), "v2");
  EXPECT_EQ(testing::slurp(elsewhere), "untouched");
  EXPECT_EQ(fs::status(path).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_FALSE(fs::is_symlink(path));
}

// A pipe (or a device, /dev/stdout) as the target is written through: the reader gets the
// bytes and the pipe stays a pipe (a rename over it would leave a regular file, read by nobody).
TEST(AtomicFile, APipeIsWrittenThroughNotReplaced) {
  const std::string path = test_dir("fgvc_train_") + "/pipe";
  fs::remove(path);
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  std::string got;
  std::thread reader([&] { got = testing::slurp(path); });
  write_file_atomic(path, "through the pipe");
  reader.join();
  EXPECT_EQ(got, "through the pipe");
  EXPECT_TRUE(fs::is_fifo(path));
  // A link to a regular file: the file is replaced, the link stays. A link into /proc (as
  // /dev/stdout is) writes to what the descriptor holds.
  const std::string dir = fs::path(path).parent_path().string(), real = dir + "/real.txt", link = dir + "/link.txt";
  fs::remove(real), fs::remove(link);
  write_file_atomic(real, "old");
  fs::create_symlink(real, link);
  write_file_atomic(link, "new");
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(testing::slurp(real), "new");
  const std::string held = dir + "/held.txt", fd_link = dir + "/fd_link";
  fs::remove(fd_link);
  const int fd = ::open(held.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  fs::create_symlink("/proc/self/fd/" + std::to_string(fd), fd_link);
  write_file_atomic(fd_link, "via the descriptor");
  ::close(fd);
  EXPECT_TRUE(fs::is_symlink(fd_link));
  EXPECT_EQ(testing::slurp(held), "via the descriptor");
}

// A process killed mid-write (SIGKILL runs no destructor) leaves PATH.tmp.HOST.PID: the next
// write of PATH removes those of this machine's processes that are gone, and leaves a running
// one's, another machine's (a shared folder: its PIDs mean nothing here) and other names.
TEST(AtomicFile, TemporariesOfDeadProcessesAreRemoved) {
  const std::string dir = test_dir("fgvc_train_"), path = dir + "/ck.safetensors";
  // A PID above any kernel's pid_max (at most 2^22): no process has it, now or later (a child
  // that has exited might have its PID reused before the write looks).
  const long child = 999999999;
  ASSERT_NE(::kill(static_cast<pid_t>(child), 0), 0);
  const std::string suffix = atomic_temporary_suffix(child);
  ASSERT_EQ(suffix.rfind(".tmp.", 0), 0u) << suffix;
  const std::string dead = path + suffix, alive = path + atomic_temporary_suffix(::getppid()),
                    other = path + ".tmp.notapid", neighbour = dir + "/other.safetensors" + suffix,
                    elsewhere = path + ".tmp.another-machine." + std::to_string(child),
                    older_form = path + ".tmp." + std::to_string(child);
  for (const std::string& p : {dead, alive, other, neighbour, elsewhere, older_form}) std::ofstream(p) << "partial";
  write_file_atomic(path, "whole");
  EXPECT_EQ(testing::slurp(path), "whole");
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(alive));
  EXPECT_TRUE(fs::exists(other));
  EXPECT_TRUE(fs::exists(elsewhere));
  EXPECT_TRUE(fs::exists(older_form));  // no machine named: not judged
  EXPECT_TRUE(fs::exists(neighbour));  // another target's: its own next write tidies it
}

// The chart renderer: ticks at 1-2-5 steps, a line drawn where its values put it, text and
// bars where they belong, and a PNG that decodes to the rendered pixels.
TEST(Plots, ChartDrawsWhatItIsGivenAndWritesAPng) {
  double lo = 0.13, hi = 9.7;
  EXPECT_EQ(train::nice_ticks(&lo, &hi, 5), (std::vector<double>{0, 2, 4, 6, 8, 10}));
  lo = 0.0012, hi = 0.0049;
  const std::vector<double> small = train::nice_ticks(&lo, &hi, 5);
  ASSERT_EQ(small.size(), 5u);
  EXPECT_NEAR(small.front(), 0.001, 1e-12);
  EXPECT_NEAR(small.back(), 0.005, 1e-12);
  lo = hi = 3;  // one value: a range around it
  EXPECT_GE(train::nice_ticks(&lo, &hi, 5).size(), 2u);
  EXPECT_LT(lo, 3);
  EXPECT_GT(hi, 3);
  // Values a few ulps apart (a step below an ulp would never advance), huge and non-finite ones.
  for (auto [a, b] : std::vector<std::pair<double, double>>{{0.1, std::nextafter(0.1, 1.0)}, {75, 75.00000000000001},
                                                            {1e16, 1e16 + 2}, {-INFINITY, NAN}, {-1e300, 1e300}}) {
    lo = a, hi = b;
    const std::vector<double> t = train::nice_ticks(&lo, &hi, 5);
    EXPECT_GE(t.size(), 2u) << a;
    EXPECT_LE(t.size(), 30u) << a;
    EXPECT_TRUE(std::isfinite(lo) && std::isfinite(hi) && hi > lo) << a;
  }

  train::Chart c(400, 300);
  c.set_labels("step", "loss");
  const train::Rgb red{200, 0, 0};
  c.line({0, 10}, {0, 10}, red, "");
  const std::vector<uint8_t> px = c.render();
  ASSERT_EQ(px.size(), 400u * 300 * 3);
  auto is = [&](int x, int y, train::Rgb k) {
    const uint8_t* p = &px[(static_cast<size_t>(y) * 400 + x) * 3];
    return p[0] == k.r && p[1] == k.g && p[2] == k.b;
  };
  // The diagonal: red pixels rise from the lower left to the upper right; none elsewhere far off it.
  std::vector<std::pair<int, int>> reds;
  for (int y = 0; y < 300; ++y)
    for (int x = 0; x < 400; ++x)
      if (is(x, y, red)) reds.push_back({x, y});
  ASSERT_GT(reds.size(), 200u);
  const auto [x_min, y_at_min] = *std::min_element(reds.begin(), reds.end());
  const auto [x_max, y_at_max] = *std::max_element(reds.begin(), reds.end());
  EXPECT_GT(y_at_min, y_at_max + 100);  // lower left to upper right
  for (const auto& [x, y] : reds) {
    const double t = double(x - x_min) / (x_max - x_min), want_y = y_at_min + t * (y_at_max - y_at_min);
    EXPECT_NEAR(y, want_y, 3.0) << x;
  }
  // Labels: dark pixels left of the plot (tick values, the y label) and under it.
  int dark_left = 0, dark_below = 0;
  for (int y = 0; y < 300; ++y)
    for (int x = 0; x < 400; ++x)
      if (is(x, y, {0, 0, 0})) {
        dark_left += x < x_min - 10;
        dark_below += y > y_at_min + 10;
      }
  EXPECT_GT(dark_left, 50);
  EXPECT_GT(dark_below, 50);

  // Bars on the right axis and category names; written as PNG and read back.
  train::Chart b(500, 320);
  b.set_labels("classes", "top-1 (%)", "images");
  b.set_y_range(0, 100);
  b.bars({40, 20, 5}, {217, 217, 217}, "training images");
  b.set_categories({"heron", "owl", "wren"});
  b.line({0, 1, 2}, {90, 60, NAN}, red, "top-1", true);
  const std::string dir = test_dir("chart");
  fs::create_directories(dir);
  std::string error;
  ASSERT_TRUE(b.write_png(dir + "/b.png", &error)) << error;
  std::vector<uint8_t> bytes;
  ASSERT_TRUE(data::read_file(dir + "/b.png", &bytes, &error)) << error;
  const data::Decoded d = data::decode_image(bytes, "b.png");
  ASSERT_TRUE(d.ok()) << d.error;
  EXPECT_EQ(d.image.width, 500);
  EXPECT_EQ(d.image.height, 320);
  EXPECT_EQ(d.image.rgb, b.render());
  EXPECT_FALSE(b.write_png(dir + "/no/such/folder/b.png", &error));
  EXPECT_NE(error.find("b.png"), std::string::npos) << error;
  // Bytes the font has no glyph for (UTF-8, tabs), names far too long for the room below the
  // axis, and bars that are all zero (drawn from 0, not from the middle of the plot).
  train::Chart odd(400, 300);
  odd.set_labels("caf\xc3\xa9\tx", "\x7f\x01");
  odd.bars({0, 0, 0}, {217, 217, 217}, "n\xc3\xa4me");
  odd.set_categories({std::string(200, 'w'), "\xe2\x82\xac", "x"});
  odd.line({0, 1, 2}, {1, 2, 3}, red, "\xff");
  const std::vector<uint8_t> o = odd.render();
  int bar_pixels = 0, red_pixels = 0;
  for (size_t k = 0; k + 2 < o.size(); k += 3) {
    bar_pixels += o[k] == 217 && o[k + 1] == 217 && o[k + 2] == 217;
    red_pixels += o[k] == 200 && o[k + 1] == 0 && o[k + 2] == 0;
  }
  EXPECT_LT(bar_pixels, 3 * 400);  // at most a line each at the axis, not columns of bar
  EXPECT_GT(red_pixels, 50);       // still a plot to draw into, despite the long name
}

// A run folder's plots from its metrics.jsonl and per_class.csv (one or several runs).
TEST(Plots, RunFolderGetsLossAccuracyAndPerClassPlots) {
  const std::string run = test_dir("plots_run");
  fs::remove_all(run);
  fs::create_directories(run);
  {
    std::ofstream m(run + "/metrics.jsonl");
    for (int s = 1; s <= 20; ++s)
      m << nlohmann::json{{"kind", "step"}, {"step", s}, {"epoch", 1 + s / 10}, {"loss", 2.0 / s}}.dump() << "\n";
    m << nlohmann::json{{"kind", "epoch"}, {"step", 10}, {"val_top1", 0.4}, {"val_top5", 0.8}}.dump() << "\n";
    m << nlohmann::json{{"kind", "epoch"}, {"step", 20}, {"val_top1", 0.6}, {"val_top5", 0.9}}.dump() << "\n";
    m << "null\n[]\n{\"kind\": 3}\n{\"kind\": \"step\", \"loss\": 1}\n{\"kind\": \"epoch\", \"step\": \"x\"}\n";  // not ours
    m << "{\"kind\": \"step\", \"st";  // a line cut short by a crash
  }
  { std::ofstream(run + "/per_class.csv") << "class,train_images,val_images,top1,top5\n\"a, b\",5,2,0.5,1\nc,9,2,1,1\n"; }
  EXPECT_EQ(train::make_plots(run), "");
  for (const char* png : {"loss.png", "accuracy.png", "per_class.png"}) {
    std::vector<uint8_t> bytes;
    std::string error;
    ASSERT_TRUE(data::read_file(run + "/" + png, &bytes, &error)) << png << ": " << error;
    EXPECT_TRUE(data::decode_image(bytes, png).ok()) << png;
  }
  // Two runs into a third folder; a run without --val draws no accuracy plot of its own.
  const std::string other = test_dir("plots_other"), both = test_dir("plots_both");
  fs::remove_all(other), fs::remove_all(both);
  fs::create_directories(other), fs::create_directories(both);
  { std::ofstream(other + "/metrics.jsonl") << nlohmann::json{{"kind", "step"}, {"step", 1}, {"loss", 1.0}}.dump() << "\n"; }
  EXPECT_EQ(train::make_plots({run, other}, both), "");
  EXPECT_TRUE(fs::exists(both + "/loss.png") && fs::exists(both + "/accuracy.png") && fs::exists(both + "/per_class.png"));
  EXPECT_EQ(train::make_plots(other), "");
  EXPECT_FALSE(fs::exists(other + "/accuracy.png"));
  // Without --val the accuracy plot shows the epochs' training top-1 alone.
  const std::string trained = test_dir("plots_train_only");
  fs::remove_all(trained);
  fs::create_directories(trained);
  {
    std::ofstream m(trained + "/metrics.jsonl");
    m << nlohmann::json{{"kind", "step"}, {"step", 1}, {"loss", 1.0}}.dump() << "\n";
    for (int e = 1; e <= 3; ++e)
      m << nlohmann::json{{"kind", "epoch"}, {"step", 10 * e}, {"train_top1", 0.2 * e}}.dump() << "\n";
  }
  EXPECT_EQ(train::make_plots(trained), "");
  EXPECT_TRUE(fs::exists(trained + "/accuracy.png"));
  EXPECT_NE(train::make_plots(run + "/missing_folder").find("no metrics.jsonl"), std::string::npos);
}

// per_class.png orders the classes by training images, most first (the paper's Figs. 2, 4),
// and each class keeps its own accuracy: read back from the pixels. The bars' heights must
// fall from left to right in proportion to the sorted counts, and the top-1 curve's points
// at the bars' centres must rank as the accuracies of the classes sorted that way.
TEST(Plots, PerClassPlotSortsClassesByTrainingImages) {
  const std::string run = test_dir("plots_per_class_order");
  fs::remove_all(run);
  fs::create_directories(run);
  { std::ofstream(run + "/metrics.jsonl") << nlohmann::json{{"kind", "step"}, {"step", 1}, {"loss", 1.0}}.dump() << "\n"; }
  // File order: counts 5, 50, 20, 80, 20, accuracies chosen so that the sorted order
  // (d, b, c, e, a: the tie keeps the file's order, as plots.cpp's stable sort says; with
  // five classes an unstable sort would happen to agree) reads 10, 90, 30, 70, 50 percent.
  {
    std::ofstream(run + "/per_class.csv") << "class,train_images,val_images,top1,top5\n"
                                             "a,5,4,0.5,1\nb,50,4,0.9,1\nc,20,4,0.3,1\nd,80,4,0.1,1\ne,20,4,0.7,1\n";
  }
  ASSERT_EQ(train::make_plots(run), "");
  std::vector<uint8_t> bytes;
  std::string error;
  ASSERT_TRUE(data::read_file(run + "/per_class.png", &bytes, &error)) << error;
  const data::Decoded d = data::decode_image(bytes, "per_class.png");
  ASSERT_TRUE(d.ok()) << d.error;
  const int w = d.image.width, h = d.image.height;
  auto pixel_is = [&](int x, int y, int r, int g, int b) {
    const uint8_t* p = &d.image.rgb[(static_cast<size_t>(y) * w + x) * 3];
    return p[0] == r && p[1] == g && p[2] == b;
  };
  // Bars: runs of columns holding a tall stack of the bar grey. A column's stack is its
  // longest unbroken vertical run of grey (the legend's swatch, in the same grey, is a short
  // run of its own, apart from the bar below it). Each bar's height is its tallest column's.
  std::vector<int> column_grey(w, 0);
  for (int x = 0; x < w; ++x)
    for (int y = 0, stack = 0; y < h; ++y) {
      stack = pixel_is(x, y, 217, 217, 217) ? stack + 1 : 0;
      column_grey[x] = std::max(column_grey[x], stack);
    }
  std::vector<int> heights, centres;
  for (int x = 0; x < w;) {
    if (column_grey[x] < 12) {
      ++x;
      continue;
    }
    int end = x, tallest = 0;
    while (end < w && column_grey[end] >= 12) tallest = std::max(tallest, column_grey[end]), ++end;
    heights.push_back(tallest), centres.push_back((x + end - 1) / 2);
    x = end;
  }
  ASSERT_EQ(heights.size(), 5u) << "bars found: " << heights.size();
  const double counts[] = {80, 50, 20, 20, 5};
  for (int k = 0; k < 5; ++k)  // the tallest bar is 80 images: the rest in proportion, to a few pixels
    EXPECT_NEAR(heights[k], heights[0] * counts[k] / 80, 4) << "bar " << k;
  // The top-1 curve (the first run's colour) at each bar's centre: higher on the image for a
  // higher accuracy, so its rows must rank as 10, 90, 30, 70, 50 percent do. Only the centre
  // column is read: the legend's swatch of that colour lies a few columns beside bar 3's.
  std::vector<double> line_y;
  for (int cx : centres) {
    double sum = 0;
    int found = 0;
    for (int y = 0; y < h; ++y)
      if (pixel_is(cx, y, 31, 119, 180)) sum += y, ++found;
    ASSERT_GT(found, 0) << "no top-1 point above the bar at x = " << cx;
    line_y.push_back(sum / found);
  }
  const double top1[] = {10, 90, 30, 70, 50};
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j)
      if (top1[i] > top1[j]) {
        EXPECT_LT(line_y[i], line_y[j]) << "classes at " << i << " and " << j;
      }
}

// per_class.csv keeps any class name: commas, quotes and line breaks are quoted on the way
// out and read back as they were (the per-class plot reads the file).
TEST(Plots, PerClassCsvRoundTripsAwkwardClassNames) {
  const std::string path = test_dir("per_class_names") + ".csv";
  train::EvalResult r;
  r.per_class = {{4, 3, 4}, {2, 1, 2}, {5, 5, 5}, {1, 0, 1}, {3, 2, 3}};
  const std::vector<std::string> names = {"plain", "a, b", "say \"hi\"", "two\nlines", "cr\r\nend"};
  train::write_per_class_csv(path, r, names, {10, 20, 30, 40, 50});
  std::ifstream in(path, std::ios::binary);
  const std::vector<std::vector<std::string>> records = train::read_csv(in);
  ASSERT_EQ(records.size(), names.size() + 1);
  EXPECT_EQ(records[0], (std::vector<std::string>{"class", "train_images", "val_images", "top1", "top5"}));
  for (size_t c = 0; c < names.size(); ++c) {
    ASSERT_EQ(records[c + 1].size(), 5u) << c;
    EXPECT_EQ(records[c + 1][0], names[c]);
    EXPECT_EQ(records[c + 1][1], std::to_string(10 * (c + 1)));
    EXPECT_EQ(records[c + 1][2], std::to_string(r.per_class[c].images));
    const double images = static_cast<double>(r.per_class[c].images);
    EXPECT_NEAR(std::stod(records[c + 1][3]), r.per_class[c].top1 / images, 1e-6) << c;  // 6 digits
    EXPECT_NEAR(std::stod(records[c + 1][4]), r.per_class[c].top5 / images, 1e-6) << c;
  }
  std::istringstream crlf("a,b\r\n\"x\r\ny\",2\r\nlast,3");  // CRLF records, no final line end
  EXPECT_EQ(train::read_csv(crlf), (std::vector<std::vector<std::string>>{{"a", "b"}, {"x\r\ny", "2"}, {"last", "3"}}));
}

// fgvc-train sent SIGTERM mid-run (as Slurm does before it kills a job) writes its checkpoint,
// exits 1 with an error line saying how to go on (the run did not reach its total), and the
// same command with --resume goes on from there.
TEST(TrainApps, SigtermCheckpointsAndSaysHowToResume) {
  Folders f;
  const std::string run = f.dir + "/sigterm";
  fs::remove_all(run);
  const std::string train = std::string(FGVC_BIN_DIR) + "/fgvc-train --device cpu --model resnet20 --data " + f.train +
                            " --out " + run + " --steps 100000 --batch-size 8 --log-every 1 --no-plots --json";
  // The signal once a step is logged (the handlers are in place by then); at most 120 s.
  const std::string script = "( " + train + " >" + f.dir + "/sig_out.txt 2>" + f.dir + "/sig_err.txt & pid=$!; " +
                             "for i in $(seq 2400); do grep -q '\"step\"' " + run + "/metrics.jsonl 2>/dev/null && break; " +
                             "sleep 0.05; done; kill -TERM $pid; wait $pid; echo $? >" + f.dir + "/sig_rc.txt )";
  ASSERT_EQ(std::system(script.c_str()), 0);
  EXPECT_EQ(testing::slurp(f.dir + "/sig_rc.txt"), "1\n") << testing::slurp(f.dir + "/sig_err.txt");
  const std::string err = testing::slurp(f.dir + "/sig_err.txt");
  EXPECT_EQ(err.rfind("fgvc-train: error: stopped by SIGTERM after step ", 0), 0u) << err;
  EXPECT_NE(err.find("--resume continues it"), std::string::npos) << err;
  const nlohmann::json j = testing::last_json_line(testing::slurp(f.dir + "/sig_out.txt"));
  EXPECT_EQ(j.at("stopped_by"), "SIGTERM");
  const int64_t steps = j.at("steps");
  EXPECT_GE(steps, 1);
  EXPECT_LT(steps, 100000);
  EXPECT_EQ(train::load_checkpoint(run + "/last.safetensors").position.step, steps);
  const testing::Outcome r = testing::run_app(
      "fgvc-train --device cpu --model resnet20 --data " + f.train + " --out " + run + " --steps " +
          std::to_string(steps + 2) + " --batch-size 8 --log-every 1 --no-plots --resume --json",
      f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(j.at("steps_run"), steps);
  const nlohmann::json resumed = testing::last_json_line(r.out);
  EXPECT_EQ(resumed.at("steps"), steps + 2);  // the run's total, and what this call took
  EXPECT_EQ(resumed.at("steps_run"), 2);
  EXPECT_EQ(resumed.at("images"), 16);
  EXPECT_FALSE(resumed.contains("stopped_by"));
  const testing::Outcome text = testing::run_app("fgvc-train --device cpu --model resnet20 --data " + f.train +
                                                     " --out " + run + " --steps " + std::to_string(steps + 5) +
                                                     " --batch-size 8 --no-plots --resume --quiet",
                                                 f.dir);
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_EQ(text.out.rfind("resumed at step " + std::to_string(steps + 2) + ": 3 steps to step " +
                               std::to_string(steps + 5) + " (",
                           0),
            0u)
      << text.out;
  // Its 3 steps log one line (--log-every 20): its loss alone, not "first -> last" of one line.
  EXPECT_TRUE(std::regex_search(text.out, std::regex(R"(img/s\), loss [0-9]+\.[0-9]{4}; )"))) << text.out;
}

// fgvc-eval and fgvc-extract take the size a checkpoint was trained at (its settings record
// it) unless --input-size says otherwise; a file without it, the model's default. Both say
// which size they used.
TEST(TrainApps, EvaluationDefaultsToTheTrainingSize) {
  Folders f;
  const std::string run = f.dir + "/at40";
  fs::remove_all(run);
  testing::Outcome r = testing::run_app("fgvc-train --device cpu --model resnet20 --data " + f.train + " --out " + run +
                                            " --steps 2 --batch-size 8 --input-size 40 --no-plots",
                                        f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string eval = "fgvc-eval --device cpu --model resnet20 --data " + f.val + " --json --weights ";
  const auto scored = [&](const std::string& args) {
    const testing::Outcome e = testing::run_app(eval + args, f.dir);
    EXPECT_EQ(e.code, 0) << args << "\n" << e.err;
    return testing::last_json_line(e.out);
  };
  const nlohmann::json by_default = scored(run + "/last.safetensors");
  EXPECT_EQ(by_default.at("input_size"), 40);
  const nlohmann::json at40 = scored(run + "/last.safetensors --input-size 40");
  EXPECT_DOUBLE_EQ(by_default.at("loss").get<double>(), at40.at("loss").get<double>());
  const nlohmann::json at32 = scored(run + "/last.safetensors --input-size 32");
  EXPECT_EQ(at32.at("input_size"), 32);
  EXPECT_NE(at32.at("loss").get<double>(), at40.at("loss").get<double>());
  // Weights alone (as timm's): the model's default, 32; an ensemble of both: each its own.
  manual_seed(4);
  write_safetensors(f.dir + "/plain.safetensors", nn::create_model("resnet20", 5)->state_dict());
  EXPECT_EQ(scored(f.dir + "/plain.safetensors").at("input_size"), 32);
  EXPECT_EQ(scored(f.dir + "/plain.safetensors --weights " + run + "/last.safetensors").at("input_size"),
            nlohmann::json({32, 40}));
  const testing::Outcome text = testing::run_app(
      "fgvc-eval --device cpu --model resnet20 --data " + f.val + " --weights " + run + "/last.safetensors", f.dir);
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find(" model(s), 1 crop(s) at 40 px\n"), std::string::npos) << text.out;
  const testing::Outcome x = testing::run_app("fgvc-extract --device cpu --model resnet20 --weights " + run +
                                                  "/last.safetensors --data " + f.val + " --out " + f.dir +
                                                  "/at40.safetensors --json",
                                              f.dir);
  ASSERT_EQ(x.code, 0) << x.err;
  EXPECT_EQ(testing::last_json_line(x.out).at("input_size"), 40);
  // SPEC.md's default head threshold, 100 training images (the largest class here has 48).
  const nlohmann::json split = scored(run + "/last.safetensors --train-counts " + f.train);
  EXPECT_EQ(split.at("head_threshold"), 100);
  EXPECT_EQ(split.at("head").at("classes"), 0);
  EXPECT_EQ(split.at("tail").at("classes"), 5);
}

TEST(TrainApps, TrainThenEvaluateWithHeadAndTail) {
  Folders f;
  const std::string run = f.dir + "/cli";
  fs::remove_all(run);
  testing::Outcome r = testing::run_app("fgvc-train --device cpu --model resnet20 --data " + f.train + " --val " + f.val +
                                            " --out " + run + " --steps 12 --batch-size 8 --no-plots --json",
                                        f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json t = testing::last_json_line(r.out);
  EXPECT_EQ(t.at("steps"), 12);
  r = testing::run_app("fgvc-eval --device cpu --model resnet20 --weights " + run + "/best.safetensors --data " + f.val +
                           " --train-counts " + f.train + " --head-threshold 10 --per-class " + f.dir +
                           "/pc.csv --json",
                       f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json e = testing::last_json_line(r.out);
  EXPECT_EQ(e.at("images"), 30);
  EXPECT_EQ(e.at("head").at("classes"), 3);  // 48, 24, 12 training images
  EXPECT_EQ(e.at("tail").at("classes"), 2);  // 6, 3
  EXPECT_EQ(e.at("head").at("images").get<int>() + e.at("tail").at("images").get<int>(), 30);
  const double top1 = e.at("top1");
  EXPECT_NEAR(e.at("top1_error").get<double>(), 1 - top1, 1e-12);
  for (const char* group : {"head", "tail"})
    for (const char* k : {"1", "5"}) {
      const nlohmann::json& g = e.at(group);
      EXPECT_NEAR(g.at(std::string("top") + k + "_error").get<double>(), 1 - g.at(std::string("top") + k).get<double>(),
                  1e-12) << group;
    }
  // The best checkpoint's accuracy is the one the run logged for it: the best whole epoch's
  // (11 steps make an epoch of 93 images), not the partial epoch's that --steps 12 ends in,
  // whatever the two scored.
  double logged = -1, partial = -1;
  std::ifstream in(run + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.at("kind") != "epoch") continue;
    double& kept = j.value("complete", true) ? logged : partial;
    kept = std::max(kept, j.at("val_top1").get<double>());
  }
  EXPECT_GE(logged, 0);
  EXPECT_GE(partial, 0);
  EXPECT_DOUBLE_EQ(top1, logged);
  // No class reaches the threshold: the head has no accuracy (null), the tail is everything.
  r = testing::run_app("fgvc-eval --device cpu --model resnet20 --weights " + run + "/best.safetensors --data " + f.val +
                           " --train-counts " + f.train + " --head-threshold 1000 --json",
                       f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json no_head = testing::last_json_line(r.out);
  EXPECT_TRUE(no_head.at("head").at("top1").is_null());
  EXPECT_TRUE(no_head.at("head").at("top5_error").is_null());
  EXPECT_DOUBLE_EQ(no_head.at("tail").at("top1").get<double>(), top1);
  // An ensemble of the same weights twice is that model (the mean of equal probabilities);
  // --model and --weights counts must pair up.
  const std::string best = " --weights " + run + "/best.safetensors";
  r = testing::run_app("fgvc-eval --device cpu --model resnet20" + best + best + " --data " + f.val + " --json", f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_DOUBLE_EQ(testing::last_json_line(r.out).at("top1").get<double>(), top1);
  EXPECT_NEAR(testing::last_json_line(r.out).at("loss").get<double>(), e.at("loss").get<double>(), 1e-12);
  // An ensemble of two different checkpoints (the best, of step 11, and the last, of step 12),
  // over one view and over 12: what the library's evaluation gives for those two models
  // (itself checked image by image in Evaluate.EnsembleAndTwelveViewsAverageProbabilities).
  const std::string both = best + " --weights " + run + "/last.safetensors";
  for (const int crops : {1, 12}) {
    r = testing::run_app("fgvc-eval --device cpu --model resnet20" + both + " --data " + f.val + " --batch-size 7 --crops " +
                             std::to_string(crops) + " --json",
                         f.dir);
    ASSERT_EQ(r.code, 0) << r.err;
    const nlohmann::json got = testing::last_json_line(r.out);
    EXPECT_EQ(got.at("images"), 30);  // 12 views still count each image once
    const data::Dataset val_set = data::load_dataset(f.val);
    std::vector<std::shared_ptr<nn::Classifier>> nets;
    std::vector<std::unique_ptr<data::Loader>> loaders;
    std::vector<train::EnsembleMember> members;
    std::vector<double> single_loss;
    for (const char* file : {"/best.safetensors", "/last.safetensors"}) {
      nets.push_back(nn::create_model("resnet20", static_cast<int64_t>(val_set.classes.size())));
      nn::load_weights(*nets.back(), nn::read_model_weights(run + file));
      data::LoaderOptions o;
      o.mode = crops == 12 ? data::Mode::Eval12 : data::Mode::Eval;
      o.size = nn::default_input_size("resnet20");
      o.normalization = data::Normalization::ImageNet;
      o.batch_size = 7;
      o.shuffle = false;
      loaders.push_back(std::make_unique<data::Loader>(val_set, o));
      members.push_back({nets.back().get(), loaders.back().get()});
      single_loss.push_back(train::evaluate({members.back()}, Device::cpu()).loss);
    }
    ASSERT_NE(single_loss[0], single_loss[1]) << "the two checkpoints should be two models";
    const train::EvalResult want = train::evaluate(members, Device::cpu());
    EXPECT_DOUBLE_EQ(got.at("top1").get<double>(), want.top1_accuracy()) << crops;
    EXPECT_DOUBLE_EQ(got.at("top5").get<double>(), want.top5_accuracy()) << crops;
    EXPECT_NEAR(got.at("loss").get<double>(), want.loss, 1e-9 * want.loss) << crops;
    EXPECT_NE(got.at("loss").get<double>(), single_loss[0]) << crops;
  }
  r = testing::run_app("fgvc-eval --device cpu --model resnet20 --model resnet20" + best + best + best + " --data " + f.val,
                       f.dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("one per --weights"), std::string::npos) << r.err;
  // --resume of a run at its total: nothing trained, no losses to report.
  r = testing::run_app("fgvc-train --device cpu --model resnet20 --data " + f.train + " --val " + f.val + " --out " + run +
                           " --steps 12 --batch-size 8 --no-plots --resume --json",
                       f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(testing::last_json_line(r.out).at("first_loss").is_null());
  EXPECT_EQ(testing::last_json_line(r.out).at("steps"), 12);
  // The same images as a list whose classes come in reverse order: matched to the model's
  // outputs by the names its checkpoint records, so the same accuracy (not a silent mismatch).
  {
    const data::Dataset val = data::load_dataset(f.val);
    const int64_t K = static_cast<int64_t>(val.classes.size());
    std::ofstream list(f.dir + "/reversed.txt"), names(f.dir + "/reversed.classes.txt");
    for (int64_t k = K - 1; k >= 0; --k) names << val.classes[k] << "\n";
    for (const data::Sample& smp : val.samples) list << smp.path << "\t" << (K - 1 - smp.label) << "\n";
  }
  EXPECT_EQ(train::read_recorded_run(run + "/best.safetensors").classes, data::load_dataset(f.train).classes);
  r = testing::run_app("fgvc-eval --device cpu --model resnet20 --weights " + run + "/best.safetensors --data " + f.dir +
                           "/reversed.txt --json",
                       f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_DOUBLE_EQ(testing::last_json_line(r.out).at("top1").get<double>(), top1);
  // --train-counts as a list gives the folder's split: in another class order (its classes
  // reversed), counted by name; as labels alone (no classes file), its labels are the indices
  // of the classes the weights record.
  const data::Dataset train_set = data::load_dataset(f.train);
  const int64_t K = static_cast<int64_t>(train_set.classes.size());
  {
    std::ofstream list(f.dir + "/train_reversed.txt"), names(f.dir + "/train_reversed.classes.txt");
    for (int64_t k = K - 1; k >= 0; --k) names << train_set.classes[k] << "\n";
    for (const data::Sample& smp : train_set.samples) list << smp.path << "\t" << (K - 1 - smp.label) << "\n";
    std::ofstream numbered(f.dir + "/train_numbered.txt");
    for (const data::Sample& smp : train_set.samples) numbered << smp.path << "\t" << smp.label << "\n";
  }
  for (const char* list : {"/train_reversed.txt", "/train_numbered.txt"}) {
    r = testing::run_app("fgvc-eval --device cpu --model resnet20 --weights " + run + "/best.safetensors --data " + f.val +
                             " --train-counts " + f.dir + list + " --head-threshold 10 --json",
                         f.dir);
    ASSERT_EQ(r.code, 0) << list << ": " << r.err;
    EXPECT_EQ(testing::last_json_line(r.out).at("head"), e.at("head")) << list;
    EXPECT_EQ(testing::last_json_line(r.out).at("tail"), e.at("tail")) << list;
  }
  // Counts of other classes: refused, naming the class that is not the weights'.
  {
    std::ofstream names(f.dir + "/train_renamed.classes.txt");
    for (int64_t k = K - 1; k >= 1; --k) names << train_set.classes[k] << "\n";
    names << "zebra\n";
    std::ofstream list(f.dir + "/train_renamed.txt");
    for (const data::Sample& smp : train_set.samples) list << smp.path << "\t" << (K - 1 - smp.label) << "\n";
  }
  r = testing::run_app("fgvc-eval --device cpu --model resnet20 --weights " + run + "/best.safetensors --data " + f.val +
                           " --train-counts " + f.dir + "/train_renamed.txt",
                       f.dir);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("was trained on: class 'zebra' of --train-counts is not one of the 5 of " + run +
                       "/best.safetensors\n"),
            std::string::npos)
      << r.err;
  const std::string csv = testing::slurp(f.dir + "/pc.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 6);
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "class,train_images,val_images,top1,top5");
  // README's stage 2: fgvc-subset's list (its class names beside it) fine-tuned from stage 1,
  // validated on the same folder by name.
  r = testing::run_app("fgvc-subset --data " + f.train + " --max-per-class 5 --out " + f.dir + "/balanced.txt", f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string stage2 = f.dir + "/stage2";
  fs::remove_all(stage2);
  r = testing::run_app("fgvc-train --device cpu --model resnet20 --data " + f.dir + "/balanced.txt --val " + f.val +
                           " --init " + run + "/last.safetensors --lr 0.0045 --decay-epochs 4 --out " + stage2 +
                           " --steps 3 --batch-size 8 --no-plots --json --train-counts " + f.train,
                       f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(stage2 + "/best.safetensors"));
  // per_class.csv shows the full set's counts (--train-counts), not the subset's 5 a class.
  std::ifstream pc(stage2 + "/per_class.csv");
  const std::vector<std::vector<std::string>> rows = train::read_csv(pc);
  ASSERT_EQ(rows.size(), 6u);
  std::vector<std::string> shown;
  for (size_t k = 1; k < rows.size(); ++k) shown.push_back(rows[k][1]);
  EXPECT_EQ(shown, (std::vector<std::string>{"48", "24", "12", "6", "3"}));
}

// A file of the wrong kind, or none, given as weights: exit 1, the flag and the file named.
// (A domain file records class names too; it was taken for weights, and the error blamed --data.)
// A checkpoint with a moving average is evaluated with the average (what TF-slim evaluates),
// or with the trained weights under --no-ema: each the loss of those weights, taken here from
// the file by their prefix, and the two differ.
TEST(TrainApps, EvaluationUsesTheMovingAverageUnlessToldNot) {
  Folders f;
  const std::string run = f.dir + "/ema_run";
  fs::remove_all(run);
  testing::Outcome r = testing::run_app("fgvc-train --device cpu --model resnet20 --data " + f.train + " --out " + run +
                                            " --steps 3 --batch-size 8 --ema-decay 0.9 --no-plots --json",
                                        f.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const SafetensorsFile file = read_safetensors(run + "/last.safetensors");
  std::map<std::string, Tensor> averaged, trained;
  for (const auto& [name, t] : file.tensors) {
    if (name.rfind("ema.", 0) == 0) averaged[name.substr(4)] = t;
    else if (name.rfind("optim.", 0) != 0) trained[name] = t;
  }
  ASSERT_FALSE(averaged.empty());
  const data::Dataset val = data::load_dataset(f.val);
  std::vector<double> losses;
  for (const auto* weights : {&averaged, &trained}) {
    auto net = nn::create_model("resnet20", static_cast<int64_t>(val.classes.size()));
    nn::load_weights(*net, *weights);
    data::LoaderOptions o;
    o.mode = data::Mode::Eval;
    o.size = nn::default_input_size("resnet20");
    o.normalization = data::Normalization::ImageNet;
    o.batch_size = 7;
    o.shuffle = false;
    data::Loader loader(val, o);
    losses.push_back(train::evaluate({{net.get(), &loader}}, Device::cpu()).loss);
  }
  ASSERT_NE(losses[0], losses[1]);
  for (const bool no_ema : {false, true}) {
    r = testing::run_app("fgvc-eval --device cpu --model resnet20 --weights " + run + "/last.safetensors --data " + f.val +
                             " --batch-size 7 --json" + (no_ema ? " --no-ema" : ""),
                         f.dir);
    ASSERT_EQ(r.code, 0) << r.err;
    const double want = losses[no_ema ? 1 : 0];
    EXPECT_NEAR(testing::last_json_line(r.out).at("loss").get<double>(), want, 1e-9 * want) << no_ema;
  }
}

TEST(TrainApps, WeightsFilesOfTheWrongKindAreNamedWithTheirFlag) {
  Folders f;
  const std::string domain = f.dir + "/domain.safetensors";
  emd::Domain d;
  d.features = testing::randn_t({2, 4}, 1);
  d.counts = {3, 4};
  d.classes = {"a", "b"};
  emd::save_domain(domain, d);
  testing::Outcome r = testing::run_app(
      "fgvc-eval --device cpu --model resnet20 --weights " + domain + " --data " + f.val, f.dir);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("fgvc-eval: error: --weights: " + domain + ": holds no model weights (its tensors: ", 0), 0u)
      << r.err;
  // fgvc-infer's own input file given as weights, and a domain file to fgvc-extract: the same
  // (fgvc-infer said "no classifier weight [K, D]", as if it were a backbone).
  const std::string input = f.dir + "/input.safetensors";
  write_safetensors(input, {{"input", testing::randn_t({1, 3, 32, 32}, 2)}});
  r = testing::run_app("fgvc-infer --device cpu --model resnet20 --weights " + input + " --input " + input + " --output " +
                           f.dir + "/y.safetensors",
                       f.dir);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "fgvc-infer: error: --weights: " + input +
                       ": holds no model weights (its tensors: input); give a weights file or an fgvc-train checkpoint\n");
  r = testing::run_app("fgvc-extract --device cpu --model resnet20 --weights " + domain + " --data " + f.val + " --out " +
                           f.dir + "/d2.safetensors",
                       f.dir);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("fgvc-extract: error: --weights: " + domain + ": holds no model weights (its tensors: ", 0), 0u)
      << r.err;
  for (const std::string& init : {domain, f.dir + "/missing.safetensors"}) {
    r = testing::run_app("fgvc-train --device cpu --model resnet20 --data " + f.train + " --out " + f.dir +
                             "/w --steps 1 --init " + init,
                         f.dir);
    EXPECT_EQ(r.code, 1) << init;
    EXPECT_EQ(r.err.rfind("fgvc-train: error: --init: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(init), std::string::npos) << r.err;
  }
}

TEST(TrainApps, UsageErrorsExitTwo) {
  Folders f;
  testing::Outcome r = testing::run_app(
      "fgvc-train --device cpu --model resnet20 --data " + f.train + " --out " + f.dir + "/x --steps 2 --amp bf16", f.dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("fgvc-train: error: --amp bf16: mixed precision needs a CUDA device"), std::string::npos) << r.err;
  r = testing::run_app("fgvc-train --device cpu --model resnet20 --data " + f.train + " --out " + f.dir + "/x", f.dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--epochs or --steps"), std::string::npos) << r.err;
  r = testing::run_app("fgvc-train --model resnet21 --data " + f.train + " --out " + f.dir + "/x --steps 1", f.dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("resnet20"), std::string::npos) << r.err;  // lists the known names
  r = testing::run_app("fgvc-train --device cpu --model inception_v3 --data " + f.train + " --out " + f.dir +
                           "/x --steps 1 --input-size 224",
                       f.dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--input-size 224: inception_v3 needs at least 299 for its auxiliary classifier"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("--aux-weight 0"), std::string::npos) << r.err;
  // NaN is no number in a range (CLI11's Range let it through: it fails both comparisons,
  // and runs went on with null in config.json); negative and fractional counts are named so.
  const std::string base = "fgvc-train --device cpu --model resnet20 --data " + f.train + " --out " + f.dir + "/n --steps 1 ";
  for (const char* flag : {"--lr-decay", "--momentum", "--rmsprop-decay", "--label-smoothing", "--ema-decay",
                           "--bn-decay", "--min-crop-area", "--min-crop-covered", "--lr", "--weight-decay"}) {
    r = testing::run_app(base + flag + " nan", f.dir);
    EXPECT_EQ(r.code, 2) << flag;
    EXPECT_NE(r.err.find("not a finite number: nan"), std::string::npos) << flag << ": " << r.err;
  }
  r = testing::run_app(base + "--momentum 1.5", f.dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("must be in [0, 1], got 1.5"), std::string::npos) << r.err;
  r = testing::run_app(base + "--gpus 1.5", f.dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("not a whole number: 1.5"), std::string::npos) << r.err;
  r = testing::run_app(base + "--input-size -5", f.dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("must be > 0, got -5"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(f.dir + "/n"));
  r = testing::run_app("fgvc-train --help", f.dir);
  EXPECT_EQ(r.code, 0);
  for (const char* flag : {"--resume", "--ema-decay", "--label-smoothing", "--amp", "--init", "--reset-classifier"})
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
  r = testing::run_app("fgvc-eval --device cpu --model resnet20 --weights " + f.dir + "/missing.safetensors --data " +
                           f.val,
                       f.dir);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("fgvc-eval: error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("missing.safetensors"), std::string::npos) << r.err;
  // A run that cannot start leaves no empty run folder behind.
  r = testing::run_app("fgvc-train --device cpu --model resnet20 --data " + f.dir + "/nowhere --out " + f.dir +
                           "/never --steps 1",
                       f.dir);
  EXPECT_EQ(r.code, 1);
  EXPECT_FALSE(std::filesystem::exists(f.dir + "/never"));
  // No readable image at all: a clear error, not an endless run of empty epochs.
  const std::string bad = f.dir + "/unreadable";
  for (const char* c : {"a", "b"}) {
    std::filesystem::create_directories(bad + "/" + c);
    testing::write_bytes(bad + "/" + c + "/1.jpg", std::vector<uint8_t>(64, 7));
  }
  r = testing::run_app("fgvc-train --device cpu --model resnet20 --data " + bad + " --out " + f.dir + "/y --steps 2", f.dir);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("fgvc-train: error: --data: " + bad + ": epoch 1 had no readable image"), std::string::npos)
      << r.err;
}

// IDX files as Fashion-MNIST ships them (gzipped by the system's gzip, one left plain), with
// 10 learnable synthetic classes; fgvc-demo runs its whole pipeline on them at a tiny size.
void write_idx(const std::string& path, const std::vector<int32_t>& dims, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> bytes = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (int32_t d : dims)
    for (int shift : {24, 16, 8, 0}) bytes.push_back(static_cast<uint8_t>(d >> shift));
  bytes.insert(bytes.end(), data.begin(), data.end());
  testing::write_bytes(path, bytes);
}

TEST(TrainApps, DemoRunsEndToEndOnSmallIdxFiles) {
  const std::string dir = test_dir("fgvc_train_"), idx = dir + "/idx", run = dir + "/demo";
  fs::remove_all(run);
  fs::create_directories(idx);
  for (const auto& [split, n] : {std::pair<std::string, int>{"train", 400}, {"t10k", 100}}) {
    std::vector<uint8_t> pixels, labels;
    uint32_t state = 7;
    for (int i = 0; i < n; ++i) {
      const int c = i % 10;
      labels.push_back(static_cast<uint8_t>(c));
      for (int y = 0; y < 28; ++y)
        for (int x = 0; x < 28; ++x) {
          state = state * 1664525u + 1013904223u;
          const bool on = (c < 5 ? (y / (c + 2)) : (x / (c - 3))) % 2 == 0;  // stripes of class-specific width
          pixels.push_back(static_cast<uint8_t>((on ? 180 : 40) + (state >> 27)));
        }
    }
    write_idx(idx + "/" + split + "-images-idx3-ubyte", {n, 28, 28}, pixels);
    write_idx(idx + "/" + split + "-labels-idx1-ubyte", {n}, labels);
  }
  // Three of the four gzipped, as Debian ships them; the reader takes both.
  for (const char* name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"})
    ASSERT_EQ(std::system(("gzip -f " + idx + "/" + name).c_str()), 0);
  EXPECT_EQ(data::read_idx_labels(idx + "/t10k-labels-idx1-ubyte.gz").size(), 100u);
  EXPECT_EQ(data::read_idx_images(idx + "/train-images-idx3-ubyte.gz").count, 400);
  // Sizes whose product overflows: an error, not a wrapped count that matches an empty payload.
  write_idx(dir + "/huge-idx3-ubyte", {1 << 22, 1 << 21, 1 << 21}, {});
  EXPECT_THROW(data::read_idx_images(dir + "/huge-idx3-ubyte"), Error);
  const testing::Outcome r = testing::run_app("fgvc-demo --out " + run + " --data-dir " + idx +
                                                  " --largest 40 --imbalance 10 --test-per-class 10 --epochs1 8 "
                                                  "--epochs2 2 --max-per-class 10 --batch-size 16 --head-threshold 20 --json",
                                              dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err.find("training images of the"), std::string::npos) << r.err;  // 40 a class are there
  // Each stage prints its own result table (SPEC.md section 6), then the two side by side.
  for (const char* line : {"== stage 1", "stage 1, test accuracy", "== stage 2", "stage 2, test accuracy",
                           "| stage 1 (long-tailed) |", "| stage 2 (balanced fine-tuning) |",
                           "== test accuracy before and after stage 2", "| tops |", "source class", "report: "})
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.out;
  EXPECT_LT(r.out.find("stage 1, test accuracy"), r.out.find("== stage 2"));
  const nlohmann::json j = nlohmann::json::parse(testing::slurp(run + "/results.json"));
  for (const char* stage : {"stage1", "stage2"}) {
    for (const char* key : {"top1", "head", "tail"}) {
      const double v = j.at(stage).at(key);
      EXPECT_TRUE(v >= 0 && v <= 1) << stage << " " << key;
    }
    // The stripes are learnable: 8 + 2 epochs reach 0.8-0.9 top-1 here (1 or 2 threads), chance is 0.1.
    EXPECT_GE(j.at(stage).at("top1").get<double>(), 0.5) << stage;
    EXPECT_GE(j.at(stage).at("top5").get<double>(), 0.8) << stage;
  }
  EXPECT_EQ(j.at("counts").size(), 10u);
  EXPECT_EQ(j.at("counts")[0], 40);
  EXPECT_EQ(j.at("counts")[9], 4);
  EXPECT_EQ(j.at("similarity").at("matrix").size(), 3u);
  EXPECT_DOUBLE_EQ(j.at("similarity").at("matrix")[1][1].get<double>(), 1.0);  // a group against itself
  EXPECT_DOUBLE_EQ(j.at("similarity").at("gamma").get<double>(), 0.01);          // SPEC.md section 7's
  EXPECT_EQ(j.at("selected").size(), 3u);
  EXPECT_GT(j.at("seconds").get<double>(), 0);
  EXPECT_EQ(j.at("device").get<std::string>(), cuda_available() ? "cuda:0" : "cpu");  // the default: the GPU where there is one
  const std::string report = testing::slurp(run + "/report.md");
  EXPECT_NE(report.find("## Stage 1 and stage 2"), std::string::npos);
  // The report shows each plot the demo drew, and each it shows is there.
  std::set<std::string> shown;
  const std::regex image(R"(!\[[^\]]*\]\(([^)]+)\))");
  for (std::sregex_iterator it(report.begin(), report.end(), image), end; it != end; ++it) shown.insert((*it)[1].str());
  EXPECT_EQ(shown, (std::set<std::string>{"accuracy.png", "loss.png", "per_class.png"})) << report;
  for (const std::string& png : shown) EXPECT_TRUE(fs::exists(run + "/" + png)) << png;
  // Stage 2's list keeps min(count, 10) of each class.
  std::vector<int64_t> kept(10, 0);
  for (const data::Sample& s : data::load_dataset(run + "/stage2/balanced.txt").samples) kept[s.label]++;
  for (int k = 0; k < 10; ++k) EXPECT_EQ(kept[k], std::min<int64_t>(j.at("counts")[k].get<int64_t>(), 10)) << k;
  // Each stage's head and tail accuracies are its per-class table's, split by the full
  // training counts (at least 20: head).
  for (const char* stage : {"stage1", "stage2"}) {
    std::ifstream csv(run + "/" + stage + "/per_class.csv");
    const std::vector<std::vector<std::string>> rows = train::read_csv(csv);
    ASSERT_EQ(rows.size(), 11u) << stage;
    double right[2] = {0, 0}, images[2] = {0, 0};
    for (int k = 0; k < 10; ++k) {
      const int head = j.at("counts")[k].get<int64_t>() >= 20 ? 1 : 0;
      right[head] += std::stod(rows[k + 1][2]) * std::stod(rows[k + 1][3]);
      images[head] += std::stod(rows[k + 1][2]);
    }
    EXPECT_NEAR(j.at(stage).at("head").get<double>(), right[1] / images[1], 1e-5) << stage;  // the CSV has 6 digits
    EXPECT_NEAR(j.at(stage).at("tail").get<double>(), right[0] / images[0], 1e-5) << stage;
  }
  // A data folder without the files: a clear error naming the package.
  const testing::Outcome bad = testing::run_app("fgvc-demo --out " + run + "2 --data-dir " + dir + "/nothing", dir);
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("dataset-fashion-mnist"), std::string::npos) << bad.err;
  // A user's folder is never written over: a non-empty --out without the demo's marker is
  // refused, whether the inputs are there or not; the demo's own run folder is rewritten.
  const std::string mine = dir + "/mine";
  fs::remove_all(mine);
  fs::create_directories(mine + "/data");
  { std::ofstream(mine + "/data/important.txt") << "keep me\n"; }
  { std::ofstream(mine + "/report.md") << "my own report\n"; }
  { std::ofstream(mine + "/results.json") << "{}\n"; }
  for (const std::string& data_dir : {dir + "/nothing", idx}) {
    const testing::Outcome refused = testing::run_app("fgvc-demo --out " + mine + " --data-dir " + data_dir, dir);
    EXPECT_EQ(refused.code, 1) << data_dir;
    EXPECT_TRUE(fs::exists(mine + "/data/important.txt")) << data_dir;
  }
  EXPECT_NE(testing::run_app("fgvc-demo --out " + mine + " --data-dir " + idx, dir).err.find("new or empty folder"),
            std::string::npos);
  EXPECT_EQ(testing::slurp(mine + "/report.md"), "my own report\n");
  EXPECT_TRUE(fs::exists(run + "/.fgvc-demo"));
  // Usage errors, before anything is written: --out naming a file, a NaN imbalance.
  const testing::Outcome file_out = testing::run_app("fgvc-demo --out " + mine + "/report.md --data-dir " + idx, dir);
  EXPECT_EQ(file_out.code, 2) << file_out.err;
  EXPECT_NE(file_out.err.find("fgvc-demo: error: --out"), std::string::npos) << file_out.err;
  const testing::Outcome nan = testing::run_app("fgvc-demo --out " + dir + "/nan --imbalance nan --data-dir " + idx, dir);
  EXPECT_EQ(nan.code, 2) << nan.err;
  EXPECT_NE(nan.err.find("not a finite number: nan"), std::string::npos) << nan.err;
  EXPECT_FALSE(fs::exists(dir + "/nan"));
}

}  // namespace
}  // namespace fgvc
