// Dynamic loss scaling for float16 mixed precision (fgvc-train --amp fp16). float16 cannot hold
// gradients much below 6e-8, so the loss is multiplied by a large scale before backward; before
// the update the gradients are divided by it and checked. A step whose gradients hold an inf
// or a NaN is skipped and the scale halves; after growth_interval clean steps it doubles.
// (bfloat16 has float32's range and needs none of this.)
#pragma once
#include <cstdint>
#include <vector>

#include "optim/optimizer.h"

namespace fgvc {
namespace optim {

// True when every element of every tensor is finite (one reduction each, one host sync).
bool all_finite(const std::vector<Tensor>& tensors);

class GradScaler {
 public:
  explicit GradScaler(double init_scale = 65536.0, double growth = 2.0, double backoff = 0.5,
                      int64_t growth_interval = 2000);
  Tensor scale(const Tensor& loss) const;  // loss * scale, recorded for backward
  // Divides the parameters' gradients by the scale; false when any is inf or NaN (then the
  // caller skips the optimizer step).
  bool unscale(const NamedTensors& params) const;
  // After each step: halve on overflow, double after growth_interval finite steps.
  void update(bool finite);

  double scale_value() const { return scale_; }
  int64_t good_steps() const { return good_steps_; }
  int64_t skipped_steps() const { return skipped_; }
  void load(double scale, int64_t good_steps, int64_t skipped);  // from a checkpoint

 private:
  double scale_, growth_, backoff_;
  int64_t interval_, good_steps_ = 0, skipped_ = 0;
};

}  // namespace optim
}  // namespace fgvc
