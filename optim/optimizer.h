// Optimisers over named parameters (nn::Module::named_parameters()), with TensorFlow's
// semantics where the paper's recipe depends on them. Each keeps its slots (per-parameter
// state) by parameter name, so checkpoints can save and restore them by name.
//
//   RMSProp (TF): ms = decay ms + (1 - decay) g^2;  mom = momentum mom + lr g / sqrt(ms + eps);
//                 w -= mom.  ms starts at 1, mom at 0, as TensorFlow initialises its slots.
//   SGD with momentum: v = momentum v + g; w -= lr v.
//
// L2 weight decay is applied as TF-slim does, as a loss term wd/2 |w|^2 on convolution and
// fully connected weights only (not batch-norm parameters, not biases): g += wd w.
// Each parameter's update is one fused kernel (optim/update_kernels.h) on its own device.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace fgvc {
namespace optim {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Conv and fully connected weights (rank >= 2, named "...weight"): the ones TF-slim decays.
bool decays(const std::string& name, const Tensor& t);

class Optimizer {
 public:
  // Refuses a weight decay that is negative or not finite and two parameters of one name
  // (their slots would be one).
  Optimizer(NamedTensors params, double weight_decay);
  virtual ~Optimizer() = default;
  // One update with learning rate lr (finite, not negative) from the parameters' .grad
  // (parameters without a gradient are left alone). Runs without recording a graph.
  void step(double lr);
  void zero_grad();
  // Slots by "<parameter name>.<slot name>", for checkpoints. Loading refuses a slot this
  // optimiser does not keep (another optimiser's state) and a parameter with only some of
  // its slots: either would restart a slot from its initial value without a word.
  std::map<std::string, Tensor> state() const;
  void load_state(const std::map<std::string, Tensor>& state);
  // The slots kept per parameter ("ms", "mom"; "momentum").
  virtual std::vector<std::string> slot_names() const = 0;

 protected:
  // One parameter's update; weight_decay is 0 for parameters that do not decay.
  virtual void update(const std::string& name, Tensor& w, const Tensor& g, double lr, double weight_decay) = 0;
  Tensor& slot(const std::string& param, const std::string& slot, const Tensor& like, double init);

 private:
  NamedTensors params_;
  double weight_decay_;
  std::map<std::string, Tensor> slots_;
};

class RMSProp : public Optimizer {
 public:
  // decay and momentum in [0, 1), epsilon > 0.
  RMSProp(NamedTensors params, double decay = 0.9, double momentum = 0.9, double epsilon = 1.0,
          double weight_decay = 0.0);
  std::vector<std::string> slot_names() const override { return {"ms", "mom"}; }

 protected:
  void update(const std::string& name, Tensor& w, const Tensor& g, double lr, double weight_decay) override;

 private:
  double decay_, momentum_, epsilon_;
};

class SGD : public Optimizer {
 public:
  // momentum in [0, 1).
  SGD(NamedTensors params, double momentum = 0.9, double weight_decay = 0.0);
  std::vector<std::string> slot_names() const override { return {"momentum"}; }

 protected:
  void update(const std::string& name, Tensor& w, const Tensor& g, double lr, double weight_decay) override;

 private:
  double momentum_;
};

// The steps between two decays: decay_epochs epochs of steps_per_epoch steps, in whole steps,
// at least 1. The trainer passes its whole batches per epoch (the last partial batch dropped),
// so this is floor(floor(samples / batch) * epochs per decay), where TF-slim takes
// int(samples * epochs per decay / batch): the same, or up to about epochs-per-decay steps fewer
// (36,198 against 36,199 for iNat2017's 579,184 images at batch 32 every 2 epochs). The 1e-9
// keeps a fractional --decay-epochs exact: 90 * 0.7 in floating point is 62.99999999999999.
int64_t decay_steps(int64_t steps_per_epoch, double decay_epochs);
// lr0 * rate^(step / decay_steps), an integer division: TF's staircase exponential decay
// (0.94 every 2 epochs in the paper's training, every 4 when fine-tuning).
double exponential_decay(double lr0, double rate, int64_t decay_steps, int64_t step);

// Scales all gradients so that their global L2 norm is at most max_norm, as PyTorch's
// clip_grad_norm_ does it: by max_norm / (norm + 1e-6) where that is below 1 (the 1e-6 keeps
// a zero norm finite; a clipped norm comes out a hair under max_norm). The norm is summed in
// float64. Returns the norm before clipping.
double clip_grad_norm(const NamedTensors& params, double max_norm);

// An exponential moving average of the weights: shadow = decay shadow + (1 - decay) w, used
// for evaluation and export. As TF-slim's training script does, it averages the batch-norm
// moving statistics too: pass the parameters and the floating-point buffers.
class EMA {
 public:
  EMA(const NamedTensors& weights, double decay);
  void update(const NamedTensors& weights) { update(weights, decay_); }
  // With this step's decay: TF-slim passes the global step, so the decay is
  // min(decay, (1 + step) / (10 + step)) and early averages do not cling to the initial weights.
  void update(const NamedTensors& weights, double decay);
  double decay() const { return decay_; }
  const std::map<std::string, Tensor>& shadow() const { return shadow_; }
  void load(const std::map<std::string, Tensor>& shadow);  // from a checkpoint, by name

 private:
  double decay_;
  std::map<std::string, Tensor> shadow_;
};

}  // namespace optim
}  // namespace fgvc
