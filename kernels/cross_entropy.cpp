#include "kernels/cross_entropy.h"

#include <cmath>

#include "fgvc/config.h"
#include "tensor/dispatch.h"

namespace fgvc {
namespace kernels {
namespace detail {

namespace {

template <class T>
int64_t forward_typed(const Tensor& logits, const Tensor& labels, double e, const CrossEntropyOutput& out,
                      int64_t* bad_row) {
  const int64_t n = logits.size(0), c = logits.size(1);
  const T* x = static_cast<const T*>(logits.data_ptr());
  const int64_t* y = static_cast<const int64_t*>(labels.data_ptr());
  T* loss = static_cast<T*>(out.loss.data_ptr());
  double* lse_out = static_cast<double*>(out.lse.data_ptr());
  int64_t bad = 0, first_bad = n;
#pragma omp parallel for if (n * c > (1 << 14)) schedule(static) reduction(+ : bad) reduction(min : first_bad)
  for (int64_t i = 0; i < n; ++i) {
    const T* row = x + i * c;
    if (y[i] < 0 || y[i] >= c) {
      ++bad;
      first_bad = std::min(first_bad, i);
      loss[i] = static_cast<T>(NAN);
      lse_out[i] = NAN;
      continue;
    }
    double mx = -INFINITY, total = 0.0, sum = 0.0;
    for (int64_t j = 0; j < c; ++j) mx = std::fmax(mx, static_cast<double>(row[j]));
    for (int64_t j = 0; j < c; ++j) {
      total += std::exp(static_cast<double>(row[j]) - mx);
      sum += row[j];
    }
    const double lse = mx + std::log(total);
    lse_out[i] = lse;
    // Without smoothing the sum is not read: 0 x (-inf), from a -inf logit, would be NaN.
    const double smoothing_term = e == 0 ? 0.0 : e / static_cast<double>(c) * sum;
    loss[i] = static_cast<T>(lse - (1.0 - e) * static_cast<double>(row[y[i]]) - smoothing_term);
  }
  *bad_row = first_bad;
  return bad;
}

template <class T>
void backward_typed(const Tensor& grad_loss, const Tensor& logits, const Tensor& labels, const Tensor& lse, double e,
                    const Tensor& out) {
  const int64_t n = logits.size(0), c = logits.size(1);
  const T* x = static_cast<const T*>(logits.data_ptr());
  const T* g = static_cast<const T*>(grad_loss.data_ptr());
  const double* l = static_cast<const double*>(lse.data_ptr());
  const int64_t* y = static_cast<const int64_t*>(labels.data_ptr());
  T* o = static_cast<T*>(out.data_ptr());
  const double off = e / static_cast<double>(c);
#pragma omp parallel for if (n * c > (1 << 14)) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < c; ++j) {
      const double p = std::exp(static_cast<double>(x[i * c + j]) - l[i]);
      const double target = (j == y[i] ? 1.0 - e : 0.0) + off;
      o[i * c + j] = static_cast<T>(static_cast<double>(g[i]) * (p - target));
    }
  }
}

}  // namespace

int64_t cross_entropy_cpu(const Tensor& logits, const Tensor& labels, double smoothing, const CrossEntropyOutput& out,
                          int64_t* bad_row) {
  int64_t bad = 0;
  FGVC_DISPATCH_FLOAT(logits.dtype(), "cross_entropy", T,
                      bad = forward_typed<T>(logits, labels, smoothing, out, bad_row));
  return bad;
}

void cross_entropy_backward_cpu(const Tensor& grad_loss, const Tensor& logits, const Tensor& labels,
                                const Tensor& lse, double smoothing, const Tensor& out) {
  FGVC_DISPATCH_FLOAT(logits.dtype(), "cross_entropy_backward", T,
                      backward_typed<T>(grad_loss, logits, labels, lse, smoothing, out));
}

#if !FGVC_WITH_CUDA
int64_t cross_entropy_cuda(const Tensor&, const Tensor&, double, const CrossEntropyOutput&, int64_t*) {
  throw Error("cross_entropy: built without CUDA");
}
void cross_entropy_backward_cuda(const Tensor&, const Tensor&, const Tensor&, const Tensor&, double, const Tensor&) {
  throw Error("cross_entropy_backward: built without CUDA");
}
#endif

}  // namespace detail

namespace {
void check_inputs(const Tensor& logits, const Tensor& labels, double smoothing, const char* op) {
  FGVC_CHECK(logits.defined() && labels.defined(), op, "undefined tensor");
  FGVC_CHECK(logits.dim() == 2 && (logits.dtype() == DType::Float32 || logits.dtype() == DType::Float64), op,
             "logits must be float32/float64 [N, C], got ", describe(logits));
  FGVC_CHECK(logits.size(1) > 0, op, "logits have no classes: ", describe(logits));
  FGVC_CHECK(labels.dim() == 1 && labels.dtype() == DType::Int64 && labels.size(0) == logits.size(0), op,
             "labels must be int64 [N] with N = ", logits.size(0), ", got ", describe(labels));
  FGVC_CHECK(labels.device() == logits.device(), op, "device mismatch: logits ", describe(logits), ", labels ",
             describe(labels));
  FGVC_CHECK(smoothing >= 0.0 && smoothing <= 1.0, op, "label smoothing must be in [0, 1], got ", smoothing);
}
}  // namespace

CrossEntropyOutput cross_entropy(const Tensor& logits, const Tensor& labels, double smoothing) {
  check_inputs(logits, labels, smoothing, "cross_entropy");
  const Tensor x = logits.contiguous(), y = labels.contiguous();
  CrossEntropyOutput out{Tensor::empty({x.size(0)}, x.dtype(), x.device()),
                         Tensor::empty({x.size(0)}, DType::Float64, x.device())};
  if (x.size(0) == 0) return out;
  int64_t bad_row = 0;
  const int64_t bad = x.device().is_cpu() ? detail::cross_entropy_cpu(x, y, smoothing, out, &bad_row)
                                          : detail::cross_entropy_cuda(x, y, smoothing, out, &bad_row);
  FGVC_CHECK(bad == 0, "cross_entropy", bad, " label(s) outside [0, ", x.size(1), "), the first in row ", bad_row,
             " (label ", y.select(0, bad_row).item<int64_t>(), ")");
  return out;
}

Tensor cross_entropy_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& labels, const Tensor& lse,
                              double smoothing) {
  check_inputs(logits, labels, smoothing, "cross_entropy_backward");
  FGVC_CHECK(grad_loss.shape() == Shape{logits.size(0)} && grad_loss.dtype() == logits.dtype() &&
                 grad_loss.device() == logits.device(),
             "cross_entropy_backward", "gradient ", describe(grad_loss), " does not match ", describe(logits));
  FGVC_CHECK(lse.shape() == Shape{logits.size(0)} && lse.dtype() == DType::Float64 && lse.device() == logits.device(),
             "cross_entropy_backward", "logsumexp ", describe(lse), " is not cross_entropy's float64 [N] for ",
             describe(logits));
  const Tensor x = logits.contiguous();
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu())
    detail::cross_entropy_backward_cpu(grad_loss.contiguous(), x, labels.contiguous(), lse.contiguous(), smoothing, out);
  else
    detail::cross_entropy_backward_cuda(grad_loss.contiguous(), x, labels.contiguous(), lse.contiguous(), smoothing, out);
  return out;
}

}  // namespace kernels
}  // namespace fgvc
