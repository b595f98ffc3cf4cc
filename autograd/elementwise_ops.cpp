// Elementwise ops with their backward rules. Saved tensors are autograd::SavedTensor: detached
// (the graph must not own the tensors that own it) and checked for in-place writes on use.
#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "autograd/saved_tensor.h"
#include "kernels/elementwise.h"

namespace fgvc {

namespace k = kernels;
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;
using autograd::SavedTensor;

namespace {

// What a unary op's backward reads, so that the node keeps that alone: saving only y for
// relu frees its input (in a network, the batch-norm output before it) at once.
enum class Keep { Nothing, Input, Output };

// y = f(x) with dy/dx computed by `rule(grad, kept)` from x or y, whichever `keep` names.
template <class Rule>
Tensor unary_op(const char* name, k::UnaryOp op, const Tensor& x, Keep keep, Rule rule) {
  Tensor y = k::unary(op, x);
  const SavedTensor kept(keep == Keep::Input ? x : keep == Keep::Output ? y : Tensor());
  autograd::record(name, {x}, {y},
                   [kept, rule](const Grads& g, const Needs&) -> Grads { return {rule(g[0], kept.get())}; });
  return y;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = k::add(a, b);
  autograd::record("add", {a, b}, {y}, [sa = a.shape(), sb = b.shape()](const Grads& g, const Needs& n) -> Grads {
    return {n[0] ? sum_to(g[0], sa) : Tensor(), n[1] ? sum_to(g[0], sb) : Tensor()};
  });
  return y;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor y = k::sub(a, b);
  autograd::record("sub", {a, b}, {y}, [sa = a.shape(), sb = b.shape()](const Grads& g, const Needs& n) -> Grads {
    return {n[0] ? sum_to(g[0], sa) : Tensor(), n[1] ? sum_to(k::unary(k::UnaryOp::Neg, g[0]), sb) : Tensor()};
  });
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor y = k::mul(a, b);
  // Each operand is kept only for the other's gradient: dropout's mul(x, mask) keeps the mask
  // alone, and x is freed once the next layer is done with it.
  autograd::record("mul", {a, b}, {y},
                   [a = SavedTensor(b.requires_grad() ? a : Tensor()), b = SavedTensor(a.requires_grad() ? b : Tensor()),
                    sa = a.shape(), sb = b.shape()](const Grads& g, const Needs& n) -> Grads {
                     return {n[0] ? sum_to(k::mul(g[0], b.get()), sa) : Tensor(),
                             n[1] ? sum_to(k::mul(g[0], a.get()), sb) : Tensor()};
                   });
  return y;
}

Tensor div(const Tensor& a, const Tensor& b) {
  Tensor y = k::div(a, b);
  autograd::record("div", {a, b}, {y},
                   [b = SavedTensor(b), y = SavedTensor(y), sa = a.shape(), sb = b.shape()](const Grads& g,
                                                                                           const Needs& n) -> Grads {
                     Grads out(2);
                     if (n[0]) out[0] = sum_to(k::div(g[0], b.get()), sa);
                     if (n[1]) out[1] = sum_to(k::unary(k::UnaryOp::Neg, k::div(k::mul(g[0], y.get()), b.get())), sb);
                     return out;
                   });
  return y;
}

Tensor add(const Tensor& a, double b) {
  Tensor y = k::binary(k::BinaryOp::Add, a, b);
  autograd::record("add_scalar", {a}, {y}, [](const Grads& g, const Needs&) -> Grads { return {g[0]}; });
  return y;
}

Tensor mul(const Tensor& a, double b) {
  Tensor y = k::binary(k::BinaryOp::Mul, a, b);
  autograd::record("mul_scalar", {a}, {y}, [b](const Grads& g, const Needs&) -> Grads {
    return {k::binary(k::BinaryOp::Mul, g[0], b)};
  });
  return y;
}

Tensor pow(const Tensor& a_in, double exponent) {
  const Tensor a = float32_under_autocast(a_in);
  Tensor y = k::binary(k::BinaryOp::Pow, a, exponent);
  autograd::record("pow", {a}, {y}, [a = SavedTensor(a), exponent](const Grads& g, const Needs&) -> Grads {
    // d/da a^p = p a^(p-1); a^0 is constant, so 0 (p a^(p-1) would be 0 * inf at a = 0)
    if (exponent == 0.0) return {Tensor::zeros(g[0].shape(), g[0].dtype(), g[0].device())};
    const Tensor d = k::binary(k::BinaryOp::Mul, k::binary(k::BinaryOp::Pow, a.get(), exponent - 1.0), exponent);
    return {k::mul(g[0], d)};
  });
  return y;
}

Tensor neg(const Tensor& x) {
  return unary_op("neg", k::UnaryOp::Neg, x, Keep::Nothing,
                  [](const Tensor& g, const Tensor&) { return k::unary(k::UnaryOp::Neg, g); });
}
Tensor exp(const Tensor& x) {
  return unary_op("exp", k::UnaryOp::Exp, float32_under_autocast(x), Keep::Output, [](const Tensor& g, const Tensor& y) { return k::mul(g, y); });
}
Tensor log(const Tensor& x) {
  return unary_op("log", k::UnaryOp::Log, float32_under_autocast(x), Keep::Input, [](const Tensor& g, const Tensor& x_) { return k::div(g, x_); });
}
Tensor sqrt(const Tensor& x) {
  return unary_op("sqrt", k::UnaryOp::Sqrt, x, Keep::Output, [](const Tensor& g, const Tensor& y) {
    return k::div(k::binary(k::BinaryOp::Mul, g, 0.5), y);
  });
}
// y > 0 exactly where x > 0, and y is NaN where x is (relu keeps a NaN), so the gate reads y:
// the gradient passes where y > 0 or y is NaN, as PyTorch's threshold_backward.
Tensor relu(const Tensor& x) {
  return unary_op("relu", k::UnaryOp::Relu, x, Keep::Output, [](const Tensor& g, const Tensor& y) {
    return k::binary(k::BinaryOp::ReluBackward, g, y);
  });
}
Tensor sigmoid(const Tensor& x) {
  return unary_op("sigmoid", k::UnaryOp::Sigmoid, x, Keep::Output, [](const Tensor& g, const Tensor& y) {
    return k::binary(k::BinaryOp::SigmoidBackward, g, y);
  });
}
Tensor tanh(const Tensor& x) {
  return unary_op("tanh", k::UnaryOp::Tanh, x, Keep::Output, [](const Tensor& g, const Tensor& y) {
    return k::binary(k::BinaryOp::TanhBackward, g, y);
  });
}
Tensor square(const Tensor& x) {
  return unary_op("square", k::UnaryOp::Square, x, Keep::Input, [](const Tensor& g, const Tensor& x_) {
    return k::mul(g, k::binary(k::BinaryOp::Mul, x_, 2.0));
  });
}

}  // namespace fgvc
