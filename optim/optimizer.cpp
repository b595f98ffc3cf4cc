#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "autograd/grad_mode.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"
#include "optim/update_kernels.h"

namespace fgvc {
namespace optim {

namespace k = kernels;
using k::BinaryOp;
using k::UnaryOp;

bool decays(const std::string& name, const Tensor& t) {
  const std::string suffix = "weight";
  return t.dim() >= 2 && name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Tensor& Optimizer::slot(const std::string& param, const std::string& name, const Tensor& like, double init) {
  const std::string key = param + "." + name;
  auto it = slots_.find(key);
  if (it == slots_.end()) it = slots_.emplace(key, Tensor::full(like.shape(), init, like.dtype(), like.device())).first;
  return it->second;
}

namespace {
constexpr double kInfinity = std::numeric_limits<double>::infinity();

// lo <= value < hi (NaN fails).
void check_range(const char* op, const char* what, double value, double lo, double hi) {
  FGVC_CHECK(value >= lo && value < hi, op, what, " must be in [", lo, ", ", hi, "), got ", value);
}
}  // namespace

Optimizer::Optimizer(NamedTensors params, double weight_decay)
    : params_(std::move(params)), weight_decay_(weight_decay) {
  check_range("optimizer", "weight_decay", weight_decay, 0.0, kInfinity);
  std::set<std::string> names;
  for (const auto& [name, w] : params_)
    FGVC_CHECK(names.insert(name).second, "optimizer", "two parameters are named '", name, "'");
}

RMSProp::RMSProp(NamedTensors params, double decay, double momentum, double epsilon, double weight_decay)
    : Optimizer(std::move(params), weight_decay), decay_(decay), momentum_(momentum), epsilon_(epsilon) {
  check_range("rmsprop", "decay", decay, 0.0, 1.0);
  check_range("rmsprop", "momentum", momentum, 0.0, 1.0);
  FGVC_CHECK(std::isfinite(epsilon) && epsilon > 0, "rmsprop", "epsilon must be positive, got ", epsilon);
}

SGD::SGD(NamedTensors params, double momentum, double weight_decay)
    : Optimizer(std::move(params), weight_decay), momentum_(momentum) {
  check_range("sgd", "momentum", momentum, 0.0, 1.0);
}

void Optimizer::step(double lr) {
  check_range("optimizer", "the learning rate", lr, 0.0, kInfinity);
  NoGradGuard no_grad;
  for (auto& [name, w] : params_) {
    Tensor g = w.grad();
    if (!g.defined()) continue;
    if (!g.is_contiguous()) g = g.contiguous();
    update(name, w, g, lr, decays(name, w) ? weight_decay_ : 0.0);
  }
}

void Optimizer::zero_grad() {
  for (auto& [name, w] : params_) w.zero_grad();
}

std::map<std::string, Tensor> Optimizer::state() const { return slots_; }

namespace {
std::string listed(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}
}  // namespace

void Optimizer::load_state(const std::map<std::string, Tensor>& state) {
  const std::vector<std::string> kept = slot_names();
  std::map<std::string, size_t> per_param;  // slots found per parameter
  for (const auto& [key, t] : state) {
    const size_t dot = key.rfind('.');
    const std::string param = dot == std::string::npos ? key : key.substr(0, dot);
    const std::string slot = dot == std::string::npos ? "" : key.substr(dot + 1);
    const auto it = std::find_if(params_.begin(), params_.end(), [&](const auto& p) { return p.first == param; });
    FGVC_CHECK(it != params_.end(), "Optimizer::load_state", "slot '", key, "' belongs to no parameter");
    FGVC_CHECK(std::find(kept.begin(), kept.end(), slot) != kept.end(), "Optimizer::load_state", "slot '", key,
               "' is not one this optimiser keeps (", listed(kept), "): the state of another optimiser?");
    const Tensor& w = it->second;
    FGVC_CHECK(t.shape() == w.shape(), "Optimizer::load_state", "slot '", key, "' has shape ", shape_str(t.shape()),
               ", its parameter ", shape_str(w.shape()));
    ++per_param[param];
  }
  for (const auto& [param, count] : per_param)
    FGVC_CHECK(count == kept.size(), "Optimizer::load_state", "parameter '", param, "' has ", count, " of its ",
               kept.size(), " slots (", listed(kept), ")");
  std::map<std::string, Tensor> loaded;  // all checked, all copied (a copy may run out of memory), then kept
  for (const auto& [key, t] : state) {
    // The parameter's name, a plain variable: a lambda may not capture a structured binding
    // before C++20 (clang refuses it, as scripts/fuzz.sh builds with clang).
    const std::string param = key.substr(0, key.rfind('.'));
    const Tensor& w =
        std::find_if(params_.begin(), params_.end(), [&](const auto& p) { return p.first == param; })->second;
    loaded[key] = t.to(w.device()).to(w.dtype()).contiguous().clone();
  }
  for (auto& [key, t] : loaded) slots_[key] = std::move(t);
}

void RMSProp::update(const std::string& name, Tensor& w, const Tensor& g, double lr, double weight_decay) {
  Tensor& ms = slot(name, "ms", w, 1.0);
  Tensor& mom = slot(name, "mom", w, 0.0);
  rmsprop_update(w, g, ms, mom, RMSPropRule{lr, decay_, momentum_, epsilon_, weight_decay});
}

void SGD::update(const std::string& name, Tensor& w, const Tensor& g, double lr, double weight_decay) {
  Tensor& v = slot(name, "momentum", w, 0.0);
  sgd_update(w, g, v, SGDRule{lr, momentum_, weight_decay});
}

int64_t decay_steps(int64_t steps_per_epoch, double decay_epochs) {
  // The product of an integer and a decimal such as 1.1 can round just below the integer it
  // stands for; 1e-9 of a step lifts it back (no real schedule is within 1e-9 of a step).
  const double steps = std::floor(static_cast<double>(steps_per_epoch) * decay_epochs + 1e-9);
  if (!(steps >= 1)) return 1;
  return steps >= 9.2e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(steps);
}

double exponential_decay(double lr0, double rate, int64_t decay_steps, int64_t step) {
  FGVC_CHECK(decay_steps > 0 && step >= 0, "exponential_decay", "decay_steps must be positive and step not negative, got ",
             decay_steps, " and ", step);
  return lr0 * std::pow(rate, static_cast<double>(step / decay_steps));
}

double clip_grad_norm(const NamedTensors& params, double max_norm) {
  // A negative bound would flip every gradient (descent into ascent); 0 would zero them.
  FGVC_CHECK(std::isfinite(max_norm) && max_norm > 0, "clip_grad_norm", "max_norm must be positive, got ", max_norm);
  NoGradGuard no_grad;
  double total = 0;
  for (const auto& [name, w] : params)
    if (w.grad().defined()) total += k::sum(k::unary(UnaryOp::Square, w.grad().to(DType::Float64))).item<double>();
  const double norm = std::sqrt(total);
  const double coefficient = max_norm / (norm + 1e-6);
  if (coefficient < 1)
    for (const auto& [name, w] : params)
      if (w.grad().defined()) Tensor(w).set_grad(k::binary(BinaryOp::Mul, w.grad(), coefficient));
  return norm;
}

EMA::EMA(const NamedTensors& weights, double decay) : decay_(decay) {
  for (const auto& [name, w] : weights) shadow_[name] = w.detach().clone();
}

void EMA::update(const NamedTensors& weights, double decay) {
  NoGradGuard no_grad;
  for (const auto& [name, w] : weights) ema_update(shadow_.at(name), w.detach(), decay);
}

void EMA::load(const std::map<std::string, Tensor>& shadow) {
  for (auto& [name, s] : shadow_) {
    const auto it = shadow.find(name);
    FGVC_CHECK(it != shadow.end(), "EMA::load", "no average for '", name, "'");
    FGVC_CHECK(it->second.shape() == s.shape(), "EMA::load", "'", name, "' has shape ", shape_str(it->second.shape()),
               ", expected ", shape_str(s.shape()));
    s.copy_(it->second);
  }
}

}  // namespace optim
}  // namespace fgvc
