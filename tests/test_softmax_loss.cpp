// softmax / log_softmax and the fused label-smoothed cross-entropy against float64
// formulas, including extreme logits where a naive formula overflows.
#include "test_util.h"

namespace fgvc {
namespace {

using testing::all_close;

std::vector<double> ref_log_softmax_rows(const std::vector<double>& x, int64_t cols) {
  std::vector<double> out(x.size());
  for (size_t r = 0; r < x.size() / cols; ++r) {
    double mx = -INFINITY, s = 0;
    for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, x[r * cols + c]);
    for (int64_t c = 0; c < cols; ++c) s += std::exp(x[r * cols + c] - mx);
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = x[r * cols + c] - mx - std::log(s);
  }
  return out;
}

TEST(Softmax, MatchesReferenceOnEveryAxis) {
  for (DType dt : {DType::Float32, DType::Float64}) {
    const double tol = dt == DType::Float32 ? 2e-6 : 1e-13;
    const Tensor x = testing::randn_t({3, 4, 5}, 1, dt);
    for (int64_t axis : {0, 1, 2, -1}) {
      const int a = normalize_axis(axis, 3, "test");
      const Tensor moved = x.transpose(a, 2).contiguous();
      const std::vector<double> ls = ref_log_softmax_rows(moved.to_vector<double>(), moved.size(2));
      std::vector<double> sm;
      for (double v : ls) sm.push_back(std::exp(v));
      const Tensor want_ls = Tensor::from_vector(ls, moved.shape()).transpose(a, 2).contiguous();
      const Tensor want_sm = Tensor::from_vector(sm, moved.shape()).transpose(a, 2).contiguous();
      EXPECT_TRUE(all_close(kernels::log_softmax(x, axis), want_ls, tol, tol)) << axis;
      EXPECT_TRUE(all_close(kernels::softmax(x, axis), want_sm, tol, tol)) << axis;
    }
  }
}

TEST(Softmax, StableForHugeLogits) {
  const Tensor x = Tensor::from_vector(std::vector<float>{1000.0f, 0.0f, -1000.0f, 1e30f}, {1, 4});
  const std::vector<float> p = kernels::softmax(x).to_vector<float>();
  EXPECT_EQ(p[3], 1.0f);
  EXPECT_EQ(p[0], 0.0f);
  const std::vector<float> lp = kernels::log_softmax(x.slice(1, 0, 3)).to_vector<float>();
  EXPECT_NEAR(lp[0], 0.0f, 1e-6);
  EXPECT_NEAR(lp[1], -1000.0f, 1e-3);
}

// Rows whose every logit lies far below zero (where exp underflows) or far above it: shifting a
// row changes nothing. (A row maximum started at 0 rather than -inf gave -inf and NaN here.)
TEST(Softmax, ShiftInvariantFarFromZero) {
  const Tensor low = Tensor::from_vector(std::vector<float>{-1000.0f, -1001.0f}, {1, 2});
  const std::vector<float> lp = kernels::log_softmax(low).to_vector<float>();
  EXPECT_NEAR(lp[0], -std::log1p(std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(lp[1], -1.0 - std::log1p(std::exp(-1.0)), 1e-6);
  const std::vector<float> p = kernels::softmax(low).to_vector<float>();
  EXPECT_NEAR(p[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(p[1], 1.0 / (1.0 + std::exp(1.0)), 1e-6);
  const Tensor x = testing::randn_t({4, 7}, 3, DType::Float64);
  for (const double shift : {-2000.0, 2000.0})
    EXPECT_TRUE(all_close(kernels::log_softmax(add(x, shift)), kernels::log_softmax(x), 1e-12, 1e-12)) << shift;
}

TEST(CrossEntropy, MatchesFormulaWithAndWithoutSmoothing) {
  const int64_t n = 6, c = 10;
  for (DType dt : {DType::Float32, DType::Float64}) {
    const double tol = dt == DType::Float32 ? 2e-6 : 1e-13;
    const Tensor x = testing::randn_t({n, c}, 2, dt);
    const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 3, 9, 3, 5, 1}, {n});
    const std::vector<double> ls = ref_log_softmax_rows(x.to_vector<double>(), c);
    const std::vector<int64_t> yv = y.to_vector<int64_t>();
    for (double e : {0.0, 0.1, 1.0}) {
      std::vector<double> want, lse;
      for (int64_t i = 0; i < n; ++i) {
        double l = 0;
        for (int64_t j = 0; j < c; ++j) l -= ((j == yv[i] ? 1 - e : 0) + e / c) * ls[i * c + j];
        want.push_back(l);
      }
      const kernels::CrossEntropyOutput out = kernels::cross_entropy(x, y, e);
      EXPECT_TRUE(all_close(out.loss, want, tol, tol)) << e;
      // Backward: softmax - target.
      const Tensor g = testing::randn_t({n}, 3, dt);
      const std::vector<double> gv = g.to_vector<double>();
      std::vector<double> want_dx;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < c; ++j)
          want_dx.push_back(gv[i] * (std::exp(ls[i * c + j]) - ((j == yv[i] ? 1 - e : 0) + e / c)));
      EXPECT_TRUE(all_close(kernels::cross_entropy_backward(g, x, y, out.lse, e), want_dx, tol, tol)) << e;
    }
  }
}

// Logits far from 0 (a classifier that has drifted, or a large temperature): the gradient's
// softmax must be as exact as at small logits. A float32 logsumexp would be off by up to half a
// float32 step of |logsumexp| (about 3e-5 at 1000), which moves every probability by that much
// relative, so gradient rows stop summing to zero.
TEST(CrossEntropy, GradientExactAtLargeLogits) {
  const int64_t n = 8, c = 50;
  for (double shift : {1000.0, -3000.0, 20000.0}) {
    // Spread of a few units around the shift, so that several classes carry probability.
    std::vector<float> raw = testing::randn_t({n, c}, 7, DType::Float32).to_vector<float>();
    for (float& v : raw) v = static_cast<float>(shift + 2.0 * v);
    const Tensor x = Tensor::from_vector(raw, {n, c});
    const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 7, 49, 3, 3, 21, 11, 30}, {n});
    const std::vector<double> xv = x.to_vector<double>();
    const std::vector<int64_t> yv = y.to_vector<int64_t>();
    const std::vector<double> ls = ref_log_softmax_rows(xv, c);
    const double e = 0.1;
    std::vector<double> want;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < c; ++j) want.push_back(std::exp(ls[i * c + j]) - ((j == yv[i] ? 1 - e : 0) + e / c));
    const kernels::CrossEntropyOutput out = kernels::cross_entropy(x, y, e);
    const Tensor g = Tensor::ones({n}, DType::Float32);
    const Tensor dx = kernels::cross_entropy_backward(g, x, y, out.lse, e);
    EXPECT_TRUE(all_close(dx, want, 1e-6, 1e-7)) << shift;
    const std::vector<float> dv = dx.to_vector<float>();
    for (int64_t i = 0; i < n; ++i) {  // softmax and the target each sum to 1
      double row = 0;
      for (int64_t j = 0; j < c; ++j) row += dv[i * c + j];
      EXPECT_NEAR(row, 0.0, 2e-6) << shift << " row " << i;
    }
  }
}

