#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/ops.h"
#include "tensor/random.h"

namespace fgvc {

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& o) {
  GradcheckResult result;
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) {
    Tensor c = t.clone();
    if (t.dtype() == DType::Float64) {
      FGVC_CHECK(t.device().is_cpu(), "gradcheck", "inputs must be on the CPU, got ", describe(t));
      c.set_requires_grad(true);
    } else {
      FGVC_CHECK(!is_floating(t.dtype()), "gradcheck", "floating inputs must be float64, got ", describe(t));
    }
    xs.push_back(c);
  }

  // Analytic: L = sum(f(x) * w), one backward.
  Tensor y = f(xs);
  FGVC_CHECK(y.dtype() == DType::Float64, "gradcheck", "f must return float64, got ", describe(y));
  Generator gen(o.seed);
  const Tensor w = randn(y.shape(), gen, DType::Float64);
  backward(sum(mul(y, w)));

  auto loss = [&]() {
    NoGradGuard no_grad;
    return sum(mul(f(xs), w)).item<double>();
  };

  const double l0 = loss();  // every perturbation below is undone exactly
  for (size_t i = 0; i < xs.size(); ++i) {
    if (xs[i].dtype() != DType::Float64) continue;
    double* p = xs[i].data<double>();
    const Tensor g = xs[i].grad();
    const std::vector<double> analytic =
        g.defined() ? g.to_vector<double>() : std::vector<double>(static_cast<size_t>(xs[i].numel()), 0.0);
    for (int64_t j = 0; j < xs[i].numel(); ++j) {
      const double saved = p[j];
      p[j] = saved + o.eps;
      const double lp = loss();
      p[j] = saved - o.eps;
      const double lm = loss();
      p[j] = saved;
      const double numeric = (lp - lm) / (2 * o.eps);
      const double right = (lp - l0) / o.eps, left = (l0 - lm) / o.eps;
      if (std::fabs(right - left) > 1e-3 * (1.0 + std::fabs(numeric))) {
        ++result.skipped;
        continue;
      }
      ++result.checked;
      const double err = std::fabs(analytic[j] - numeric);
      result.max_abs_error = std::max(result.max_abs_error, err);
      if (!(err <= o.atol + o.rtol * std::fabs(numeric)) && result.ok) {  // NaN fails too
        result.ok = false;
        result.message = detail::concat("input ", i, " element ", j, ": analytic ", analytic[j], ", numeric ",
                                        numeric, " (|diff| ", err, ")");
      }
    }
  }
  const int64_t total = result.checked + result.skipped;
  if (result.ok && total > 0 && result.skipped > o.max_skipped_fraction * total) {
    result.ok = false;
    result.message = detail::concat(result.skipped, " of ", total, " points were at kinks; move the inputs away from them");
  }
  if (result.ok)
    result.message = detail::concat("checked ", result.checked, " points, skipped ", result.skipped,
                                    ", max |diff| ", result.max_abs_error);
  return result;
}

}  // namespace fgvc
