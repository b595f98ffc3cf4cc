#include "kernels/reduce.h"

#include <algorithm>
#include <limits>

#include "fgvc/config.h"
#include "tensor/cast.h"
#include "tensor/dispatch.h"

namespace fgvc {
namespace kernels {

std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, int64_t rank, const char* op) {
  std::vector<int64_t> out;
  if (axes.empty()) {
    for (int64_t d = 0; d < rank; ++d) out.push_back(d);
    return out;
  }
  for (int64_t a : axes) out.push_back(normalize_axis(a, rank, op));
  std::sort(out.begin(), out.end());
  FGVC_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, "repeated axis in ", shape_str(axes));
  return out;
}

Shape reduced_shape(const Shape& shape, const std::vector<int64_t>& axes, bool keepdim) {
  Shape out;
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d) {
    const bool reduced = std::find(axes.begin(), axes.end(), d) != axes.end();
    if (!reduced) out.push_back(shape[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

namespace detail {

namespace {

template <ReduceOp op> struct Reducer;
template <> struct Reducer<ReduceOp::Sum> {
  static double init() { return 0.0; }
  static double step(double acc, double v) { return acc + v; }
};
template <> struct Reducer<ReduceOp::Max> {
  static double init() { return -std::numeric_limits<double>::infinity(); }
  static double step(double acc, double v) { return (v > acc || v != v) ? v : acc; }  // NaN wins
};

// One row: kLanes independent accumulators (the adds overlap instead of waiting on one
// another), combined in a fixed order, so the result does not depend on threads.
constexpr int kLanes = 8;

template <ReduceOp op, class T>
double reduce_span(const T* x, int64_t n) {
  using R = Reducer<op>;
  double lane[kLanes];
  for (double& l : lane) l = R::init();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k) lane[k] = R::step(lane[k], to_double(x[i + k]));
  for (; i < n; ++i) lane[0] = R::step(lane[0], to_double(x[i]));
  double acc = lane[0];
  for (int k = 1; k < kLanes; ++k) acc = R::step(acc, lane[k]);
  return acc;
}

// The summation order depends on the shape only, never on the thread count, so a result is
// the same on every machine.
template <ReduceOp op, class T>
void reduce_rows(const T* x, int64_t outer, int64_t r, double scale, T* out) {
  using R = Reducer<op>;
  constexpr int64_t kChunk = 1 << 14;
  if (r < 4 * kChunk) {
#pragma omp parallel for if (outer * r > (1 << 15)) schedule(static)
    for (int64_t o = 0; o < outer; ++o) out[o] = from_double<T>(reduce_span<op>(x + o * r, r) * scale);
    return;
  }
  // Long rows: fixed chunks of every row in parallel, then each row's chunks in order.
  const int64_t chunks = (r + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(outer * chunks));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < outer * chunks; ++t) {
    const int64_t o = t / chunks, c = t % chunks;
    part[t] = reduce_span<op>(x + o * r + c * kChunk, std::min(kChunk, r - c * kChunk));
  }
  for (int64_t o = 0; o < outer; ++o) {
    double acc = part[o * chunks];
    for (int64_t c = 1; c < chunks; ++c) acc = R::step(acc, part[o * chunks + c]);
    out[o] = from_double<T>(acc * scale);
  }
}

template <ReduceOp op, class T>
void reduce_middle(const T* x, int64_t outer, int64_t r, int64_t inner, double scale, T* out) {
  using R = Reducer<op>;
  constexpr int64_t kBlock = 256;  // columns per task: the accumulators stay in L1
  const int64_t col_blocks = (inner + kBlock - 1) / kBlock;
  // Few column blocks (a bias gradient: sum over N of [N, C]): split the reduced axis into
  // fixed row chunks too, and combine the chunks in order afterwards.
  const int64_t row_chunks = outer * col_blocks >= 16 || r < 64 ? 1 : std::min<int64_t>(r / 32, 16);
  std::vector<double> partial(static_cast<size_t>(outer * row_chunks * inner));
#pragma omp parallel for if (outer * r * inner > (1 << 15)) schedule(static)
  for (int64_t task = 0; task < outer * col_blocks * row_chunks; ++task) {
    const int64_t chunk = task % row_chunks, o = task / row_chunks / col_blocks;
    const int64_t c0 = (task / row_chunks % col_blocks) * kBlock, c1 = std::min(inner, c0 + kBlock);
    const int64_t k0 = r * chunk / row_chunks, k1 = r * (chunk + 1) / row_chunks;
    double acc[kBlock];
    for (int64_t c = c0; c < c1; ++c) acc[c - c0] = R::init();
    for (int64_t k = k0; k < k1; ++k) {
      const T* row = x + (o * r + k) * inner;
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] = R::step(acc[c - c0], to_double(row[c]));
    }
    for (int64_t c = c0; c < c1; ++c) partial[(o * row_chunks + chunk) * inner + c] = acc[c - c0];
  }
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < inner; ++c) {
      double acc = partial[(o * row_chunks) * inner + c];
      for (int64_t chunk = 1; chunk < row_chunks; ++chunk)
        acc = R::step(acc, partial[(o * row_chunks + chunk) * inner + c]);
      out[o * inner + c] = from_double<T>(acc * scale);
    }
}

template <class T>
void reduce_cpu_typed(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner, double scale,
                      const Tensor& out) {
  const T* px = static_cast<const T*>(x.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
  if (op == ReduceOp::Sum) {
    if (inner == 1) reduce_rows<ReduceOp::Sum>(px, outer, r, scale, po);
    else reduce_middle<ReduceOp::Sum>(px, outer, r, inner, scale, po);
  } else {
    if (inner == 1) reduce_rows<ReduceOp::Max>(px, outer, r, scale, po);
    else reduce_middle<ReduceOp::Max>(px, outer, r, inner, scale, po);
  }
}

}  // namespace

void reduce_cpu(ReduceOp op, const Tensor& x, int64_t outer, int64_t r, int64_t inner, double scale, const Tensor& out) {
  FGVC_DISPATCH_FLOATING(x.dtype(), "reduce", T, reduce_cpu_typed<T>(op, x, outer, r, inner, scale, out));
}

#if !FGVC_WITH_CUDA
void reduce_cuda(ReduceOp, const Tensor&, int64_t, int64_t, int64_t, double, const Tensor&) {
  throw Error("reduce: built without CUDA");
}
#endif

}  // namespace detail

