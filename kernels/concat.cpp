#include "kernels/concat.h"

namespace fgvc {
namespace kernels {

Tensor concat(const std::vector<Tensor>& xs, int64_t axis) {
  FGVC_CHECK(!xs.empty(), "concat", "no tensors to concatenate");
  const Tensor& first = xs.front();
  FGVC_CHECK(first.defined(), "concat", "undefined tensor");
  const int a = normalize_axis(axis, first.dim(), "concat");
  Shape shape = first.shape();
  shape[a] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    FGVC_CHECK(x.defined() && x.dim() == first.dim(), "concat", "input ", i, " is ", describe(x),
               ", input 0 is ", describe(first));
    FGVC_CHECK(x.dtype() == first.dtype() && x.device() == first.device(), "concat", "input ", i, " is ",
               describe(x), ", input 0 is ", describe(first));
    for (int64_t d = 0; d < x.dim(); ++d)
      FGVC_CHECK(d == a || x.size(d) == first.size(d), "concat", "input ", i, " is ", describe(x),
                 ", input 0 is ", describe(first), ": they differ on axis ", d, " (concatenating on ", a, ")");
    shape[a] += x.size(a);
  }
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  int64_t at = 0;
  for (const Tensor& x : xs) {
    out.slice(a, at, at + x.size(a)).copy_(x);
    at += x.size(a);
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t axis) {
  FGVC_CHECK(x.defined(), "split", "undefined tensor");
  const int a = normalize_axis(axis, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    FGVC_CHECK(s >= 0, "split", "negative size in ", shape_str(sizes));
    FGVC_CHECK(!__builtin_add_overflow(total, s, &total), "split", "sizes ", shape_str(sizes), " overflow");
  }
  FGVC_CHECK(total == x.size(a), "split", "sizes ", shape_str(sizes), " add up to ", total, ", but axis ", a,
             " of ", describe(x), " has ", x.size(a));
  std::vector<Tensor> out;
  int64_t at = 0;
  for (int64_t s : sizes) {
    out.push_back(x.slice(a, at, at + s));
    at += s;
  }
  return out;
}

}  // namespace kernels
}  // namespace fgvc
