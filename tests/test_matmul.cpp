// matmul/gemm against a float64 triple loop: all transpose combinations, transposed views
// passed without copies, batches (with a shared right operand), alpha/beta accumulation.
#include "test_util.h"

namespace fgvc {
namespace {

using testing::all_close;

// Reference product of row-major float64 matrices with optional transposes.
std::vector<double> ref_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const std::vector<double> av = a.contiguous().to_vector<double>(), bv = b.contiguous().to_vector<double>();
  const int64_t m = ta ? a.size(1) : a.size(0), k = ta ? a.size(0) : a.size(1), n = tb ? b.size(0) : b.size(1);
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += (ta ? av[p * m + i] : av[i * k + p]) * (tb ? bv[j * k + p] : bv[p * n + j]);
      c[i * n + j] = s;
    }
  return c;
}

class MatmulTest : public ::testing::TestWithParam<DType> {};

TEST_P(MatmulTest, AllTransposeCombinations) {
  const DType dt = GetParam();
  const double tol = dt == DType::Float32 ? 1e-5 : 1e-13;
  const int64_t m = 13, k = 29, n = 7;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const Tensor a = testing::randn_t(ta ? Shape{k, m} : Shape{m, k}, 1, dt);
      const Tensor b = testing::randn_t(tb ? Shape{n, k} : Shape{k, n}, 2, dt);
      const Tensor c = kernels::matmul(a, b, ta, tb);
      EXPECT_EQ(c.shape(), (Shape{m, n}));
      EXPECT_TRUE(all_close(c, ref_matmul(a, b, ta, tb), tol, tol)) << ta << tb;
    }
}

TEST_P(MatmulTest, TransposedViewsNeedNoCopy) {
  const DType dt = GetParam();
  const double tol = dt == DType::Float32 ? 1e-5 : 1e-13;
  const Tensor a = testing::randn_t({8, 5}, 3, dt), b = testing::randn_t({6, 8}, 4, dt);
  // a^T (a view with stride 1 on its first axis) times b^T.
  const Tensor c = kernels::matmul(a.transpose(0, 1), b.transpose(0, 1));
  EXPECT_TRUE(all_close(c, ref_matmul(a, b, true, true), tol, tol));
  // A column slice: rows of stride 8 with 3 columns.
  const Tensor wide = testing::randn_t({4, 8}, 5, dt);
  const Tensor cs = kernels::matmul(wide.slice(1, 2, 5), testing::randn_t({3, 2}, 6, dt));
  EXPECT_TRUE(all_close(cs, ref_matmul(wide.slice(1, 2, 5), testing::randn_t({3, 2}, 6, dt), false, false), tol, tol));
  // No copy made: operands of several MiB (the host pool counts blocks from 1 MiB) take one
  // allocation, the product's, transposed views and a column slice alike.
  const Tensor big_a = testing::randn_t({512, 1024}, 7, dt), big_b = testing::randn_t({600, 512}, 8, dt);
  const Tensor big_w = testing::randn_t({1024, 1200}, 9, dt);
  for (int which = 0; which < 2; ++which) {
    const size_t before = host_pool_stats().num_allocations;
    const Tensor p = which == 0 ? kernels::matmul(big_a.transpose(0, 1), big_b.transpose(0, 1))  // [1024, 600]
                                : kernels::matmul(big_w.slice(1, 100, 612), big_b.transpose(0, 1));
    EXPECT_EQ(host_pool_stats().num_allocations - before, 1u) << which;
    ASSERT_EQ(p.shape(), (Shape{1024, 600})) << which;
    const std::vector<double> av = big_a.to_vector<double>(), bv = big_b.to_vector<double>(),
                              wv = big_w.to_vector<double>(), pv = p.to_vector<double>();
    for (int64_t i : {0, 517, 1023})
      for (int64_t j : {0, 299, 599}) {
        double want = 0;
        for (int64_t k = 0; k < 512; ++k) want += (which == 0 ? av[k * 1024 + i] : wv[i * 1200 + 100 + k]) * bv[j * 512 + k];
        EXPECT_NEAR(pv[i * 600 + j], want, tol * 30) << which << " " << i << " " << j;
      }
  }
}

