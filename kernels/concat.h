// Concatenation along an axis, and its inverse. concat copies each input into its slice of
// the output with the strided copy of tensor/copy.h (so it runs on either device); split
// returns views and copies nothing.
#pragma once
#include <vector>

#include "tensor/tensor.h"

namespace fgvc {
namespace kernels {

Tensor concat(const std::vector<Tensor>& xs, int64_t axis);
// Pieces of the given sizes along `axis` (they must add up to its length).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis);

}  // namespace kernels
}  // namespace fgvc
