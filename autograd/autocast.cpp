#include "autograd/autocast.h"

namespace fgvc {

namespace {
thread_local DType t_autocast = DType::Float32;
}  // namespace

DType Autocast::dtype() { return t_autocast; }
void Autocast::set_dtype(DType dtype) { t_autocast = dtype; }

}  // namespace fgvc
