// Run under mpirun with 2 ranks (ctest does): data-parallel training equals one process with
// the whole batch; collectives sum and broadcast; a rank that stops answering makes the others
// fail with a timeout instead of hanging (mode "--hang-rank 1").
// Mode "--train DIR": the trainer on 2 ranks: rank 0 alone writes the run folder, the folder
// records the world, and 4 steps + --resume to 8 give the same checkpoint as 8 steps at once.
//   mpirun --oversubscribe -np 2 test_dist_mpi [--hang-rank R | --train DIR]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>
#include <regex>
#include <string>
#include <thread>

#include "autograd/ops.h"
#include "data/loader.h"
#include "dist/communicator.h"
#include "dist/gradient_reducer.h"
#include "nn/layers.h"
#include "nn/models/registry.h"
#include "optim/optimizer.h"
#include "tensor/random.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/stop_request.h"
#include "train/trainer.h"
#include "image_files.h"
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace {

using namespace fgvc;

int failures = 0;
void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what.c_str());
    failures++;
  }
}

// Every rank's failures summed, printed once by rank 0: ctest reads rank 0's line, so a check
// that fails on rank 1 alone must reach it.
int report_all_ranks(dist::Communicator& comm) {
  Tensor total = Tensor::full({1}, static_cast<double>(failures), DType::Int64);
  comm.all_reduce_sum(total);
  const int64_t all = total.to_vector<int64_t>()[0];
  if (comm.rank() == 0) std::printf("%s: %lld failure(s) on all ranks\n", all ? "FAILED" : "PASSED", static_cast<long long>(all));
  return all ? 1 : 0;
}

struct Mlp {
  nn::Linear a{12, 16}, b{16, 5};
  optim::NamedTensors params() const {
    optim::NamedTensors p;
    for (auto& [n, t] : a.named_parameters()) p.emplace_back("a." + n, t);
    for (auto& [n, t] : b.named_parameters()) p.emplace_back("b." + n, t);
    return p;
  }
  Tensor loss(const Tensor& x, const Tensor& y) { return cross_entropy(b.forward(relu(a.forward(x))), y, 0.1); }
};

}  // namespace

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A quiet resnet20 run on DIR/data (the modes below set the rest).
train::TrainConfig quiet_config(const std::string& dir, int64_t batch_size) {
  train::TrainConfig c;
  c.model = "resnet20";
  c.data = dir + "/data";
  c.batch_size = batch_size;
  c.plots = false;
  c.progress = false;
  return c;
}