// Batches of transposed and sliced views, and a shared right operand given transposed.
TEST_P(MatmulTest, BatchedViewsAndTransposes) {
  const DType dt = GetParam();
  const double tol = dt == DType::Float32 ? 1e-5 : 1e-13;
  const Tensor a = testing::randn_t({3, 6, 4}, 10, dt), b = testing::randn_t({3, 5, 6}, 11, dt);
  const Tensor at = a.transpose(1, 2), bt = b.transpose(1, 2);  // [3, 4, 6] and [3, 6, 5] views
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const Tensor x = ta ? a : at, y = tb ? b : bt;  // the product is always at bt
      const Tensor c = kernels::matmul(x, y, ta, tb);
      ASSERT_EQ(c.shape(), (Shape{3, 4, 5}));
      for (int64_t i = 0; i < 3; ++i)
        EXPECT_TRUE(all_close(c.select(0, i), ref_matmul(a.select(0, i), b.select(0, i), true, true), tol, tol))
            << ta << tb << " batch " << i;
    }
  const Tensor wide = testing::randn_t({3, 4, 9}, 12, dt).slice(2, 1, 7);  // rows with a gap
  const Tensor w = testing::randn_t({2, 6}, 13, dt);
  const Tensor d = kernels::matmul(wide, w, false, true);
  for (int64_t i = 0; i < 3; ++i)
    EXPECT_TRUE(all_close(d.select(0, i), ref_matmul(wide.select(0, i).contiguous(), w, false, true), tol, tol)) << i;
}

TEST_P(MatmulTest, BatchedWithSharedRightOperand) {
  const DType dt = GetParam();
  const double tol = dt == DType::Float32 ? 1e-5 : 1e-13;
  const Tensor a = testing::randn_t({3, 4, 6}, 7, dt), b = testing::randn_t({3, 6, 5}, 8, dt), w = testing::randn_t({6, 2}, 9, dt);
  const Tensor c = kernels::matmul(a, b), d = kernels::matmul(a, w);
  ASSERT_EQ(c.shape(), (Shape{3, 4, 5}));
  ASSERT_EQ(d.shape(), (Shape{3, 4, 2}));
  for (int64_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(all_close(c.select(0, i), ref_matmul(a.select(0, i), b.select(0, i), false, false), tol, tol));
    EXPECT_TRUE(all_close(d.select(0, i), ref_matmul(a.select(0, i), w, false, false), tol, tol));
  }
}

TEST_P(MatmulTest, GemmAccumulatesWithAlphaBeta) {
  const DType dt = GetParam();
  const double tol = dt == DType::Float32 ? 1e-5 : 1e-13;
  const Tensor a = testing::randn_t({5, 3}, 10, dt), b = testing::randn_t({3, 4}, 11, dt);
  Tensor c = testing::randn_t({5, 4}, 12, dt);
  const std::vector<double> c0 = c.to_vector<double>(), ab = ref_matmul(a, b, false, false);
  kernels::gemm(a, false, b, false, 2.0, 0.5, c);
  std::vector<double> want;
  for (size_t i = 0; i < ab.size(); ++i) want.push_back(2.0 * ab[i] + 0.5 * c0[i]);
  EXPECT_TRUE(all_close(c, want, tol, tol));
  // beta = 0 ignores whatever was there, NaN included.
  Tensor nan = Tensor::full({5, 4}, NAN, dt);
  kernels::gemm(a, false, b, false, 1.0, 0.0, nan);
  EXPECT_TRUE(all_close(nan, ab, tol, tol));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, MatmulTest, ::testing::Values(DType::Float32, DType::Float64),
                         [](const auto& p) { return std::string(dtype_name(p.param)); });

TEST(Matmul, EmptyInnerDimensionGivesZeros) {
  const Tensor c = kernels::matmul(Tensor::zeros({3, 0}), Tensor::zeros({0, 2}));
  EXPECT_TRUE(all_close(c, std::vector<double>(6, 0.0)));
}

TEST(Matmul, RejectsBadShapes) {
  EXPECT_THROW(kernels::matmul(Tensor::zeros({2, 3}), Tensor::zeros({2, 3})), Error);
  EXPECT_THROW(kernels::matmul(Tensor::zeros({3}), Tensor::zeros({3, 1})), Error);
  EXPECT_THROW(kernels::matmul(Tensor::zeros({2, 2, 3}), Tensor::zeros({3, 3, 1})), Error);
  Tensor out = Tensor::zeros({3, 2}).transpose(0, 1);
  EXPECT_THROW(kernels::gemm(Tensor::zeros({2, 4}), false, Tensor::zeros({4, 3}), false, 1, 0, out), Error);
}

}  // namespace
}  // namespace fgvc
