// The k largest values along the last axis, sorted in descending order, with their int64
// indices. Ties go to the lower index; NaN counts as larger than every number (as in
// PyTorch), so a NaN logit is never silently skipped by a top-5 accuracy.
#pragma once
#include "tensor/tensor.h"

namespace fgvc {
namespace kernels {

struct TopK {
  Tensor values;   // [..., k], x's dtype
  Tensor indices;  // [..., k], int64
};

TopK topk(const Tensor& x, int64_t k);

namespace detail {
// x contiguous [rows, cols]; outputs contiguous [rows, k].
void topk_cpu(const Tensor& x, int64_t k, const TopK& out);
void topk_cuda(const Tensor& x, int64_t k, const TopK& out);
}  // namespace detail

}  // namespace kernels
}  // namespace fgvc
