// Fused optimiser updates: one pass over each parameter reads the weight, its gradient and
// its slots and writes them back (the composed form takes six to eight passes). CPU (OpenMP)
// and CUDA versions run the element functions of update_rules.h. All tensors are float32,
// contiguous, of one shape and on one device; they are updated in place.
#pragma once
#include "optim/update_rules.h"
#include "tensor/tensor.h"

namespace fgvc {
namespace optim {

void rmsprop_update(Tensor& w, const Tensor& g, Tensor& ms, Tensor& mom, const RMSPropRule& rule);
void sgd_update(Tensor& w, const Tensor& g, Tensor& v, const SGDRule& rule);
void ema_update(Tensor& shadow, const Tensor& w, double decay);

namespace detail {
void rmsprop_update_cuda(float* w, const float* g, float* ms, float* mom, int64_t n, const RMSPropRule& r, int device);
void sgd_update_cuda(float* w, const float* g, float* v, int64_t n, const SGDRule& r, int device);
void ema_update_cuda(float* shadow, const float* w, int64_t n, double decay, int device);
}  // namespace detail

}  // namespace optim
}  // namespace fgvc
