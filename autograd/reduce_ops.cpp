// Reductions and their backward: the gradient is broadcast back over the reduced axes.
#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "autograd/saved_tensor.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace fgvc {

namespace k = kernels;
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;

namespace {
// g has the reduced shape (with or without kept axes); returns it as [.., 1, ..] over `in`'s rank.
Tensor keepdim_view(const Tensor& g, const Shape& in, const std::vector<int64_t>& axes) {
  return g.reshape(k::reduced_shape(in, axes, true));
}
}  // namespace

Tensor sum_to(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  FGVC_CHECK(x.dim() >= static_cast<int64_t>(shape.size()), "sum_to", "cannot sum ", describe(x), " to ",
             shape_str(shape));
  const int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  std::vector<int64_t> axes;
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d < lead || (shape[d - lead] == 1 && x.size(d) != 1)) axes.push_back(d);
  for (int64_t d = lead; d < x.dim(); ++d)
    FGVC_CHECK(shape[d - lead] == 1 || shape[d - lead] == x.size(d), "sum_to", "cannot sum ", describe(x), " to ",
               shape_str(shape));
  const Tensor s = axes.empty() ? x : k::sum(x, axes, true);
  Tensor y = s.reshape(shape);
  // Differentiable like sum: the gradient broadcasts back to x's shape. (Inside backward
  // closures, where it sums gradients, nothing is recorded.)
  autograd::record("sum_to", {x}, {y}, [in = x.shape(), keep = s.shape()](const Grads& g, const Needs&) -> Grads {
    return {g[0].reshape(keep).expand(in).contiguous()};
  });
  return y;
}

Tensor sum(const Tensor& x_in, const std::vector<int64_t>& axes, bool keepdim) {
  const Tensor x = float32_under_autocast(x_in);
  Tensor y = k::sum(x, axes, keepdim);
  const std::vector<int64_t> ax = k::normalize_axes(axes, x.dim(), "sum");
  autograd::record("sum", {x}, {y}, [in = x.shape(), ax](const Grads& g, const Needs&) -> Grads {
    return {keepdim_view(g[0], in, ax).expand(in).contiguous()};
  });
  return y;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  Tensor y = k::mean(x, axes, keepdim);
  const std::vector<int64_t> ax = k::normalize_axes(axes, x.dim(), "mean");
  int64_t count = 1;
  for (int64_t a : ax) count *= x.size(a);
  autograd::record("mean", {x}, {y}, [in = x.shape(), ax, count](const Grads& g, const Needs&) -> Grads {
    const Tensor scaled = k::binary(k::BinaryOp::Mul, g[0], 1.0 / static_cast<double>(count));
    return {keepdim_view(scaled, in, ax).expand(in).contiguous()};
  });
  return y;
}

Tensor max(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  Tensor y = k::max(x, axes, keepdim);
  const std::vector<int64_t> ax = k::normalize_axes(axes, x.dim(), "max");
  autograd::record("max", {x}, {y},
                   [sx = autograd::SavedTensor(x), sy = autograd::SavedTensor(y), ax](const Grads& g, const Needs&) -> Grads {
    const Tensor &in = sx.get(), &out = sy.get();
    const Tensor m = keepdim_view(out, in.shape(), ax);
    // Counted and shared in float32 for 16-bit inputs (float16 cannot count past 65,504,
    // bfloat16 past 256 exactly); each share is rounded once.
    const DType count_type = compute_dtype(in.dtype());
    const Tensor is_max = k::binary(k::BinaryOp::Eq, in, m).to(count_type);  // 1 where the input is a maximum
    const Tensor ties = k::sum(is_max, ax, true);                             // how many share it
    const Tensor share = k::div(keepdim_view(g[0], in.shape(), ax).to(count_type), ties);
    return {k::mul(is_max, share).to(in.dtype())};
  });
  return y;
}

}  // namespace fgvc
