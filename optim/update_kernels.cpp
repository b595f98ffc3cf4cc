#include "optim/update_kernels.h"

#include "fgvc/config.h"
#include "tensor/error.h"

namespace fgvc {
namespace optim {

namespace {

constexpr int64_t kGrain = 1 << 15;  // below this, one thread

void check_operands(const char* op, const Tensor& w, std::initializer_list<const Tensor*> others) {
  FGVC_CHECK(w.dtype() == DType::Float32 && w.is_contiguous(), op, "parameters must be contiguous float32, got ",
             dtype_name(w.dtype()));
  for (const Tensor* t : others) {
    FGVC_CHECK(t->shape() == w.shape(), op, "shape ", shape_str(t->shape()), " does not match the parameter's ",
               shape_str(w.shape()));
    FGVC_CHECK(t->dtype() == DType::Float32 && t->is_contiguous(), op, "operands must be contiguous float32, got ",
               dtype_name(t->dtype()));
    FGVC_CHECK(t->device() == w.device(), op, "operands on ", t->device().str(), " and ", w.device().str());
  }
}

float* f32(const Tensor& t) { return static_cast<float*>(t.data_ptr()); }

}  // namespace

void rmsprop_update(Tensor& w, const Tensor& g, Tensor& ms, Tensor& mom, const RMSPropRule& rule) {
  check_operands("rmsprop_update", w, {&g, &ms, &mom});
  for (Tensor* t : {&w, &ms, &mom}) t->bump_version();  // a graph that saved w can no longer use it
  const int64_t n = w.numel();
  if (w.device().is_cuda()) return detail::rmsprop_update_cuda(f32(w), f32(g), f32(ms), f32(mom), n, rule, w.device().index);
  float *pw = f32(w), *pg = f32(g), *pm = f32(ms), *pv = f32(mom);
#pragma omp parallel for if (n > kGrain) schedule(static)
  for (int64_t i = 0; i < n; ++i) rmsprop_element(pw[i], pg[i], pm[i], pv[i], rule);
}

void sgd_update(Tensor& w, const Tensor& g, Tensor& v, const SGDRule& rule) {
  check_operands("sgd_update", w, {&g, &v});
  for (Tensor* t : {&w, &v}) t->bump_version();
  const int64_t n = w.numel();
  if (w.device().is_cuda()) return detail::sgd_update_cuda(f32(w), f32(g), f32(v), n, rule, w.device().index);
  float *pw = f32(w), *pg = f32(g), *pv = f32(v);
#pragma omp parallel for if (n > kGrain) schedule(static)
  for (int64_t i = 0; i < n; ++i) sgd_element(pw[i], pg[i], pv[i], rule);
}

void ema_update(Tensor& shadow, const Tensor& w, double decay) {
  check_operands("ema_update", shadow, {&w});
  shadow.bump_version();
  const int64_t n = w.numel();
  if (w.device().is_cuda()) return detail::ema_update_cuda(f32(shadow), f32(w), n, decay, w.device().index);
  float *ps = f32(shadow), *pw = f32(w);
#pragma omp parallel for if (n > kGrain) schedule(static)
  for (int64_t i = 0; i < n; ++i) ema_element(ps[i], pw[i], decay);
}

#if !FGVC_WITH_CUDA
namespace detail {
void rmsprop_update_cuda(float*, const float*, float*, float*, int64_t, const RMSPropRule&, int) {
  throw Error("rmsprop_update: built without CUDA");
}
void sgd_update_cuda(float*, const float*, float*, int64_t, const SGDRule&, int) {
  throw Error("sgd_update: built without CUDA");
}
void ema_update_cuda(float*, const float*, int64_t, double, int) { throw Error("ema_update: built without CUDA"); }
}  // namespace detail
#endif

}  // namespace optim
}  // namespace fgvc