namespace {

Tensor reduce(ReduceOp op, bool average, const Tensor& x, const std::vector<int64_t>& axes_in, bool keepdim,
              const char* name) {
  FGVC_CHECK(x.defined(), name, "undefined tensor");
  FGVC_CHECK(is_floating(x.dtype()), name, "needs a floating dtype, got ", describe(x));
  const std::vector<int64_t> axes = normalize_axes(axes_in, x.dim(), name);
  const Shape out_shape = reduced_shape(x.shape(), axes, keepdim);
  int64_t r = 1;
  for (int64_t a : axes) r *= x.shape()[a];
  FGVC_CHECK(r > 0 || op == ReduceOp::Sum, name, "cannot take the max over an empty axis of ", describe(x));

  // Adjacent axes: [outer, r, inner] over the contiguous input. Otherwise move them last.
  Tensor src = x;
  int64_t outer = 1, inner = 1;
  const bool adjacent = axes.empty() || axes.back() - axes.front() + 1 == static_cast<int64_t>(axes.size());
  if (adjacent) {
    src = x.contiguous();
    if (!axes.empty()) {
      for (int64_t d = 0; d < axes.front(); ++d) outer *= x.shape()[d];
      for (int64_t d = axes.back() + 1; d < x.dim(); ++d) inner *= x.shape()[d];
    }
  } else {
    std::vector<int64_t> perm;
    for (int64_t d = 0; d < x.dim(); ++d)
      if (std::find(axes.begin(), axes.end(), d) == axes.end()) perm.push_back(d);
    for (int64_t a : axes) perm.push_back(a);
    src = x.permute(perm).contiguous();
    outer = x.numel() / std::max<int64_t>(r, 1);
  }
  if (r == 0) outer = numel(out_shape);
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  if (out.numel() == 0) return out;
  if (r == 0) return out.fill_(average ? std::numeric_limits<double>::quiet_NaN() : 0.0);
  const double scale = average ? 1.0 / static_cast<double>(r) : 1.0;
  if (x.device().is_cpu()) detail::reduce_cpu(op, src, outer, r, inner, scale, out);
  else detail::reduce_cuda(op, src, outer, r, inner, scale, out);
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  return reduce(ReduceOp::Sum, false, x, axes, keepdim, "sum");
}
Tensor mean(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  return reduce(ReduceOp::Sum, true, x, axes, keepdim, "mean");
}
Tensor max(const Tensor& x, const std::vector<int64_t>& axes, bool keepdim) {
  return reduce(ReduceOp::Max, false, x, axes, keepdim, "max");
}

}  // namespace kernels
}  // namespace fgvc
