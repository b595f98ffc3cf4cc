#include "autograd/autocast.h"

#include "autograd/ops.h"

namespace fgvc {

namespace {
thread_local DType t_autocast = DType::Float32;
}  // namespace

DType Autocast::dtype() { return t_autocast; }
void Autocast::set_dtype(DType dtype) { t_autocast = dtype; }

Tensor float32_under_autocast(const Tensor& x) {
  const bool sixteen = x.dtype() == DType::BFloat16 || x.dtype() == DType::Float16;
  return Autocast::enabled() && sixteen ? to_dtype(x, DType::Float32) : x;
}

}  // namespace fgvc
