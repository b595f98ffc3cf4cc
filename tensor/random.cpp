#include "tensor/random.h"

#include <algorithm>

#include "fgvc/config.h"
#include "tensor/dispatch.h"
#include "tensor/random_value.h"

namespace fgvc {

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().set_state(seed, 0); }

namespace detail {

namespace {
// Block by block (random_block): each Philox block and Box-Muller pair once, where the GPU
// kernel computes each element on its own; the values are the same bits.
template <class T>
void random_fill_cpu_typed(const Tensor& t, const RandomFill& f) {
  const int64_t n = t.numel();
  T* p = static_cast<T*>(t.data_ptr());
  const int per_block = (f.dist == Distribution::Uniform && sizeof(T) == 8) ? 2 : 4;
  const int64_t blocks = (n + per_block - 1) / per_block;
#pragma omp parallel for if (n > (1 << 14)) schedule(static)
  for (int64_t k = 0; k < blocks; ++k)
    random_block<T>(f.dist, f.seed, f.first_block, k, f.a, f.b, p + k * per_block,
                    static_cast<int>(std::min<int64_t>(per_block, n - k * per_block)));
}
}  // namespace

void random_fill_cpu(const Tensor& t, const RandomFill& f) {
  FGVC_DISPATCH_FLOAT(t.dtype(), "random", T, random_fill_cpu_typed<T>(t, f));
}

}  // namespace detail

namespace {

void random_fill(Tensor& t, detail::Distribution dist, double a, double b, Generator& gen, const char* op) {
  FGVC_CHECK(t.defined() && (t.dtype() == DType::Float32 || t.dtype() == DType::Float64), op,
             "needs a float32 or float64 tensor, got ", describe(t));
  const int64_t n = t.numel();
  const uint64_t per_block = (dist == detail::Distribution::Uniform && t.dtype() == DType::Float64) ? 2 : 4;
  const detail::RandomFill f{dist, gen.seed(), gen.take(static_cast<uint64_t>((n + per_block - 1) / per_block)), a, b};
  // Fill a contiguous tensor in element order, then lay it into t's strides if needed.
  Tensor dst = t.is_contiguous() ? t : Tensor::empty(t.shape(), t.dtype(), t.device());
  if (dst.device().is_cpu()) {
    detail::random_fill_cpu(dst, f);
  } else {
    detail::random_fill_cuda(dst, f);
  }
  if (!dst.same(t)) t.copy_(dst);
}

}  // namespace

void uniform_(Tensor& t, double low, double high, Generator& gen) {
  random_fill(t, detail::Distribution::Uniform, low, high, gen, "uniform_");
}
void normal_(Tensor& t, double mean, double stddev, Generator& gen) {
  random_fill(t, detail::Distribution::Normal, mean, stddev, gen, "normal_");
}

Tensor rand(const Shape& shape, Generator& gen, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  uniform_(t, 0.0, 1.0, gen);
  return t;
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  normal_(t, 0.0, 1.0, gen);
  return t;
}

#if !FGVC_WITH_CUDA
void detail::random_fill_cuda(const Tensor& t, const RandomFill&) {
  throw Error("random: cannot fill " + describe(t) + ": fgvc was built without CUDA");
}
#endif

}  // namespace fgvc
