#include "tensor/shape.h"

#include <algorithm>

#include "tensor/error.h"

namespace fgvc {

int64_t numel(const Shape& shape) {
  for (int64_t s : shape) FGVC_CHECK(s >= 0, "shape", "negative size in ", shape_str(shape));
  // A side of 0 makes no elements whatever the others are, in any order of the sides.
  if (std::find(shape.begin(), shape.end(), int64_t(0)) != shape.end()) return 0;
  int64_t n = 1;
  for (int64_t s : shape) {
    // A size from a flag or a file can be anything: too many elements is an error, not a
    // product that wraps (to a small or negative count, and a short allocation).
    FGVC_CHECK(!__builtin_mul_overflow(n, s, &n), "shape", shape_str(shape), " has more than 2^63 elements");
  }
  return n;
}

Strides contiguous_strides(const Shape& shape) {
  Strides s(shape.size());
  int64_t acc = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    s[d] = acc;
    // Only a shape with no elements gets here past 2^63 (numel checks the others): any stride
    // serves it, so the product stops growing instead of overflowing.
    if (__builtin_mul_overflow(acc, shape[d] > 0 ? shape[d] : 1, &acc)) acc = INT64_MAX;
  }
  return s;
}

std::string shape_str(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

int normalize_axis(int64_t axis, int64_t rank, const char* op) {
  const int64_t a = axis < 0 ? axis + rank : axis;
  FGVC_CHECK(a >= 0 && a < rank, op, "axis ", axis, " out of range for rank ", rank);
  return static_cast<int>(a);
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    FGVC_CHECK(da == db || da == 1 || db == 1, op, "shapes ", shape_str(a), " and ", shape_str(b),
               " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

}  // namespace fgvc
