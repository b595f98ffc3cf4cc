// Elementwise unary and binary ops with NumPy broadcasting, float32, float64 and the 16-bit
// types of mixed precision (computed in float32, the result rounded: tensor/half.h), any
// strides; outputs are new contiguous tensors. CPU loops in elementwise.cpp (OpenMP), CUDA
// kernels in elementwise.cu; the per-element formulas are shared (elementwise_ops.h).
#pragma once
#include "tensor/tensor.h"

namespace fgvc {
namespace kernels {

enum class UnaryOp { Neg, Exp, Log, Sqrt, Rsqrt, Abs, Relu, Sigmoid, Tanh, Square, Reciprocal, Sign };

enum class BinaryOp {
  Add, Sub, Mul, Div, Max, Min, Pow,
  Eq, Gt,                 // 1 or 0
  ReluBackward,           // (grad, y)  -> grad where y > 0 or y is NaN, else 0
  SigmoidBackward,        // (grad, y)  -> grad * y * (1 - y)
  TanhBackward,           // (grad, y)  -> grad * (1 - y^2)
};

const char* op_name(UnaryOp op);
const char* op_name(BinaryOp op);

Tensor unary(UnaryOp op, const Tensor& x);
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);  // a, b broadcast; same dtype and device
Tensor binary(BinaryOp op, const Tensor& a, double b);         // a op scalar
inline Tensor add(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Add, a, b); }
inline Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Sub, a, b); }
inline Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Mul, a, b); }
inline Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Div, a, b); }
inline Tensor relu(const Tensor& x) { return unary(UnaryOp::Relu, x); }
inline Tensor exp(const Tensor& x) { return unary(UnaryOp::Exp, x); }
inline Tensor log(const Tensor& x) { return unary(UnaryOp::Log, x); }

// counter += 1 in place, for an int64 scalar such as batch norm's num_batches_tracked, on its
// own device: no read-back, so no wait for the GPU.
void increment(const Tensor& counter);

namespace detail {
// Implementations behind the checks; `out` is contiguous with the broadcast shape.
void unary_cpu(UnaryOp op, const Tensor& x, const Tensor& out);
void binary_cpu(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void binary_scalar_cpu(BinaryOp op, const Tensor& a, double b, const Tensor& out);
void unary_cuda(UnaryOp op, const Tensor& x, const Tensor& out);
void binary_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out);
void binary_scalar_cuda(BinaryOp op, const Tensor& a, double b, const Tensor& out);
void increment_cuda(const Tensor& counter);
}  // namespace detail

}  // namespace kernels
}  // namespace fgvc
