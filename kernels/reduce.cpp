#include "kernels/reduce.h"

#include <algorithm>
#include <limits>
#include <omp.h>

#include "fgvc/config.h"
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

template <ReduceOp op, class T>
void reduce_rows(const T* x, int64_t outer, int64_t r, double scale, T* out) {
  using R = Reducer<op>;
  if (outer >= omp_get_max_threads() || r < (1 << 16)) {
#pragma omp parallel for if (outer * r > (1 << 15)) schedule(static)
    for (int64_t o = 0; o < outer; ++o) {
      const T* row = x + o * r;
      double acc = R::init();
      for (int64_t i = 0; i < r; ++i) acc = R::step(acc, static_cast<double>(row[i]));
      out[o] = static_cast<T>(acc * scale);
    }
    return;
  }
  // Few long rows: split each row across threads, combine the partial results in order.
  for (int64_t o = 0; o < outer; ++o) {
    const T* row = x + o * r;
    const int nt = omp_get_max_threads();
    std::vector<double> part(static_cast<size_t>(nt), R::init());
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num();
      const int64_t lo = r * t / nt, hi = r * (t + 1) / nt;
      double acc = R::init();
      for (int64_t i = lo; i < hi; ++i) acc = R::step(acc, static_cast<double>(row[i]));
      part[static_cast<size_t>(t)] = acc;
    }
    double acc = R::init();
    for (double p : part) acc = R::step(acc, p);
    out[o] = static_cast<T>(acc * scale);
  }
}

template <ReduceOp op, class T>
void reduce_middle(const T* x, int64_t outer, int64_t r, int64_t inner, double scale, T* out) {
  using R = Reducer<op>;
  constexpr int64_t kBlock = 256;  // columns per task: the accumulators stay in L1
  const int64_t col_blocks = (inner + kBlock - 1) / kBlock;
#pragma omp parallel for if (outer * r * inner > (1 << 15)) schedule(static)
  for (int64_t task = 0; task < outer * col_blocks; ++task) {
    const int64_t o = task / col_blocks, c0 = (task % col_blocks) * kBlock;
    const int64_t c1 = std::min(inner, c0 + kBlock);
    double acc[kBlock];
    for (int64_t c = c0; c < c1; ++c) acc[c - c0] = R::init();
    for (int64_t k = 0; k < r; ++k) {
      const T* row = x + (o * r + k) * inner;
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] = R::step(acc[c - c0], static_cast<double>(row[c]));
    }
    for (int64_t c = c0; c < c1; ++c) out[o * inner + c] = static_cast<T>(acc[c - c0] * scale);
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
  FGVC_DISPATCH_FLOAT(x.dtype(), "reduce", T, reduce_cpu_typed<T>(op, x, outer, r, inner, scale, out));
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
  FGVC_CHECK(x.dtype() == DType::Float32 || x.dtype() == DType::Float64, name,
             "needs float32 or float64, got ", describe(x));
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
