// Backward rules of the network building blocks: each calls the matching kernels/ backward.
#include "autograd/nn_ops.h"

#include <cmath>

#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "autograd/saved_tensor.h"
#include "kernels/batch_norm.h"
#include "kernels/concat.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace fgvc {

namespace k = kernels;
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;
using autograd::SavedTensor;

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const k::Conv2dGeometry& g) {
  // Mixed precision: the float32 weight (and a float32 input: the first layer's) cast down;
  // the output stays in the low dtype, and so do the batch norms and activations after it.
  if (Autocast::enabled() && w.dtype() == DType::Float32 &&
      (x.dtype() == DType::Float32 || x.dtype() == Autocast::dtype())) {
    const DType low = Autocast::dtype();
    const Tensor y = conv2d(to_dtype(x, low), to_dtype(w, low), Tensor(), g);
    return bias.defined() ? add(y, to_dtype(reshape(bias, {1, bias.numel(), 1, 1}), low)) : y;
  }
  Tensor y = k::conv2d(x, w, bias, g);
  autograd::record("conv2d", {x, w, bias}, {y},
                   [x = SavedTensor(x), w = SavedTensor(w), sx = x.shape(), sw = w.shape(), g,
                    has_bias = bias.defined()](const Grads& gy, const Needs& n) -> Grads {
                     Grads out(3);
                     if (n[0]) out[0] = k::conv2d_backward_input(gy[0], w.get(), sx, g);
                     if (n[1]) out[1] = k::conv2d_backward_weight(gy[0], x.get(), sw, g);
                     if (n[2] && has_bias) out[2] = k::sum(gy[0], {0, 2, 3});
                     return out;
                   });
  return y;
}

namespace {

thread_local BatchNormAllReduce t_bn_all_reduce;

// Per-channel sums over every axis but 1, as float64 [C].
Tensor channel_sums(const Tensor& t) {
  std::vector<int64_t> axes = {0};
  for (int64_t a = 2; a < t.dim(); ++a) axes.push_back(a);
  return k::sum(t, axes).to(DType::Float64);
}

// [C] -> [1, C, 1, 1] (or [1, C]) in the data's dtype, for broadcasting against x.
Tensor per_channel(const Tensor& v, const Tensor& like) {
  Shape s(static_cast<size_t>(like.dim()), 1);
  s[1] = like.size(1);
  return v.to(like.dtype()).reshape(s);
}

// Batch norm in training mode with statistics over all ranks (see set_batch_norm_all_reduce).
Tensor synced_batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                         Tensor& running_var, double momentum, double eps, const BatchNormAllReduce& all_reduce) {
  const int64_t C = x.size(1);
  // The global mean first, then the sum of squared deviations from it (no cancellation).
  Tensor sums = k::concat({channel_sums(x), Tensor::full({1}, static_cast<double>(x.numel() / C), DType::Float64, x.device())}, 0);
  all_reduce(sums);
  const double n = sums.slice(0, C, C + 1).cpu().item<double>();
  FGVC_CHECK(n > 1, "batch_norm", "synchronised statistics over ", n, " value(s) per channel");
  const Tensor mean = k::binary(k::BinaryOp::Mul, sums.slice(0, 0, C), 1.0 / n);
  const Tensor xc = k::sub(x, per_channel(mean, x));
  Tensor sq = channel_sums(k::unary(k::UnaryOp::Square, xc));
  all_reduce(sq);
  const Tensor invstd = k::unary(k::UnaryOp::Rsqrt, k::binary(k::BinaryOp::Add, k::binary(k::BinaryOp::Mul, sq, 1.0 / n), eps));
  const Tensor y = k::batch_norm_apply(x, gamma, beta, mean.to(x.dtype()), invstd.to(x.dtype()));
  {
    NoGradGuard no_grad;
    const Tensor var_unbiased = k::binary(k::BinaryOp::Mul, sq, 1.0 / (n - 1));
    running_mean.copy_(k::add(k::binary(k::BinaryOp::Mul, running_mean, 1.0 - momentum),
                              k::binary(k::BinaryOp::Mul, mean.to(running_mean.dtype()), momentum)));
    running_var.copy_(k::add(k::binary(k::BinaryOp::Mul, running_var, 1.0 - momentum),
                             k::binary(k::BinaryOp::Mul, var_unbiased.to(running_var.dtype()), momentum)));
  }
  autograd::record(
      "batch_norm_synced", {x, gamma, beta}, {y},
      [xc, gamma = SavedTensor(gamma), invstd, n, all_reduce](const Grads& g, const Needs&) -> Grads {
        const Tensor& dy = g[0];
        const int64_t c = xc.size(1);
        // Local sums of dy and dy (x - mean); the ranks' totals give dx (every rank's loss
        // reaches x through the shared statistics); dgamma and dbeta stay local (the
        // gradient reducer averages them like every parameter's).
        const Tensor sum_dy = channel_sums(dy), sum_dy_xc = channel_sums(k::mul(dy, xc));
        Tensor both = k::concat({sum_dy, sum_dy_xc}, 0);
        all_reduce(both);
        const Tensor mean_dy = k::binary(k::BinaryOp::Mul, both.slice(0, 0, c), 1.0 / n);
        const Tensor mean_dy_xc = k::binary(k::BinaryOp::Mul, both.slice(0, c, 2 * c), 1.0 / n);
        const Tensor inv2 = k::unary(k::UnaryOp::Square, invstd);
        Tensor dx = k::sub(k::sub(dy, per_channel(mean_dy, dy)), k::mul(xc, per_channel(k::mul(inv2, mean_dy_xc), dy)));
        const Tensor& gamma_ = gamma.get();
        dx = k::mul(dx, per_channel(k::mul(invstd, gamma_.to(DType::Float64)), dy));
        return {dx, k::mul(sum_dy_xc, invstd).to(gamma_.dtype()), sum_dy.to(gamma_.dtype())};
      });
  return y;
}

}  // namespace

