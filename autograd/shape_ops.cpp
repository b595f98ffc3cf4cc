// Views and concatenation with their backward rules: the gradient of a view is the same
// view taken backwards (reshape back, inverse permutation, scatter into a zero tensor for a
// slice, sum for an expand).
#include "autograd/ops.h"

#include <algorithm>

#include "kernels/concat.h"

namespace fgvc {

namespace k = kernels;
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;

Tensor reshape(const Tensor& x, const Shape& shape) {
  Tensor y = x.reshape(shape).detach();
  autograd::record("reshape", {x}, {y}, [in = x.shape()](const Grads& g, const Needs&) -> Grads {
    return {g[0].reshape(in)};
  });
  return y;
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  Tensor y = x.permute(dims);
  std::vector<int64_t> inverse(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) inverse[normalize_axis(dims[i], x.dim(), "permute")] = static_cast<int64_t>(i);
  autograd::record("permute", {x}, {y}, [inverse](const Grads& g, const Needs&) -> Grads {
    return {g[0].permute(inverse)};
  });
  return y;
}

Tensor transpose(const Tensor& x, int64_t a, int64_t b) {
  std::vector<int64_t> dims(static_cast<size_t>(x.dim()));
  for (size_t i = 0; i < dims.size(); ++i) dims[i] = static_cast<int64_t>(i);
  std::swap(dims[normalize_axis(a, x.dim(), "transpose")], dims[normalize_axis(b, x.dim(), "transpose")]);
  return permute(x, dims);
}

Tensor slice(const Tensor& x, int64_t axis, int64_t start, int64_t end, int64_t step) {
  Tensor y = x.slice(axis, start, end, step);
  // The first index taken, normalised as Tensor::slice does (a negative start counts from the
  // end; clamped to the axis). Not from the view's offset: on an expanded axis (stride 0)
  // every start has the same offset.
  const int a = normalize_axis(axis, x.dim(), "slice");
  const int64_t first = std::clamp<int64_t>(start < 0 ? start + x.size(a) : start, 0, x.size(a));
  autograd::record("slice", {x}, {y}, [in = x.shape(), dt = x.dtype(), dev = x.device(), a, first, step](
                                           const Grads& g, const Needs&) -> Grads {
    Tensor dx = Tensor::zeros(in, dt, dev);
    // An empty slice has nothing to copy (and its end, computed as below, could be negative).
    if (g[0].size(a) > 0) dx.slice(a, first, first + (g[0].size(a) - 1) * step + 1, step).copy_(g[0]);
    return {dx};
  });
  return y;
}

Tensor expand(const Tensor& x, const Shape& shape) {
  Tensor y = x.expand(shape);
  autograd::record("expand", {x}, {y}, [in = x.shape()](const Grads& g, const Needs&) -> Grads {
    return {sum_to(g[0], in)};
  });
  return y;
}

Tensor contiguous(const Tensor& x) {
  Tensor y = x.contiguous().detach();
  autograd::record("contiguous", {x}, {y}, [](const Grads& g, const Needs&) -> Grads { return {g[0]}; });
  return y;
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor y = x.to(dtype).detach();
  // An integer result (or source) has no gradient: nothing to record, as in PyTorch.
  if (!is_floating(dtype) || !is_floating(x.dtype())) return y;
  autograd::record("to_dtype", {x}, {y}, [from = x.dtype()](const Grads& g, const Needs&) -> Grads { return {g[0].to(from)}; });
  return y;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  Tensor y = k::concat(xs, axis);
  std::vector<int64_t> sizes;
  for (const Tensor& x : xs) sizes.push_back(x.size(axis));
  autograd::record("concat", xs, {y}, [sizes, axis](const Grads& g, const Needs& n) -> Grads {
    Grads parts = k::split(g[0], sizes, axis);
    for (size_t i = 0; i < parts.size(); ++i) parts[i] = n[i] ? parts[i].contiguous() : Tensor();
    return parts;
  });
  return y;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis) {
  std::vector<Tensor> ys = k::split(x, sizes, axis);
  autograd::record("split", {x}, ys, [axis](const Grads& g, const Needs&) -> Grads {
    return {k::concat(g, axis)};  // the engine hands zeros for unused pieces
  });
  return ys;
}

}  // namespace fgvc
