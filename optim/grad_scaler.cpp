#include "optim/grad_scaler.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "autograd/ops.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"
#include "tensor/error.h"

namespace fgvc {
namespace optim {

namespace k = kernels;

bool all_finite(const std::vector<Tensor>& tensors) {
  NoGradGuard no_grad;
  // t * 0 is 0 where t is finite and NaN where it is inf or NaN: the sum is NaN exactly when
  // some element is not finite, and cannot overflow (a sum of squares could).
  Tensor total;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    Tensor s = k::sum(k::binary(k::BinaryOp::Mul, t, 0.0)).to(DType::Float64);
    if (total.defined() && s.device() != total.device()) s = s.to(total.device());
    total = total.defined() ? k::add(total, s) : s;
  }
  return !total.defined() || std::isfinite(total.cpu().item<double>());  // the one host sync
}

GradScaler::GradScaler(double init_scale, double growth, double backoff, int64_t growth_interval)
    : scale_(init_scale), growth_(growth), backoff_(backoff), interval_(growth_interval) {
  FGVC_CHECK(init_scale > 0 && growth > 1 && backoff > 0 && backoff < 1 && growth_interval > 0, "GradScaler",
             "needs scale > 0, growth > 1, 0 < backoff < 1, interval > 0");
}

Tensor GradScaler::scale(const Tensor& loss) const { return mul(loss, scale_); }

bool GradScaler::unscale(const NamedTensors& params) const {
  NoGradGuard no_grad;
  std::vector<Tensor> grads;
  for (const auto& [name, w] : params) {
    if (!w.grad().defined()) continue;
    Tensor(w).set_grad(k::binary(k::BinaryOp::Mul, w.grad(), 1.0 / scale_));
    grads.push_back(w.grad());
  }
  return all_finite(grads);
}

void GradScaler::update(bool finite) {
  if (!finite) {
    scale_ *= backoff_;
    good_steps_ = 0;
    skipped_++;
  } else if (++good_steps_ >= interval_) {
    scale_ *= growth_;
    good_steps_ = 0;
  }
}

void GradScaler::load(double scale, int64_t good_steps, int64_t skipped) {
  FGVC_CHECK(scale > 0 && good_steps >= 0 && skipped >= 0, "GradScaler::load", "bad state: scale ", scale);
  scale_ = scale;
  good_steps_ = good_steps;
  skipped_ = skipped;
}

}  // namespace optim
}  // namespace fgvc
