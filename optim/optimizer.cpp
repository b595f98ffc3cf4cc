#include "optim/optimizer.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

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

void Optimizer::step(double lr) {
  NoGradGuard no_grad;
  for (auto& [name, w] : params_) {
    Tensor g = w.grad();
    if (!g.defined()) continue;
    if (weight_decay_ > 0 && decays(name, w)) g = k::add(g, k::binary(BinaryOp::Mul, w, weight_decay_));
    update(name, w, g, lr);
  }
}

void Optimizer::zero_grad() {
  for (auto& [name, w] : params_) w.zero_grad();
}

std::map<std::string, Tensor> Optimizer::state() const { return slots_; }

void Optimizer::load_state(const std::map<std::string, Tensor>& state) {
  for (const auto& [key, t] : state) slots_[key] = t.clone();
}

void RMSProp::update(const std::string& name, Tensor& w, const Tensor& g, double lr) {
  Tensor& ms = slot(name, "ms", w, 1.0);
  Tensor& mom = slot(name, "mom", w, 0.0);
  // ms = decay ms + (1 - decay) g^2
  ms.copy_(k::add(k::binary(BinaryOp::Mul, ms, decay_), k::binary(BinaryOp::Mul, k::unary(UnaryOp::Square, g), 1.0 - decay_)));
  // mom = momentum mom + lr g / sqrt(ms + eps)
  const Tensor step = k::mul(k::binary(BinaryOp::Mul, g, lr), k::unary(UnaryOp::Rsqrt, k::binary(BinaryOp::Add, ms, epsilon_)));
  mom.copy_(k::add(k::binary(BinaryOp::Mul, mom, momentum_), step));
  w.copy_(k::sub(w, mom));
}

void SGD::update(const std::string& name, Tensor& w, const Tensor& g, double lr) {
  Tensor& v = slot(name, "momentum", w, 0.0);
  v.copy_(k::add(k::binary(BinaryOp::Mul, v, momentum_), g));
  w.copy_(k::sub(w, k::binary(BinaryOp::Mul, v, lr)));
}

double exponential_decay(double lr0, double rate, double decay_epochs, double epoch) {
  return lr0 * std::pow(rate, std::floor(epoch / decay_epochs));
}

double clip_grad_norm(const NamedTensors& params, double max_norm) {
  NoGradGuard no_grad;
  double total = 0;
  for (const auto& [name, w] : params)
    if (w.grad().defined()) total += k::sum(k::unary(UnaryOp::Square, w.grad().to(DType::Float64))).item<double>();
  const double norm = std::sqrt(total);
  if (norm > max_norm && norm > 0)
    for (const auto& [name, w] : params)
      if (w.grad().defined()) Tensor(w).set_grad(k::binary(BinaryOp::Mul, w.grad(), max_norm / norm));
  return norm;
}

EMA::EMA(const NamedTensors& params, double decay) : decay_(decay) {
  for (const auto& [name, w] : params) shadow_[name] = w.detach().clone();
}

void EMA::update(const NamedTensors& params) {
  NoGradGuard no_grad;
  for (const auto& [name, w] : params) {
    Tensor& s = shadow_.at(name);
    s.copy_(k::add(k::binary(BinaryOp::Mul, s, decay_), k::binary(BinaryOp::Mul, w.detach(), 1.0 - decay_)));
  }
}

}  // namespace optim
}  // namespace fgvc
