// Gradient checking against float64 central differences (caffe's GradientChecker, in
// spirit). The function's output y is projected onto fixed random weights w, L = sum(y * w),
// so one backward checks the whole Jacobian against 2 evaluations per input element.
// Points where the left and right one-sided differences disagree (a kink of relu, max, abs
// within eps) are skipped and counted, not compared.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace fgvc {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
  uint64_t seed = 1234;              // for the projection weights
  double max_skipped_fraction = 0.1; // more kinks than this fails the check
};

struct GradcheckResult {
  bool ok = true;
  std::string message;  // the first mismatch, or a summary
  int64_t checked = 0;
  int64_t skipped = 0;
  double max_abs_error = 0.0;
};

// `inputs` must be float64 CPU tensors to be differentiated (int64 ones, such as labels, are
// passed through untouched). `f` must be built from differentiable ops.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace fgvc
