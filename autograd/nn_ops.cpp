// Backward rules of the network building blocks: each calls the matching kernels/ backward.
#include "autograd/nn_ops.h"

#include <cmath>

#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "kernels/batch_norm.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace fgvc {

namespace k = kernels;
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const k::Conv2dGeometry& g) {
  if (Autocast::enabled() && x.dtype() == DType::Float32 && w.dtype() == DType::Float32) {
    const DType low = Autocast::dtype();
    const Tensor y = to_dtype(conv2d(to_dtype(x, low), to_dtype(w, low), Tensor(), g), DType::Float32);
    return bias.defined() ? add(y, reshape(bias, {1, bias.numel(), 1, 1})) : y;
  }
  Tensor y = k::conv2d(x, w, bias, g);
  autograd::record("conv2d", {x, w, bias}, {y},
                   [x = x.detach(), w = w.detach(), g, has_bias = bias.defined()](const Grads& gy, const Needs& n) -> Grads {
                     Grads out(3);
                     if (n[0]) out[0] = k::conv2d_backward_input(gy[0], w, x.shape(), g);
                     if (n[1]) out[1] = k::conv2d_backward_weight(gy[0], x, w.shape(), g);
                     if (n[2] && has_bias) out[2] = k::sum(gy[0], {0, 2, 3});
                     return out;
                   });
  return y;
}

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean, Tensor& running_var,
                  bool training, double momentum, double eps) {
  Tensor y, mean, invstd;
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
    mean = running_mean.detach();
    invstd = k::unary(k::UnaryOp::Rsqrt, k::binary(k::BinaryOp::Add, running_var, eps));
    y = k::batch_norm_apply(x, gamma, beta, mean, invstd);
  }
  autograd::record("batch_norm", {x, gamma, beta}, {y},
                   [x = x.detach(), gamma = gamma.detach(), mean, invstd, training](const Grads& g, const Needs&) -> Grads {
                     k::BatchNormGrads d = k::batch_norm_backward(g[0], x, gamma, mean, invstd, training);
                     return {d.dx, d.dgamma, d.dbeta};
                   });
  return y;
}

Tensor max_pool2d(const Tensor& x, const k::Pool2dGeometry& g) {
  k::MaxPoolOutput out = k::max_pool2d(x, g);
  autograd::record("max_pool2d", {x}, {out.y}, [arg = out.argmax, shape = x.shape()](const Grads& gy, const Needs&) -> Grads {
    return {k::max_pool2d_backward(gy[0], arg, shape)};
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

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  Tensor y = matmul(x, w, false, true);
  return bias.defined() ? add(y, bias) : y;
}

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  FGVC_CHECK(p >= 0 && p < 1, "dropout", "p must be in [0, 1), got ", p);
  if (!training || p == 0) return x;
  Tensor keep = Tensor::empty(x.shape(), x.dtype(), x.device());
  uniform_(keep, 0.0, 1.0, gen);
  // mask = (u >= p) / (1 - p): 1 where u > p, via Gt, then scaled.
  const Tensor mask = k::binary(k::BinaryOp::Mul, k::binary(k::BinaryOp::Gt, keep, p), 1.0 / (1.0 - p));
  return mul(x, mask);
}

}  // namespace fgvc
