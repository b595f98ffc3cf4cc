// Shared test helpers: seeded random inputs, comparisons that fail on NaN, the float64
// reference conversion, and the CPU-vs-CUDA parity check that skips without a GPU.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "fgvc/fgvc.h"

namespace fgvc {
namespace testing {

// Seeded normal inputs (never only zeros).
inline Tensor randn_t(const Shape& shape, uint64_t seed, DType dtype = DType::Float32, Device device = Device::cpu()) {
  Generator gen(seed);
  return randn(shape, gen, dtype, device);
}
inline Tensor rand_t(const Shape& shape, uint64_t seed, double lo, double hi, DType dtype = DType::Float32) {
  Generator gen(seed);
  Tensor t = Tensor::empty(shape, dtype);
  uniform_(t, lo, hi, gen);
  return t;
}

// ||a - b|| / max(||b||, tiny) over float64 copies; infinite when either side has a NaN.
inline double rel_error(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  const std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  if (x.size() != y.size()) return INFINITY;  // (reported above; never read past the shorter)
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i]) || std::isnan(y[i])) return INFINITY;
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// Elementwise |a - b| <= atol + rtol |b|, NaN fails; reports the first bad element.
inline ::testing::AssertionResult all_close(const Tensor& a, const std::vector<double>& b, double rtol = 1e-6,
                                            double atol = 1e-7) {
  const std::vector<double> x = a.to_vector<double>();
  if (x.size() != b.size())
    return ::testing::AssertionFailure() << "size " << x.size() << " vs " << b.size();
  for (size_t i = 0; i < x.size(); ++i)
    if (!(std::fabs(x[i] - b[i]) <= atol + rtol * std::fabs(b[i])))
      return ::testing::AssertionFailure() << "element " << i << ": " << x[i] << " vs expected " << b[i];
  return ::testing::AssertionSuccess();
}
inline ::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double rtol = 1e-6, double atol = 1e-7) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  return all_close(a, b.to_vector<double>(), rtol, atol);
}

#define FGVC_REQUIRE_CUDA()                                                              \
  do {                                                                                   \
    if (!::fgvc::cuda_available())                                                       \
      GTEST_SKIP() << "no CUDA device: " << ::fgvc::cuda_unavailable_reason();           \
  } while (0)

// Runs `op` on CPU inputs and on their CUDA copies and compares every output by relative
// norm. New allocations are poisoned (NaN) during the run, so an output element a kernel
// forgot to write fails. Call after FGVC_REQUIRE_CUDA().
inline void expect_parity(const std::string& what,
                          const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& op,
                          const std::vector<Tensor>& cpu_inputs, double tol) {
  set_allocation_poison(true);
  const std::vector<Tensor> want = op(cpu_inputs);
  std::vector<Tensor> gpu_inputs;
  for (const Tensor& t : cpu_inputs) gpu_inputs.push_back(t.to(Device::cuda()));
  const std::vector<Tensor> got = op(gpu_inputs);
  set_allocation_poison(false);
  ASSERT_EQ(want.size(), got.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(got[i].device().is_cuda()) << what << ": output " << i << " is on " << got[i].device().str();
    ASSERT_EQ(got[i].shape(), want[i].shape()) << what << ": output " << i;
    ASSERT_EQ(got[i].dtype(), want[i].dtype()) << what << ": output " << i;
    const double err = rel_error(got[i].cpu(), want[i]);
    EXPECT_LT(err, tol) << what << ": output " << i << " CUDA vs CPU relative error " << err;
  }
}

}  // namespace testing
}  // namespace fgvc
