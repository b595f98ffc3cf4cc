// Per-element formulas of kernels/elementwise.h, one definition used by the CPU loops and
// the CUDA kernels. Templated on the op so each loop is a tight, vectorisable body.
#pragma once
#include <cmath>
#include <type_traits>

#include "kernels/elementwise.h"
#include "tensor/macros.h"

namespace fgvc {
namespace kernels {

template <UnaryOp op, class T>
FGVC_HD inline T unary_fn(T x) {
  using std::exp; using std::log; using std::sqrt; using std::fabs; using std::tanh;
  if constexpr (op == UnaryOp::Neg) return -x;
  else if constexpr (op == UnaryOp::Exp) return exp(x);
  else if constexpr (op == UnaryOp::Log) return log(x);
  else if constexpr (op == UnaryOp::Sqrt) return sqrt(x);
  else if constexpr (op == UnaryOp::Rsqrt) return T(1) / sqrt(x);
  else if constexpr (op == UnaryOp::Abs) return fabs(x);
  else if constexpr (op == UnaryOp::Relu) return x > T(0) || x != x ? x : T(0);  // NaN stays NaN, as in PyTorch
  else if constexpr (op == UnaryOp::Sigmoid) return x >= T(0) ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
  else if constexpr (op == UnaryOp::Tanh) return tanh(x);
  else if constexpr (op == UnaryOp::Square) return x * x;
  else if constexpr (op == UnaryOp::Reciprocal) return T(1) / x;
  else return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));  // Sign
}

template <BinaryOp op, class T>
FGVC_HD inline T binary_fn(T a, T b) {
  using std::pow;
  if constexpr (op == BinaryOp::Add) return a + b;
  else if constexpr (op == BinaryOp::Sub) return a - b;
  else if constexpr (op == BinaryOp::Mul) return a * b;
  else if constexpr (op == BinaryOp::Div) return a / b;
  else if constexpr (op == BinaryOp::Max) return (a > b || a != a) ? a : b;  // NaN propagates
  else if constexpr (op == BinaryOp::Min) return (a < b || a != a) ? a : b;
  else if constexpr (op == BinaryOp::Pow) return pow(a, b);
  else if constexpr (op == BinaryOp::Eq) return a == b ? T(1) : T(0);
  else if constexpr (op == BinaryOp::Gt) return a > b ? T(1) : T(0);
  // b is relu's output: the gradient passes where it is above 0, or NaN (PyTorch's threshold_backward).
  else if constexpr (op == BinaryOp::ReluBackward) return !(b <= T(0)) ? a : T(0);
  else if constexpr (op == BinaryOp::SigmoidBackward) return a * b * (T(1) - b);
  else return a * (T(1) - b * b);  // TanhBackward
}

// Calls f(std::integral_constant<Op, op>{}) so that a generic lambda sees the op as a
// compile-time constant: `constexpr auto op = decltype(c)::value;`.
template <class F>
void dispatch_unary(UnaryOp op, F&& f) {
  switch (op) {
#define FGVC_U(name) case UnaryOp::name: f(std::integral_constant<UnaryOp, UnaryOp::name>{}); break;
    FGVC_U(Neg) FGVC_U(Exp) FGVC_U(Log) FGVC_U(Sqrt) FGVC_U(Rsqrt) FGVC_U(Abs) FGVC_U(Relu)
    FGVC_U(Sigmoid) FGVC_U(Tanh) FGVC_U(Square) FGVC_U(Reciprocal) FGVC_U(Sign)
#undef FGVC_U
  }
}

template <class F>
void dispatch_binary(BinaryOp op, F&& f) {
  switch (op) {
#define FGVC_B(name) case BinaryOp::name: f(std::integral_constant<BinaryOp, BinaryOp::name>{}); break;
    FGVC_B(Add) FGVC_B(Sub) FGVC_B(Mul) FGVC_B(Div) FGVC_B(Max) FGVC_B(Min) FGVC_B(Pow) FGVC_B(Eq)
    FGVC_B(Gt) FGVC_B(ReluBackward) FGVC_B(SigmoidBackward) FGVC_B(TanhBackward)
#undef FGVC_B
  }
}

}  // namespace kernels
}  // namespace fgvc
