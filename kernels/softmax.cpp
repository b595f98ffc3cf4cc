#include "kernels/softmax.h"

#include <cmath>

#include "fgvc/config.h"
#include "tensor/dispatch.h"

namespace fgvc {
namespace kernels {
namespace detail {

namespace {

template <class T>
void softmax_cpu_typed(const Tensor& x, bool log, const Tensor& out) {
  const int64_t cols = x.size(-1), rows = x.numel() / cols;
  const T* px = static_cast<const T*>(x.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
#pragma omp parallel for if (rows * cols > (1 << 14)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* in = px + r * cols;
    T* o = po + r * cols;
    double mx = -INFINITY;
    for (int64_t c = 0; c < cols; ++c) mx = std::fmax(mx, static_cast<double>(in[c]));
    double total = 0.0;
    for (int64_t c = 0; c < cols; ++c) total += std::exp(static_cast<double>(in[c]) - mx);
    if (log) {
      const double lse = mx + std::log(total);
      for (int64_t c = 0; c < cols; ++c) o[c] = static_cast<T>(static_cast<double>(in[c]) - lse);
    } else {
      for (int64_t c = 0; c < cols; ++c) o[c] = static_cast<T>(std::exp(static_cast<double>(in[c]) - mx) / total);
    }
  }
}

template <class T>
void softmax_backward_cpu_typed(const Tensor& grad, const Tensor& y, bool log, const Tensor& out) {
  const int64_t cols = y.size(-1), rows = y.numel() / cols;
  const T* pg = static_cast<const T*>(grad.data_ptr());
  const T* py = static_cast<const T*>(y.data_ptr());
  T* po = static_cast<T*>(out.data_ptr());
#pragma omp parallel for if (rows * cols > (1 << 14)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* g = pg + r * cols;
    const T* yy = py + r * cols;
    T* o = po + r * cols;
    double dot = 0.0;  // softmax: sum g*y; log-softmax: sum g
    for (int64_t c = 0; c < cols; ++c) dot += log ? static_cast<double>(g[c]) : static_cast<double>(g[c]) * yy[c];
    for (int64_t c = 0; c < cols; ++c)
      o[c] = log ? static_cast<T>(g[c] - std::exp(static_cast<double>(yy[c])) * dot)
                 : static_cast<T>(yy[c] * (g[c] - dot));
  }
}

}  // namespace

void softmax_cpu(const Tensor& x, bool log, const Tensor& out) {
  FGVC_DISPATCH_FLOAT(x.dtype(), "softmax", T, softmax_cpu_typed<T>(x, log, out));
}
void softmax_backward_cpu(const Tensor& grad, const Tensor& y, bool log, const Tensor& out) {
  FGVC_DISPATCH_FLOAT(y.dtype(), "softmax_backward", T, softmax_backward_cpu_typed<T>(grad, y, log, out));
}

#if !FGVC_WITH_CUDA
void softmax_cuda(const Tensor&, bool, const Tensor&) { throw Error("softmax: built without CUDA"); }
void softmax_backward_cuda(const Tensor&, const Tensor&, bool, const Tensor&) {
  throw Error("softmax_backward: built without CUDA");
}
#endif

}  // namespace detail

namespace {

void check_float(const Tensor& t, const char* op) {
  FGVC_CHECK(t.defined(), op, "undefined tensor");
  FGVC_CHECK(t.dtype() == DType::Float32 || t.dtype() == DType::Float64, op, "needs float32 or float64, got ",
             describe(t));
  FGVC_CHECK(t.dim() >= 1, op, "needs at least one axis, got ", describe(t));
}

// Runs `f` on contiguous tensors whose last axis is `axis`, then moves the axis back.
template <class F>
Tensor along_last(const Tensor& x, int64_t axis, const char* op, F&& f) {
  const int a = normalize_axis(axis, x.dim(), op);
  if (a == x.dim() - 1) return f(x.contiguous());
  return f(x.transpose(a, -1).contiguous()).transpose(a, -1).contiguous();
}

Tensor forward(const Tensor& x, int64_t axis, bool log, const char* op) {
  check_float(x, op);
  return along_last(x, axis, op, [&](const Tensor& xc) {
    Tensor out = Tensor::empty(xc.shape(), xc.dtype(), xc.device());
    if (out.numel() == 0) return out;
    if (xc.device().is_cpu()) detail::softmax_cpu(xc, log, out);
    else detail::softmax_cuda(xc, log, out);
    return out;
  });
}

Tensor backward(const Tensor& grad, const Tensor& y, int64_t axis, bool log, const char* op) {
  check_float(y, op);
  check_float(grad, op);
  FGVC_CHECK(grad.shape() == y.shape() && grad.dtype() == y.dtype() && grad.device() == y.device(), op,
             "gradient ", describe(grad), " does not match output ", describe(y));
  const int a = normalize_axis(axis, y.dim(), op);
  const bool last = a == y.dim() - 1;
  const Tensor g = last ? grad.contiguous() : grad.transpose(a, -1).contiguous();
  const Tensor yy = last ? y.contiguous() : y.transpose(a, -1).contiguous();
  Tensor out = Tensor::empty(yy.shape(), yy.dtype(), yy.device());
  if (out.numel() > 0) {
    if (y.device().is_cpu()) detail::softmax_backward_cpu(g, yy, log, out);
    else detail::softmax_backward_cuda(g, yy, log, out);
  }
  return last ? out : out.transpose(a, -1).contiguous();
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t axis) { return forward(x, axis, false, "softmax"); }
Tensor log_softmax(const Tensor& x, int64_t axis) { return forward(x, axis, true, "log_softmax"); }
Tensor softmax_backward(const Tensor& grad, const Tensor& y, int64_t axis) {
  return backward(grad, y, axis, false, "softmax_backward");
}
Tensor log_softmax_backward(const Tensor& grad, const Tensor& y, int64_t axis) {
  return backward(grad, y, axis, true, "log_softmax_backward");
}

}  // namespace kernels
}  // namespace fgvc
