// The paper's training loop (SPEC.md section 4, fgvc-train): a model from the registry on an
// image dataset, TF-slim's defaults (RMSProp, staircase exponential decay, label smoothing,
// L2 on conv/fc weights, the Inception models' aux loss), optional moving average of the
// weights, evaluation on a validation set each epoch, and a run folder that can be resumed
// bit for bit:
//   RUN_DIR/config.json      every effective setting (defaults included)
//   RUN_DIR/metrics.jsonl    one JSON object per logged step ("kind": "step") and per epoch
//   RUN_DIR/last.safetensors the checkpoint (train/checkpoint.h), at each epoch's end, every
//                            --save-every steps and when the run ends
//   RUN_DIR/best.safetensors the weights with the best validation top-1 (with --val)
//   RUN_DIR/per_class.csv    the last validation, per class, with training counts
//   RUN_DIR/*.png            plots (train/plots.h)
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "tensor/device.h"

namespace fgvc {
namespace train {

struct TrainConfig {
  std::string model, data, val, out;
  // The data whose per-class image counts per_class.csv and per_class.png show (the full,
  // long-tailed set when --data is stage 2's balanced subset); "": --data's own.
  std::string train_counts;
  int input_size = 0;               // 0: the model's default (299; 32 for the CIFAR ResNets)
  int64_t batch_size = 32;
  int64_t epochs = 0, steps = 0;    // totals for the run; exactly one is set
  std::string optimizer = "rmsprop";
  double lr = 0.045, lr_decay = 0.94;
  double decay_epochs = 0;          // 0: 2 (the paper fine-tunes with lr 0.0045 and 4)
  double momentum = 0.9, rmsprop_decay = 0.9, epsilon = 1.0;
  double label_smoothing = 0.1, weight_decay = 4e-5;
  double aux_weight = 0.4;          // the Inception models' auxiliary classifier (0: built and trained without)
  double ema_decay = 0;             // 0: no moving average
  double bn_decay = -1;             // negative: 0.9997 for Inception models (TF-slim), 0.9 otherwise
  double clip_grad_norm = 0;        // 0: off
  std::string init;                 // weights or checkpoint to start from
  bool reset_classifier = false;
  bool resume = false;
  uint64_t seed = 0;
  int workers = 1;
  bool color_distort = true;
  std::string crop = "tf-slim";     // the random crop: tf-slim (the paper's) or torchvision (RandomResizedCrop)
  double min_crop_area = 0;         // 0: 0.05 with tf-slim, 0.08 with torchvision
  double min_crop_covered = 0.1;  // TF-slim's min_object_covered: with it, crops below 10% are redrawn
  std::string amp = "off";          // bf16 | fp16 | off (CUDA only)
  bool cudnn_benchmark = false;     // CUDA: cuDNN measures each shape's algorithms (kernels::set_cudnn_benchmark)
  int gpus = 1;
  bool sync_bn = false;             // data parallel: batch-norm statistics over all ranks
  int64_t log_every = 20;           // steps between metrics lines
  int64_t save_every = 0;           // steps between checkpoints besides each epoch's end (0: none)
  bool plots = true;
  bool progress = true;             // the progress line / plain lines on stderr
  // Called after each optimizer step with the run's step count (an observer: a test, a host
  // program's progress display); not part of the run's configuration.
  std::function<void(int64_t step)> on_step;
};

// The effective configuration (defaults resolved), as a JSON object's text; config.json
// records it with the data's facts added.
std::string config_json(const TrainConfig& c);
// Defaults that depend on the model or on other flags, resolved.
TrainConfig resolve_defaults(TrainConfig c);

struct TrainSummary {
  // steps and epochs_done: the run's totals (a resumed run counts those before it too);
  // steps_run and images: taken by this call (images_per_sec's); skipped: distinct unreadable
  // training files.
  int64_t steps = 0, epochs_done = 0, steps_run = 0, images = 0, skipped = 0;
  int64_t val_skipped = 0;  // unreadable --val files (its last evaluation's count)
  double first_loss = 0, last_loss = 0;  // mean training loss of the first and the last logged window
  int64_t loss_lines = 0;                 // step lines this call logged (1: first_loss is last_loss)
  double best_top1 = -1;
  double seconds = 0, images_per_sec = 0;
  bool resumed = false;
  int stopped_by = 0;  // the signal that stopped the run early (train/stop_request.h); 0: it reached its total
  int rank = 0, world_size = 1;  // data-parallel runs: every rank returns; rank 0 reports
};

// Runs (or with c.resume continues) the run in c.out on `device`. Errors (bad flags found
// late, a NaN loss, a mismatching checkpoint) are fgvc::Error naming the problem; the last
// good checkpoint stays in place. A stop request (train/stop_request.h) ends the run before
// its next step, every rank at the same one, with last.safetensors at that step: --resume
// continues it as if it had not stopped (summary.stopped_by names the signal).
TrainSummary train_model(const TrainConfig& c, Device device);

}  // namespace train
}  // namespace fgvc
