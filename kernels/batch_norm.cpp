#include "kernels/batch_norm.h"

#include <atomic>
#include <cmath>
#include <vector>

#include "kernels/elementwise.h"
#include "kernels/reduce.h"
#include "fgvc/config.h"
#include "tensor/cast.h"
#include "tensor/dispatch.h"

namespace fgvc {
namespace kernels {

namespace {

std::atomic<bool> g_cuda_fused{true};

struct Layout {
  int64_t n, c, hw;  // x viewed as [n, c, hw]
};

Layout layout(const Tensor& x, const Tensor& gamma, const char* op) {
  FGVC_CHECK(x.defined() && gamma.defined(), op, "undefined tensor");
  FGVC_CHECK(x.dim() == 2 || x.dim() == 4, op, "needs [N, C] or [N, C, H, W], got ", describe(x));
  FGVC_CHECK(gamma.device() == x.device(), op, "gamma ", describe(gamma), " is not on ", x.device().str());
  FGVC_CHECK(is_floating(x.dtype()), op, "needs a floating dtype, got ", describe(x));
  FGVC_CHECK(gamma.shape() == Shape{x.size(1)} && gamma.dtype() == compute_dtype(x.dtype()), op, "gamma ",
             describe(gamma), " does not match ", x.size(1), " channels of ", describe(x));
  return {x.size(0), x.size(1), x.dim() == 4 ? x.size(2) * x.size(3) : 1};
}

// beta, mean, invstd: [C] of x's compute dtype (float32 beside 16-bit activations), on x's device.
void check_per_channel(const Tensor& t, const char* name, const Tensor& x, const char* op) {
  const DType want = compute_dtype(x.dtype());
  FGVC_CHECK(t.defined() && t.shape() == Shape{x.size(1)} && t.dtype() == want && t.device() == x.device(), op,
             name, " ", t.defined() ? describe(t) : std::string("(undefined)"), " should be [", x.size(1), "] ",
             dtype_name(want), " on ", x.device().str());
}

// Per-channel sums of f(x) over n and hw, in double: four independent accumulators per
// plane (the adds overlap instead of waiting on one another), combined in a fixed order.
template <class T, class F>
std::vector<double> channel_sums(const T* x, const Layout& l, F f) {
  std::vector<double> s(static_cast<size_t>(l.c), 0.0);
#pragma omp parallel for if (l.n * l.c * l.hw > (1 << 15)) schedule(static)
  for (int64_t c = 0; c < l.c; ++c) {
    double acc = 0;
    for (int64_t n = 0; n < l.n; ++n) {
      const int64_t base = (n * l.c + c) * l.hw;
      const T* p = x + base;
      double lane[4] = {0, 0, 0, 0};
      int64_t i = 0;
      for (; i + 4 <= l.hw; i += 4)
        for (int k = 0; k < 4; ++k) lane[k] += f(c, to_double(p[i + k]), base + i + k);
      for (; i < l.hw; ++i) lane[0] += f(c, to_double(p[i]), base + i);
      acc += (lane[0] + lane[1]) + (lane[2] + lane[3]);
    }
    s[c] = acc;
  }
  return s;
}

// x, y of the storage type T; the per-channel values P = compute_t<T>.
template <class T, class P = compute_t<T>>
void apply_typed(const T* x, const Layout& l, const P* gamma, const P* beta, const P* mean, const P* invstd, T* y) {
#pragma omp parallel for if (l.n * l.c * l.hw > (1 << 15)) schedule(static)
  for (int64_t p = 0; p < l.n * l.c; ++p) {
    const int64_t c = p % l.c;
    const P scale = gamma[c] * invstd[c], shift = beta[c] - mean[c] * scale;
    for (int64_t i = 0; i < l.hw; ++i) y[p * l.hw + i] = narrow<T>(widen(x[p * l.hw + i]) * scale + shift);
  }
}

template <class T, class P = compute_t<T>>
BatchNormStats train_typed(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, const Layout& l) {
  const T* px = static_cast<const T*>(x.data_ptr());
  const double count = static_cast<double>(l.n * l.hw);
  const std::vector<double> sum = channel_sums(px, l, [](int64_t, double v, int64_t) { return v; });
  std::vector<double> mean(sum.size());
  for (size_t c = 0; c < sum.size(); ++c) mean[c] = sum[c] / count;
  const std::vector<double> sq = channel_sums(px, l, [&](int64_t c, double v, int64_t) { return (v - mean[c]) * (v - mean[c]); });
  std::vector<double> inv(sum.size()), unbiased(sum.size());
  for (size_t c = 0; c < sum.size(); ++c) {
    inv[c] = 1.0 / std::sqrt(sq[c] / count + eps);
    unbiased[c] = count > 1 ? sq[c] / (count - 1) : 0.0;
  }
  BatchNormStats s;
  const DType p = compute_dtype(x.dtype());
  s.mean = Tensor::from_vector(mean, {l.c}).to(p);
  s.invstd = Tensor::from_vector(inv, {l.c}).to(p);
  s.var_unbiased = Tensor::from_vector(unbiased, {l.c}).to(p);
  s.y = Tensor::empty(x.shape(), x.dtype());
  apply_typed<T>(px, l, static_cast<const P*>(gamma.data_ptr()), static_cast<const P*>(beta.data_ptr()),
                 static_cast<const P*>(s.mean.data_ptr()), static_cast<const P*>(s.invstd.data_ptr()),
                 static_cast<T*>(s.y.data_ptr()));
  return s;
}

template <class T, class P = compute_t<T>>
BatchNormGrads backward_typed(const Tensor& grad, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                              const Tensor& invstd, bool training, const Layout& l) {
  const T *g = static_cast<const T*>(grad.data_ptr()), *px = static_cast<const T*>(x.data_ptr());
  const P *pg = static_cast<const P*>(gamma.data_ptr()), *pm = static_cast<const P*>(mean.data_ptr());
  const P* pi = static_cast<const P*>(invstd.data_ptr());
  // dbeta = sum g, dgamma = sum g * xhat.
  const std::vector<double> dbeta = channel_sums(g, l, [](int64_t, double v, int64_t) { return v; });
  const std::vector<double> dgamma = channel_sums(px, l, [&](int64_t c, double v, int64_t at) {
    return to_double(g[at]) * (v - pm[c]) * pi[c];
  });
  BatchNormGrads out;
  out.dbeta = Tensor::from_vector(dbeta, {l.c}).to(compute_dtype(x.dtype()));
  out.dgamma = Tensor::from_vector(dgamma, {l.c}).to(compute_dtype(x.dtype()));
  out.dx = Tensor::empty(x.shape(), x.dtype());
  T* dx = static_cast<T*>(out.dx.data_ptr());
  const double count = static_cast<double>(l.n * l.hw);
#pragma omp parallel for if (l.n * l.c * l.hw > (1 << 15)) schedule(static)
  for (int64_t p = 0; p < l.n * l.c; ++p) {
    const int64_t c = p % l.c;
    const double scale = static_cast<double>(pg[c]) * pi[c];
    for (int64_t i = 0; i < l.hw; ++i) {
      const int64_t at = p * l.hw + i;
      if (!training) {
        dx[at] = from_double<T>(to_double(g[at]) * scale);
        continue;
      }
      // dx = gamma invstd / M (M g - sum g - xhat sum(g xhat))
      const double xhat = (to_double(px[at]) - pm[c]) * pi[c];
      dx[at] = from_double<T>(scale * (to_double(g[at]) - dbeta[c] / count - xhat * dgamma[c] / count));
    }
  }
  return out;
}

// The second CUDA path (set_cuda_batch_norm_fused(false)), composed from the device-generic
// (and parity-tested) elementwise and reduction kernels: the same formulas as the CPU loops
// above, with several times the passes over memory of the fused kernels in batch_norm.cu.
std::vector<int64_t> stat_axes(const Tensor& x) { return x.dim() == 4 ? std::vector<int64_t>{0, 2, 3} : std::vector<int64_t>{0}; }
Tensor per_channel(const Tensor& v, const Tensor& x) {  // [C] -> broadcastable over x
  return x.dim() == 4 ? v.view({1, v.size(0), 1, 1}) : v.view({1, v.size(0)});
}

BatchNormStats train_generic(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps, const Layout& l) {
  const double count = static_cast<double>(l.n * l.hw);
  BatchNormStats s;
  s.mean = mean(x, stat_axes(x));
  const Tensor centered = sub(x, per_channel(s.mean, x));
  const Tensor var = mean(unary(UnaryOp::Square, centered), stat_axes(x));
  s.invstd = unary(UnaryOp::Rsqrt, binary(BinaryOp::Add, var, eps));
  s.var_unbiased = binary(BinaryOp::Mul, var, count > 1 ? count / (count - 1) : 0.0);
  s.y = add(mul(centered, per_channel(mul(gamma, s.invstd), x)), per_channel(beta, x));
  return s;
}

Tensor apply_generic(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& m, const Tensor& invstd) {
  const Tensor scale = mul(gamma, invstd), shift = sub(beta, mul(m, scale));
  return add(mul(x, per_channel(scale, x)), per_channel(shift, x));
}

BatchNormGrads backward_generic(const Tensor& g, const Tensor& x, const Tensor& gamma, const Tensor& m,
                                const Tensor& invstd, bool training, const Layout& l) {
  BatchNormGrads out;
  const Tensor xhat = mul(sub(x, per_channel(m, x)), per_channel(invstd, x));
  out.dbeta = sum(g, stat_axes(x));
  out.dgamma = sum(mul(g, xhat), stat_axes(x));
  const Tensor scale = per_channel(mul(gamma, invstd), x);
  if (!training) {
    out.dx = mul(g, scale);
    return out;
  }
  const double count = static_cast<double>(l.n * l.hw);
  // dx = gamma invstd / M (M g - sum g - xhat sum(g xhat))
  const Tensor inner = sub(sub(binary(BinaryOp::Mul, g, count), per_channel(out.dbeta, x)),
                           mul(xhat, per_channel(out.dgamma, x)));
  out.dx = mul(inner, binary(BinaryOp::Mul, scale, 1.0 / count));
  return out;
}

// The fused CUDA kernels index in 32 bits: a tensor of 2^31 elements or more (a batch of 448
// at 560 px, say) takes the generic ops instead.
bool fused_cuda(const Tensor& x) {
  return x.device().is_cuda() && cuda_batch_norm_fused() && x.numel() < (int64_t(1) << 31);
}

}  // namespace

BatchNormStats batch_norm_train(const Tensor& x_in, const Tensor& gamma, const Tensor& beta, double eps) {
  const Layout l = layout(x_in, gamma, "batch_norm");
  check_per_channel(beta, "beta", x_in, "batch_norm");
  FGVC_CHECK(l.n * l.hw > 1, "batch_norm", "training needs more than one value per channel, got ", describe(x_in));
  const Tensor x = x_in.contiguous();
  if (fused_cuda(x))
    return detail::batch_norm_train_cuda(x, gamma.contiguous(), beta.contiguous(), eps);
  if (x.device().is_cuda()) {  // the generic ops want one dtype: 16-bit x goes through float32
    BatchNormStats s = train_generic(x.to(compute_dtype(x.dtype())), gamma, beta, eps, l);
    s.y = s.y.to(x.dtype());
    return s;
  }
  BatchNormStats s;
  FGVC_DISPATCH_FLOATING(x.dtype(), "batch_norm", T, s = train_typed<T>(x, gamma.contiguous(), beta.contiguous(), eps, l));
  return s;
}

Tensor batch_norm_apply(const Tensor& x_in, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                        const Tensor& invstd) {
  const Layout l = layout(x_in, gamma, "batch_norm");
  check_per_channel(beta, "beta", x_in, "batch_norm");
  check_per_channel(mean, "mean", x_in, "batch_norm");
  check_per_channel(invstd, "invstd", x_in, "batch_norm");
  const Tensor x = x_in.contiguous();
  if (x.device().is_cuda())
    return fused_cuda(x) ? detail::batch_norm_apply_cuda(x, gamma.contiguous(), beta.contiguous(),
                                                                   mean.contiguous(), invstd.contiguous())
                                   : apply_generic(x.to(compute_dtype(x.dtype())), gamma, beta, mean, invstd).to(x.dtype());
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  FGVC_DISPATCH_FLOATING(x.dtype(), "batch_norm", T, {
    using P = compute_t<T>;
    apply_typed<T>(static_cast<const T*>(x.data_ptr()), l, gamma.contiguous().data<P>(), beta.contiguous().data<P>(),
                   mean.contiguous().data<P>(), invstd.contiguous().data<P>(), static_cast<T*>(y.data_ptr()));
  });
  return y;
}

BatchNormGrads batch_norm_backward(const Tensor& grad, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                   const Tensor& invstd, bool training) {
  const Layout l = layout(x, gamma, "batch_norm_backward");
  FGVC_CHECK(grad.shape() == x.shape() && grad.dtype() == x.dtype() && grad.device() == x.device(),
             "batch_norm_backward", "gradient ", describe(grad), " does not match ", describe(x));
  check_per_channel(mean, "mean", x, "batch_norm_backward");
  check_per_channel(invstd, "invstd", x, "batch_norm_backward");
  if (fused_cuda(x))
    return detail::batch_norm_backward_cuda(grad.contiguous(), x.contiguous(), gamma.contiguous(), mean.contiguous(),
                                            invstd.contiguous(), training);
  if (x.device().is_cuda()) {
    const DType p = compute_dtype(x.dtype());
    BatchNormGrads d = backward_generic(grad.to(p).contiguous(), x.to(p).contiguous(), gamma, mean, invstd, training, l);
    d.dx = d.dx.to(x.dtype());
    return d;
  }
  BatchNormGrads out;
  FGVC_DISPATCH_FLOATING(x.dtype(), "batch_norm_backward", T,
                      out = backward_typed<T>(grad.contiguous(), x.contiguous(), gamma.contiguous(),
                                              mean.contiguous(), invstd.contiguous(), training, l));
  return out;
}

void set_cuda_batch_norm_fused(bool on) { g_cuda_fused = on; }
bool cuda_batch_norm_fused() { return g_cuda_fused; }

#if !FGVC_WITH_CUDA
namespace detail {
BatchNormStats batch_norm_train_cuda(const Tensor&, const Tensor&, const Tensor&, double) {
  throw Error("batch_norm: built without CUDA");
}
Tensor batch_norm_apply_cuda(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
  throw Error("batch_norm: built without CUDA");
}
BatchNormGrads batch_norm_backward_cuda(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                        bool) {
  throw Error("batch_norm_backward: built without CUDA");
}
}  // namespace detail
#endif

}  // namespace kernels
}  // namespace fgvc
