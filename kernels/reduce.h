// Reductions over any set of axes: sum, mean, max (float32, float64, and the 16-bit types of
// mixed precision; sums accumulate in double on both devices, and a 16-bit result is float32's
// rounded). The input is viewed as [outer, R, inner] when the reduced axes
// are adjacent (no copy); otherwise they are first permuted to the end.
#pragma once
#include <vector>

#include "tensor/tensor.h"

namespace fgvc {
namespace kernels {

enum class ReduceOp { Sum, Max };

// `axes` empty means all axes. Negative axes count from the end; duplicates are an error.
Tensor sum(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);
Tensor max(const Tensor& x, const std::vector<int64_t>& axes = {}, bool keepdim = false);

// The shape a reduction produces, and the sorted, normalised axes.
std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, int64_t rank, const char* op);
Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& axes, bool keepdim);

namespace detail {
// x contiguous viewed as [outer, r, inner]; out contiguous [outer, inner]; result scaled by `scale`.
void reduce_cpu(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner, double scale, const Tensor& out);
void reduce_cuda(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner, double scale, const Tensor& out);
}  // namespace detail

}  // namespace kernels
}  // namespace fgvc
