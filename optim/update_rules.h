// One element of each optimiser update, shared by the CPU loop (update_kernels.cpp) and the
// CUDA kernel (update_kernels.cu), so both run the same arithmetic: float32 storage, each
// step's maths in double, one rounding per stored value. The weight decay term (TF-slim's L2
// loss wd/2 |w|^2, gradient wd w) is folded in here; it is 0 for parameters that do not decay.
#pragma once
#include <cmath>

#include "tensor/macros.h"

namespace fgvc {
namespace optim {

struct RMSPropRule {
  double lr, decay, momentum, epsilon, weight_decay;
};
struct SGDRule {
  double lr, momentum, weight_decay;
};

// TF's RMSProp: ms = decay ms + (1 - decay) g^2; mom = momentum mom + lr g / sqrt(ms + eps); w -= mom.
FGVC_HD inline void rmsprop_element(float& w, float grad, float& ms, float& mom, const RMSPropRule& r) {
  const double g = static_cast<double>(grad) + r.weight_decay * static_cast<double>(w);
  const double m = r.decay * static_cast<double>(ms) + (1.0 - r.decay) * (g * g);
  const double v = r.momentum * static_cast<double>(mom) + r.lr * g / std::sqrt(m + r.epsilon);
  ms = static_cast<float>(m);
  mom = static_cast<float>(v);
  w = static_cast<float>(static_cast<double>(w) - v);
}

// Momentum SGD (TF's MomentumOptimizer, PyTorch's SGD): v = momentum v + g; w -= lr v.
FGVC_HD inline void sgd_element(float& w, float grad, float& v, const SGDRule& r) {
  const double g = static_cast<double>(grad) + r.weight_decay * static_cast<double>(w);
  const double nv = r.momentum * static_cast<double>(v) + g;
  v = static_cast<float>(nv);
  w = static_cast<float>(static_cast<double>(w) - r.lr * nv);
}

// shadow = decay shadow + (1 - decay) w.
FGVC_HD inline void ema_element(float& shadow, float w, double decay) {
  shadow = static_cast<float>(decay * static_cast<double>(shadow) + (1.0 - decay) * static_cast<double>(w));
}

}  // namespace optim
}  // namespace fgvc
