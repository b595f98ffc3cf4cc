// Softmax and log-softmax along one axis (numerically stable: the row maximum is
// subtracted first), and their backward passes. Rows are the chosen axis; an axis other
// than the last is moved last and back.
#pragma once
#include "tensor/tensor.h"

namespace fgvc {
namespace kernels {

Tensor softmax(const Tensor& x, int64_t axis = -1);
Tensor log_softmax(const Tensor& x, int64_t axis = -1);
// Given y = softmax(x) (or log_softmax(x)) and dL/dy, returns dL/dx.
Tensor softmax_backward(const Tensor& grad, const Tensor& y, int64_t axis = -1);
Tensor log_softmax_backward(const Tensor& grad, const Tensor& y, int64_t axis = -1);

namespace detail {
// Contiguous [rows, cols].
void softmax_cpu(const Tensor& x, bool log, const Tensor& out);
void softmax_backward_cpu(const Tensor& grad, const Tensor& y, bool log, const Tensor& out);
void softmax_cuda(const Tensor& x, bool log, const Tensor& out);
void softmax_backward_cuda(const Tensor& grad, const Tensor& y, bool log, const Tensor& out);
}  // namespace detail

}  // namespace kernels
}  // namespace fgvc