TEST(CrossEntropy, FiniteForExtremeLogits) {
  const Tensor x = Tensor::from_vector(std::vector<float>{1e4f, -1e4f, 0.0f, 0.0f, 1e4f, -1e4f}, {2, 3});
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1}, {2});
  const std::vector<float> l = kernels::cross_entropy(x, y, 0.1).loss.to_vector<float>();
  EXPECT_NEAR(l[0], 0.1 / 3 * (1e4 + 2e4), 1.0);  // smoothing mass on the far logits
  EXPECT_TRUE(std::isfinite(l[1]));
  EXPECT_THROW(kernels::cross_entropy(x, y, 1.5), Error);
}

// A logit of -inf (a masked class) is a probability of 0: without smoothing the loss is finite,
// log(1 + e) for logits (0, -inf, 1) and label 0, as PyTorch's; with smoothing it is +inf.
TEST(CrossEntropy, MinusInfinityLogitWithoutSmoothing) {
  const Tensor x = Tensor::from_vector(std::vector<float>{0.0f, -INFINITY, 1.0f}, {1, 3});
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0}, {1});
  EXPECT_NEAR(kernels::cross_entropy(x, y, 0.0).loss.to_vector<float>()[0], std::log1p(std::exp(1.0)), 1e-6);
  EXPECT_EQ(kernels::cross_entropy(x, y, 0.1).loss.to_vector<float>()[0], INFINITY);
}

}  // namespace
}  // namespace fgvc