int train_mode(dist::Communicator& comm, const std::string& dir) {
  namespace fs = std::filesystem;
  if (comm.rank() == 0) {
    fs::remove_all(dir);
    testing::write_class_folder(dir + "/data", {20, 12, 8}, 24, 5);
  }
  comm.barrier();
  train::TrainConfig c = quiet_config(dir, 4);
  c.log_every = 3;  // a log window open across the resume at step 4
  c.ema_decay = 0.9;
  c.out = dir + "/whole";
  c.steps = 8;
  // Its progress lines (stderr, not a terminal: one per logged step) captured on rank 0.
  c.progress = true;
  const std::string console = dir + "/whole-console.txt";
  int saved_stderr = -1;
  if (comm.rank() == 0) {
    std::fflush(stderr);
    saved_stderr = dup(2);
    const int fd = open(console.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
  }
  const train::TrainSummary s = train::train_model(c, Device::cpu());
  if (comm.rank() == 0) std::fflush(stderr), dup2(saved_stderr, 2), close(saved_stderr);
  c.progress = false;
  expect(s.world_size == 2 && s.steps == 8, "a 2-rank run of 8 steps");
  c.out = dir + "/parts";
  c.steps = 4;
  train::train_model(c, Device::cpu());
  c.steps = 8;
  c.resume = true;
  train::train_model(c, Device::cpu());
  // A stop request on rank 1 alone (SIGUSR1 reached one process) stops both ranks before the
  // same step, each naming that signal, with a checkpoint that --resume continues as if
  // nothing had stopped.
  c.out = dir + "/stopped";
  c.resume = false;
  if (comm.rank() == 1)
    c.on_step = [](int64_t step) {
      if (step == 3) train::request_stop(SIGUSR1);
    };
  const train::TrainSummary stopped = train::train_model(c, Device::cpu());
  expect(stopped.stopped_by == SIGUSR1 && stopped.steps == 3,
         "rank " + std::to_string(comm.rank()) + ": stopped by " + std::to_string(stopped.stopped_by) + " after " +
             std::to_string(stopped.steps) + " steps, not by SIGUSR1 after 3");
  train::request_stop(0);
  c.on_step = nullptr;
  c.resume = true;
  train::train_model(c, Device::cpu());
  comm.barrier();
  if (comm.rank() == 0) {
    expect(slurp(dir + "/whole/last.safetensors") == slurp(dir + "/parts/last.safetensors"),
           "2 ranks: 4 steps + resume to 8 == 8 steps");
    expect(slurp(dir + "/whole/last.safetensors") == slurp(dir + "/stopped/last.safetensors"),
           "2 ranks: stopped on one rank after 3 steps + resume to 8 == 8 steps");
    const nlohmann::json cfg = nlohmann::json::parse(slurp(dir + "/whole/config.json"));
    expect(cfg.at("world_size") == 2 && cfg.at("backend") == "mpi" && cfg.at("global_batch_size") == 8,
           "config.json records the world");
    for (const auto& e : fs::directory_iterator(dir + "/whole"))
      expect(e.path().string().find(".tmp") == std::string::npos, "a stray temporary file " + e.path().string());
    // The logged losses (means over the ranks) agree too, up to the rounding of that mean: the
    // window open at the resume and the epoch's sum carry every rank's share, not rank 0's.
    auto lines = [&](const std::string& run) {
      std::vector<nlohmann::json> out;
      std::ifstream in(dir + "/" + run + "/metrics.jsonl");
      for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
      return out;
    };
    const auto whole = lines("whole"), parts = lines("parts");
    // The console's step lines show what metrics.jsonl logs, the ranks' mean loss and their
    // images together, not rank 0's own: "epoch 1 step 3/8 loss 1.2345 lr 0.010000 65.5 img/s".
    std::vector<std::string> shown, logged;
    std::ifstream con(console);
    const std::regex step_line(R"(^epoch \d+ step (\d+)/\d+ loss (\S+) lr \S+ (\S+) img/s)");
    std::smatch match;
    for (std::string line; std::getline(con, line);)
      if (std::regex_search(line, match, step_line)) shown.push_back(match[1].str() + " " + match[2].str() + " " + match[3].str());
    for (const nlohmann::json& j : whole)
      if (j.at("kind") == "step") {
        char loss_and_speed[64];
        std::snprintf(loss_and_speed, sizeof loss_and_speed, "%.4f %.1f", j.at("loss").get<double>(),
                      j.at("images_per_sec").get<double>());
        logged.push_back(std::to_string(j.at("step").get<int64_t>()) + " " + loss_and_speed);
      }
    auto joined = [](const std::vector<std::string>& v) {
      std::string out;
      for (const std::string& x : v) out += "[" + x + "] ";
      return out;
    };
    expect(!logged.empty() && shown == logged,
           "console step lines " + joined(shown) + "vs metrics.jsonl's " + joined(logged));
    expect(whole.size() == parts.size(), "metrics.jsonl: as many lines after the resume");
    for (size_t i = 0; i < std::min(whole.size(), parts.size()); ++i) {
      const std::string what = "metrics.jsonl line " + std::to_string(i + 1);
      expect(whole[i].at("kind") == parts[i].at("kind") && whole[i].at("step") == parts[i].at("step"), what);
      for (const char* key : {"loss", "train_loss", "train_top1"})
        if (whole[i].contains(key)) {
          const double a = whole[i].at(key), b = parts[i].value(key, -1.0);
          expect(std::fabs(a - b) <= 1e-9 * std::fabs(a), what + ": " + key + " " + std::to_string(a) + " vs " +
                                                               std::to_string(b));
        }
    }
  }
  return 0;
}

// --reference DIR (one process) and --sync-bn DIR (2 ranks, after it): batch 8 on one process
// and batch 4 on each of 2 ranks with synchronised batch norm train to the same weights (up to
// float32 rounding: the statistics are summed in another order); and so they do with
// unreadable files among the images, where the ranks' halves of a batch are uneven.
train::TrainConfig equivalence_config(const std::string& dir) {
  train::TrainConfig c = quiet_config(dir, 8);
  // Few steps at a small rate: this tiny network is chaotic. At lr 0.05 a difference in float32
  // rounding (the statistics summed in another order) grows about 300x a step: 2.5e-8 after
  // one, 8e-6 after two, 2e-4 after three (measured 2026-11-27); at lr 0.01 three steps stay
  // at 4e-8, while batch norm without --sync-bn differs by 4e-2.
  c.steps = 3;
  c.optimizer = "sgd";
  c.lr = 0.01;
  // Whole images (flipped and colour-distorted at random): small crops blown up to 32 px are
  // smooth, and batch norm's low variances amplify the rounding far more (4e-5 after three
  // steps with TF-slim's crop, measured 2026-11-27), while it stays at 5e-8 on whole images.
  c.min_crop_area = 1.0;
  return c;
}

// Where some files are unreadable, some global batches are short and the two ranks' halves of
// them uneven: each rank's loss weighs by its share of the step's images. One step: the
// shares (8/7, 6/7, ...) round in float32 where one process's 1/7 does, and a batch-norm
// bias's near-cancelling gradient lifts that to 2e-6 of all the weights (measured 2026-11-28;
// without the shares 2e-4).
constexpr const char* kUnevenBad[] = {"class0/bad0.jpg", "class0/bad1.jpg", "class1/bad2.jpg", "class2/bad3.jpg",
                                      "class2/bad4.jpg"};

// A data set smaller than one global batch (5 images; 2 ranks x 4 or 1 x 8): the batches keep
// their last, short part (no drop_last), one a rank, 3 and 2 images. One step: 3.5e-6 apart, as
// the uneven halves above; a second one lifts that to 1.8e-4 (batch norm over 5 images
// amplifies the shares' float32 rounding about 50x a step, measured 2026-11-29).
void small_run(const std::string& dir, train::TrainConfig c, int64_t batch, const std::string& out) {
  c.data = dir + "/small";
  c.batch_size = batch;
  c.steps = 1;
  c.out = out;
  train::train_model(c, Device::cpu());
}

int reference_mode(const std::string& dir) {
  std::filesystem::remove_all(dir);
  testing::write_class_folder(dir + "/data", {20, 12, 8}, 24, 6);
  testing::write_class_folder(dir + "/uneven", {20, 12, 8}, 24, 6);
  for (const char* bad : kUnevenBad) testing::write_bytes(dir + "/uneven/" + bad, {'n', 'o'});
  testing::write_class_folder(dir + "/small", {2, 2, 1}, 24, 7);
  train::TrainConfig c = equivalence_config(dir);
  c.batch_size = 8;
  c.out = dir + "/single";
  train::train_model(c, Device::cpu());
  c.data = dir + "/uneven";
  c.steps = 1;
  c.out = dir + "/single_uneven";
  train::train_model(c, Device::cpu());
  small_run(dir, c, 8, dir + "/single_small");
  std::printf("PASSED: 0 failure(s)\n");
  return 0;
}

// The relative difference of two checkpoints' float32 tensors, over all of them together
// (single small tensors, batch-norm biases whose gradients are near-cancelling sums, amplify
// float32 rounding far beyond the rest), printed with the largest in one tensor.
double weights_difference(const std::string& a_path, const std::string& b_path, const std::string& what) {
  const auto one = train::load_checkpoint(a_path).model;
  const auto two = train::load_checkpoint(b_path).model;
  expect(one.size() == two.size(), "same tensors");
  double err = 0, norm = 0, worst = 0;
  std::string where;
  for (const auto& [name, t] : one) {
    if (t.dtype() != DType::Float32) continue;
    const std::vector<float> a = t.to_vector<float>(), b = two.at(name).to_vector<float>();
    double e = 0, n = 0;
    for (size_t k = 0; k < a.size(); ++k) e += (a[k] - b[k]) * double(a[k] - b[k]), n += a[k] * double(a[k]);
    err += e, norm += n;
    if (std::sqrt(e / std::max(n, 1e-30)) > worst) worst = std::sqrt(e / std::max(n, 1e-30)), where = name;
  }
  const double total = std::sqrt(err / norm);
  std::printf("%s: relative difference of all weights %.2e (the largest in one tensor %.2e, %s)\n", what.c_str(), total,
              worst, where.c_str());
  return total;
}

// The batch-norm running statistics alone, tensor by tensor (the weights' total hides them: a
// variance made unbiased with one rank's count instead of the global one is off by about
// 1 / count, largest in the deepest, smallest layers).
double running_statistics_difference(const std::string& a_path, const std::string& b_path) {
  const auto one = train::load_checkpoint(a_path).model;
  const auto two = train::load_checkpoint(b_path).model;
  double worst = 0;
  std::string where;
  for (const auto& [name, t] : one) {
    if (name.find("running_") == std::string::npos) continue;
    const std::vector<float> a = t.to_vector<float>(), b = two.at(name).to_vector<float>();
    double e = 0, n = 0;
    for (size_t k = 0; k < a.size(); ++k) e += (a[k] - b[k]) * double(a[k] - b[k]), n += a[k] * double(a[k]);
    if (std::sqrt(e / std::max(n, 1e-30)) > worst) worst = std::sqrt(e / std::max(n, 1e-30)), where = name;
  }
  std::printf("running statistics: the largest relative difference in one tensor %.2e (%s)\n", worst, where.c_str());
  return worst;
}

int sync_bn_mode(dist::Communicator& comm, const std::string& dir) {
  train::TrainConfig c = equivalence_config(dir);
  c.batch_size = 4;
  c.sync_bn = true;
  c.out = dir + "/two_ranks";
  if (comm.rank() == 0) std::filesystem::remove_all(c.out), std::filesystem::remove_all(dir + "/two_ranks_uneven");
  comm.barrier();
  train::train_model(c, Device::cpu());
  c.data = dir + "/uneven";
  c.steps = 1;
  c.out = dir + "/two_ranks_uneven";
  train::train_model(c, Device::cpu());
  if (comm.rank() == 0) std::filesystem::remove_all(dir + "/two_ranks_small");
  comm.barrier();
  small_run(dir, c, 4, dir + "/two_ranks_small");
  if (comm.rank() == 0) {
    expect(weights_difference(dir + "/single/last.safetensors", dir + "/two_ranks/last.safetensors",
                              "2 ranks x batch 4 (--sync-bn) vs 1 x batch 8") < 1e-5,
           "data-parallel training with synchronised batch norm differs from one process");
    expect(running_statistics_difference(dir + "/single/last.safetensors", dir + "/two_ranks/last.safetensors") < 1e-4,
           "synchronised batch norm's running statistics differ from one process's");
    expect(weights_difference(dir + "/single_uneven/last.safetensors", dir + "/two_ranks_uneven/last.safetensors",
                              "the same, one step with unreadable files") < 2e-5,
           "uneven halves of a batch: the step is not the mean over its images");
    expect(weights_difference(dir + "/single_small/last.safetensors", dir + "/two_ranks_small/last.safetensors",
                              "5 images, less than a global batch, one step") < 2e-5,
           "a data set smaller than one global batch: 2 ranks differ from one process");
  }
  return 0;
}

// --dropout DIR (2 ranks): Inception-v3 (dropout before its classifier) where unreadable
// files make the ranks' shares of a batch uneven, so the ranks draw different amounts of
// random numbers a step; stopped after two steps and resumed, it is the uninterrupted run to the
// bit. (Each rank's dropout used to go on from rank 0's saved position plus an offset: rank 1
// then drew other masks after a resume.)
int dropout_mode(dist::Communicator& comm, const std::string& dir) {
  namespace fs = std::filesystem;
  if (comm.rank() == 0) {
    fs::remove_all(dir);
    testing::write_class_folder(dir + "/data", {9, 7}, 24, 8);
    for (const char* bad : {"class0/bad0.jpg", "class0/bad1.jpg", "class1/bad2.jpg"})
      testing::write_bytes(dir + "/data/" + bad, {'n', 'o'});
  }
  comm.barrier();
  train::TrainConfig c = quiet_config(dir, 3);
  c.model = "inception_v3";
  c.input_size = 75;  // its smallest: a fast step
  c.aux_weight = 0;   // (the auxiliary head needs 299)
  c.steps = 3;
  c.out = dir + "/whole";
  train::train_model(c, Device::cpu());
  c.out = dir + "/parts";
  c.steps = 2;  // the second step's shares are 2 and 3 images (the first's 3 and 3)
  train::train_model(c, Device::cpu());
  c.steps = 3;
  c.resume = true;
  train::train_model(c, Device::cpu());
  if (comm.rank() == 0)
    expect(slurp(dir + "/whole/last.safetensors") == slurp(dir + "/parts/last.safetensors"),
           "Inception-v3 on 2 ranks with uneven shares, resumed after two steps, is not the uninterrupted run");
  return 0;
}

// --resume-alone DIR (one process, after --train DIR): the 2-rank run continues on one
// process from the same place in its epoch.
int resume_alone_mode(const std::string& dir) {
  train::TrainConfig c = quiet_config(dir, 8);  // the same global batch as 2 x 4
  c.ema_decay = 0.9;
  c.out = dir + "/parts";
  c.steps = 12;
  c.resume = true;
  const train::TrainSummary s = train::train_model(c, Device::cpu());
  const train::Checkpoint ck = train::load_checkpoint(c.out + "/last.safetensors");
  expect(s.world_size == 1 && ck.position.step == 12 && ck.position.world_size == 1, "resumed alone to step 12");
  // 40 images, 5 batches of 8 per epoch: step 12 ends in epoch 3 after 2 batches.
  expect(ck.position.epoch == 2 && ck.position.batch == 2, "position epoch " + std::to_string(ck.position.epoch) +
                                                               " batch " + std::to_string(ck.position.batch));
  // A whole epoch's training top-1 is a count of its 40 images, the epoch begun on 2 ranks too.
  std::ifstream in(c.out + "/metrics.jsonl");
  int epochs = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.at("kind") != "epoch" || !j.at("complete").get<bool>()) continue;
    ++epochs;
    const double hits = j.at("train_top1").get<double>() * 40;
    expect(std::fabs(hits - std::round(hits)) < 1e-9, "epoch " + j.at("epoch").dump() + ": train_top1 " +
                                                          j.at("train_top1").dump() + " is not a count of 40 images");
  }
  expect(epochs == 2, "two whole epochs logged, got " + std::to_string(epochs));
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}