void set_batch_norm_all_reduce(BatchNormAllReduce fn) { t_bn_all_reduce = std::move(fn); }

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                  bool training, double momentum, double eps) {
  if (training && t_bn_all_reduce) {
    if (compute_dtype(x.dtype()) != x.dtype())  // 16-bit activations: the synchronised statistics in float32
      return to_dtype(batch_norm(to_dtype(x, compute_dtype(x.dtype())), gamma, beta, running_mean, running_var, training,
                                 momentum, eps),
                      x.dtype());
    return synced_batch_norm(x, gamma, beta, running_mean, running_var, momentum, eps, t_bn_all_reduce);
  }
  Tensor y, mean, invstd;  // mean is running_mean itself in eval mode, so it is saved as such
  if (training) {
    k::BatchNormStats s = k::batch_norm_train(x, gamma, beta, eps);
    y = s.y;
    mean = s.mean;
    invstd = s.invstd;
    NoGradGuard no_grad;  // running statistics are buffers, not part of the graph
    running_mean.copy_(k::add(k::binary(k::BinaryOp::Mul, running_mean, 1.0 - momentum),
                              k::binary(k::BinaryOp::Mul, s.mean, momentum)));
    running_var.copy_(k::add(k::binary(k::BinaryOp::Mul, running_var, 1.0 - momentum),
                             k::binary(k::BinaryOp::Mul, s.var_unbiased, momentum)));
  } else {
    mean = running_mean;
    invstd = k::unary(k::UnaryOp::Rsqrt, k::binary(k::BinaryOp::Add, running_var, eps));
    y = k::batch_norm_apply(x, gamma, beta, mean, invstd);
  }
  autograd::record("batch_norm", {x, gamma, beta}, {y},
                   [x = SavedTensor(x), gamma = SavedTensor(gamma), mean = SavedTensor(mean), invstd,
                    training](const Grads& g, const Needs&) -> Grads {
                     k::BatchNormGrads d = k::batch_norm_backward(g[0], x.get(), gamma.get(), mean.get(), invstd, training);
                     return {d.dx, d.dgamma, d.dbeta};
                   });
  return y;
}

Tensor max_pool2d(const Tensor& x, const k::Pool2dGeometry& g) {
  k::MaxPoolOutput out = k::max_pool2d(x, g);
  autograd::record("max_pool2d", {x}, {out.y}, [arg = out.argmax, shape = x.shape(), g](const Grads& gy, const Needs&) -> Grads {
    return {k::max_pool2d_backward(gy[0], arg, shape, g)};
  });
  return out.y;
}

Tensor avg_pool2d(const Tensor& x, const k::Pool2dGeometry& g) {
  Tensor y = k::avg_pool2d(x, g);
  autograd::record("avg_pool2d", {x}, {y}, [shape = x.shape(), g](const Grads& gy, const Needs&) -> Grads {
    return {k::avg_pool2d_backward(gy[0], shape, g)};
  });
  return y;
}

Tensor linear(const Tensor& x_in, const Tensor& w, const Tensor& bias) {
  // 16-bit features (mixed precision) meet the float32 classifier in float32.
  const Tensor x = x_in.dtype() != w.dtype() && compute_dtype(x_in.dtype()) == w.dtype() ? to_dtype(x_in, w.dtype()) : x_in;
  Tensor y = matmul(x, w, false, true);
  return bias.defined() ? add(y, bias) : y;
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  FGVC_CHECK(p >= 0 && p <= 1, "dropout", "p must be in [0, 1], got ", p);
  if (!training || p == 0) return x;
  if (p == 1) return mul(x, 0.0);  // everything dropped, as in PyTorch (no draws; a NaN stays NaN)
  Tensor keep = Tensor::empty(x.shape(), compute_dtype(x.dtype()), x.device());
  uniform_(keep, 0.0, 1.0, gen);
  // mask = (u > p) / (1 - p) (Gt), then scaled; u = p has probability 0.
  const Tensor mask = k::binary(k::BinaryOp::Mul, k::binary(k::BinaryOp::Gt, keep, p), 1.0 / (1.0 - p));
  // 16-bit x is scaled in float32 and rounded once (a 16-bit mask would round 1 / (1 - p)).
  if (x.dtype() != mask.dtype()) return to_dtype(mul(to_dtype(x, mask.dtype()), mask), x.dtype());
  return mul(x, mask);
}

}  // namespace fgvc
