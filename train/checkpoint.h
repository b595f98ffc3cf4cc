// Training checkpoints: one .safetensors file holding everything a run needs to continue
// exactly where it stopped: the model's parameters and buffers under their own names (so a
// checkpoint is also a weights file for fgvc-eval, fgvc-infer and --init), the moving average
// as "ema.<name>", the optimizer slots as "optim.<name>.<slot>", and in the metadata the
// position: optimizer step, epoch, batches of the epoch consumed, learning rate, the random
// generator's state, the best validation accuracy so far. Written atomically, so a run killed
// while saving leaves the previous checkpoint whole.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nn/module.h"
#include "optim/optimizer.h"

namespace fgvc {
namespace train {

struct TrainPosition {
  std::string model;            // --model name
  int64_t num_classes = 0;
  int64_t step = 0;             // optimizer steps done
  int64_t epoch = 0;            // the epoch in progress (or about to start)
  int64_t batch = 0;            // batches of that epoch already consumed (per rank)
  int world_size = 1;           // ranks of the run that wrote it, and their batch size:
  int64_t batch_size = 0;       // images of the epoch consumed = batch x batch_size x world_size
  double lr = 0;                // the last step's learning rate
  uint64_t rng_seed = 0, rng_offset = 0;  // where dropout's stream starts (trainer.cpp, dropout_stream)
  double best_top1 = -1;        // best validation top-1 so far (-1: none yet)
  int64_t best_epoch = -1;
  // The best so far came from an evaluation at the end of a run in mid-epoch (the only one
  // so far); the next end-of-epoch evaluation replaces it, so an interrupted and resumed run
  // picks the same best as an uninterrupted one.
  bool best_partial = false;
  // The training loss summed over the steps since the last metrics line, so that the lines
  // after a resume average the same steps as an uninterrupted run's.
  double window_loss = 0;
  int64_t window_steps = 0;
  // Likewise the training loss summed over the current epoch's steps so far, for its epoch line.
  double epoch_loss = 0;
  int64_t epoch_steps = 0;
  // And the training batches' top-1 hits and images over the current epoch so far (the
  // forward pass of each step, in training mode, on augmented images), for its train_top1.
  double epoch_correct = 0, epoch_images = 0;
  // And the unreadable training files in the current epoch's batches so far (all ranks), for
  // its epoch line's `skipped`.
  int64_t epoch_skipped = 0;
  // --amp fp16: the dynamic loss scale, clean steps since it last changed, steps skipped.
  double loss_scale = 0;
  int64_t scale_good_steps = 0, skipped_steps = 0;
  // The training set's class names in label order, kept in the metadata as "classes" (a JSON
  // list, as domain files keep theirs), so that fgvc-eval matches a data set's classes to the
  // model's outputs by name. Empty where none were recorded.
  std::vector<std::string> classes;
  // The run's settings that shape its trajectory, and what it started from (trainer.cpp's
  // run_record; a JSON object), kept in the metadata as "settings", so that --resume checks
  // them where the run folder has no config.json. Empty in checkpoints of before 2026-11-29.
  std::string settings;
};

// `optimizer` and `ema` may be null (best.safetensors keeps no optimizer slots).
void save_checkpoint(const std::string& path, const nn::Module& model, const optim::Optimizer* optimizer,
                     const optim::EMA* ema, const TrainPosition& position);

struct Checkpoint {
  std::map<std::string, Tensor> model, ema, optimizer;
  TrainPosition position;
};
// Throws naming the file when it is not an fgvc-train checkpoint.
Checkpoint load_checkpoint(const std::string& path);
// A checkpoint's "settings" (TrainPosition::settings), from its header alone; "" where none.
std::string checkpoint_settings(const std::string& path);
// What a weights file records of the fgvc-train run that wrote it, from its header alone (the
// tensors stay unread): fgvc-eval, fgvc-extract, fgvc-infer and --init read it once per file.
// A file that records nothing (timm's or torchvision's weights) gives empty fields. Throws
// naming the file when it is not a safetensors file, holds no "*.weight" tensor (a domain
// file, say), or its class names are not a JSON list of strings.
struct RecordedRun {
  std::string path;
  std::string model;                 // the model it is a checkpoint of; "" where none
  std::vector<std::string> classes;  // the class names it was trained on, in output order
  int input_size = 0;                // the input size it trained at ("settings"); 0 where none
  // Refuses a checkpoint of another model than `model`, naming both, before its tensors'
  // names are compared one by one; a file that records no model passes.
  void check_model(const std::string& model) const;
};
RecordedRun read_recorded_run(const std::string& path);

}  // namespace train
}  // namespace fgvc