// --val DIR (2 ranks): the validation set is split over the ranks (7 images: 4 and 3; 1 image:
// 1 and none) and the epoch line gives what one process scores with the run's checkpoint.
int val_mode(dist::Communicator& comm, const std::string& dir) {
  namespace fs = std::filesystem;
  if (comm.rank() == 0) {
    fs::remove_all(dir);
    testing::write_class_folder(dir + "/data", {8, 8, 8}, 24, 11);
    testing::write_class_folder(dir + "/val7", {3, 2, 2}, 24, 12);
    testing::write_class_folder(dir + "/val1", {0, 1, 0}, 24, 13);
  }
  comm.barrier();
  for (const char* val : {"val7", "val1"}) {
    train::TrainConfig c = quiet_config(dir, 4);
    c.val = dir + "/" + val;
    c.steps = 3;  // one epoch of 24 images at 2 x 4
    c.out = dir + "/run_" + val;
    train::train_model(c, Device::cpu());
    comm.barrier();
    if (comm.rank() != 0) continue;
    nlohmann::json epoch;
    std::ifstream in(c.out + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json j = nlohmann::json::parse(line);
      if (j.at("kind") == "epoch") epoch = j;
    }
    const std::string what = std::string(val) + ": ";
    if (epoch.is_null()) {
      expect(false, what + "no epoch line");
      continue;
    }
    // One process, the same checkpoint, the same evaluation settings.
    const nlohmann::json cfg = nlohmann::json::parse(slurp(c.out + "/config.json"));
    auto model = nn::create_model("resnet20", 3);
    model->load_state_dict(train::load_checkpoint(c.out + "/last.safetensors").model);
    data::LoaderOptions o;
    o.batch_size = 4;
    o.size = cfg.at("input_size").get<int>();
    o.mode = data::Mode::Eval;
    o.normalization = data::Normalization::ImageNet;
    o.shuffle = false;
    o.warn = false;
    const data::Dataset set = data::load_dataset(c.val);
    data::Loader loader(set, o);
    const train::EvalResult r = train::evaluate({{model.get(), &loader}}, Device::cpu());
    expect(epoch.at("val_images") == r.images && r.images == static_cast<int64_t>(set.samples.size()),
           what + "val_images " + epoch.at("val_images").dump() + ", one process " + std::to_string(r.images));
    expect(std::fabs(epoch.at("val_top1").get<double>() - r.top1_accuracy()) < 1e-12,
           what + "val_top1 " + epoch.at("val_top1").dump() + ", one process " + std::to_string(r.top1_accuracy()));
    // (float32 logits: batches of other images round a little differently, 4e-8 here)
    expect(std::fabs(epoch.at("val_loss").get<double>() - r.loss) < 1e-6 * std::max(1.0, r.loss),
           what + "val_loss " + epoch.at("val_loss").dump() + ", one process " + nlohmann::json(r.loss).dump());
  }
  return 0;
}

// --nan DIR (2 ranks, after --train DIR): a rate that overflows the weights. Every rank stops
// at the same step with the loss's message, and the job ends (the ctest reads the message);
// --nan-logged DIR (one process, after it) finds rank 0's error line in metrics.jsonl.
train::TrainConfig nan_config(const std::string& dir) {
  train::TrainConfig c = quiet_config(dir, 4);
  c.lr = 1e30;
  c.steps = 20;
  c.out = dir + "/diverged";
  return c;
}

int nan_logged_mode(const std::string& dir) {
  std::ifstream in(nan_config(dir).out + "/metrics.jsonl");
  std::string line, last;
  while (std::getline(in, line)) last = line;
  expect(!last.empty(), "metrics.jsonl is empty");
  if (!last.empty()) {
    const nlohmann::json j = nlohmann::json::parse(last);
    expect(j.at("kind") == "error", "the last line of metrics.jsonl is not the error: " + last);
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}

int main(int argc, char** argv) {
  int hang_rank = -1;
  std::string train_dir, reference_dir, sync_dir, dropout_dir, val_dir;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--nan") == 0) {
      std::filesystem::remove_all(nan_config(argv[i + 1]).out);  // (each rank: a missing folder is no error)
      train::train_model(nan_config(argv[i + 1]), Device::cpu());  // ends the job
      std::printf("FAILED: training went on past a non-finite loss\n");
      return 1;
    } else if (std::strcmp(argv[i], "--nan-logged") == 0) {
      return nan_logged_mode(argv[i + 1]);
    }
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--resume-alone") == 0) {
      try {
        return resume_alone_mode(argv[i + 1]);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "test_dist_mpi: error: %s\n", e.what());
        return 1;
      }
    }
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--reference") == 0) reference_dir = argv[i + 1];
    if (std::strcmp(argv[i], "--sync-bn") == 0) sync_dir = argv[i + 1];
    if (std::strcmp(argv[i], "--hang-rank") == 0) hang_rank = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--train") == 0) train_dir = argv[i + 1];
    if (std::strcmp(argv[i], "--dropout") == 0) dropout_dir = argv[i + 1];
    if (std::strcmp(argv[i], "--val") == 0) val_dir = argv[i + 1];
  }
  if (!reference_dir.empty()) {
    try {
      return reference_mode(reference_dir);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "test_dist_mpi: error: %s\n", e.what());
      return 1;
    }
  }
  std::unique_ptr<dist::Communicator> comm;
  try {
    comm = dist::make_communicator(Device::cpu());
    const int rank = comm->rank(), world = comm->size();
    expect(world == 2, "world size 2, got " + std::to_string(world));
    expect(comm->backend() == "mpi", "backend mpi");

    if (!sync_dir.empty()) {
      sync_bn_mode(*comm, sync_dir);
      return report_all_ranks(*comm);
    }
    if (!dropout_dir.empty()) {
      dropout_mode(*comm, dropout_dir);
      return report_all_ranks(*comm);
    }
    if (!val_dir.empty()) {
      val_mode(*comm, val_dir);
      return report_all_ranks(*comm);
    }
    if (!train_dir.empty()) {
      train_mode(*comm, train_dir);
      return report_all_ranks(*comm);
    }
    if (hang_rank >= 0) {
      if (rank == hang_rank) std::this_thread::sleep_for(std::chrono::seconds(30));  // never joins
      Tensor t = Tensor::ones({4});
      comm->all_reduce_sum(t);  // the others time out here
      return 0;
    }

    // Sums and broadcasts.
    Tensor t = Tensor::full({3}, rank + 1.0);
    comm->all_reduce_sum(t);
    expect(t.to_vector<float>() == std::vector<float>(3, 3.0f), "all_reduce sums 1 + 2");
    Tensor v = Tensor::full({2}, rank == 0 ? 7.0 : -1.0, DType::Float64);
    comm->broadcast(v, 0);
    expect(v.to_vector<double>() == std::vector<double>(2, 7.0), "broadcast from rank 0");
    Tensor n = Tensor::full({1}, 5.0, DType::Int64);
    comm->all_reduce_sum(n);
    expect(n.to_vector<int64_t>()[0] == 10, "int64 all_reduce");

    // Equivalence: 4 SGD steps on batches of 6 split 3 + 3 across the ranks against one
    // process with all 6 (computed here on every rank), same initial weights.
    manual_seed(11);
    Mlp whole, part;
    for (size_t i = 0; i < whole.params().size(); ++i) Tensor(part.params()[i].second).copy_(whole.params()[i].second);
    optim::SGD sgd_whole(whole.params(), 0.9, 1e-3), sgd_part(part.params(), 0.9, 1e-3);
    dist::GradientReducer reducer(*comm, part.params(), /*bucket_bytes=*/256);
    Generator gen(3);
    for (int step = 0; step < 4; ++step) {
      const Tensor x = randn({6, 12}, gen);
      std::vector<int64_t> labels;
      for (int i = 0; i < 6; ++i) labels.push_back((i * 7 + step) % 5);
      const Tensor y = Tensor::from_vector(labels, {6});
      backward(whole.loss(x, y));
      sgd_whole.step(0.1);
      sgd_whole.zero_grad();
      // Strided shares, as the distributed sampler makes them: rows rank, rank + 2, rank + 4.
      std::vector<float> xs;
      std::vector<int64_t> ys;
      const std::vector<float> xv = x.to_vector<float>();
      for (int i = rank; i < 6; i += world) {
        xs.insert(xs.end(), xv.begin() + i * 12, xv.begin() + (i + 1) * 12);
        ys.push_back(labels[i]);
      }
      reducer.prepare();
      backward(part.loss(Tensor::from_vector(xs, {3, 12}), Tensor::from_vector(ys, {3})));
      reducer.finish();
      sgd_part.step(0.1);
      sgd_part.zero_grad();
    }
    for (size_t i = 0; i < whole.params().size(); ++i) {
      const std::vector<float> w = whole.params()[i].second.to_vector<float>(), p = part.params()[i].second.to_vector<float>();
      double err = 0, norm = 0;
      for (size_t k = 0; k < w.size(); ++k) err += (w[k] - p[k]) * (w[k] - p[k]), norm += w[k] * w[k];
      expect(std::sqrt(err / norm) < 1e-6, whole.params()[i].first + ": data-parallel weights differ by " +
                                              std::to_string(std::sqrt(err / norm)));
    }
    expect(reducer.buckets() >= 2, "several buckets");
    return report_all_ranks(*comm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_dist_mpi: error: %s\n", e.what());
    if (comm) comm->abort(1);
    return 1;
  }
}
