// sum / mean / max over any axes against float64 loops, for adjacent axes (no copy), split
// axes (permuted), all axes, keepdim, and the long-row parallel path.
#include <omp.h>

#include "test_util.h"

namespace fgvc {
namespace {

using testing::all_close;

// Reference: reduce a tensor of any shape over `axes` by brute force, in float64.
std::vector<double> ref_reduce(const std::vector<double>& x, const Shape& shape, const std::vector<int64_t>& axes,
                               bool is_max, bool average) {
  const Shape out_shape = kernels::reduced_shape(shape, axes, true);
  const int64_t n_out = numel(out_shape);
  std::vector<double> acc(static_cast<size_t>(n_out), is_max ? -INFINITY : 0.0);
  std::vector<int64_t> count(static_cast<size_t>(n_out), 0);
  const Strides os = contiguous_strides(out_shape);
  for (int64_t i = 0; i < numel(shape); ++i) {
    int64_t rem = i, o = 0;
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
      const int64_t idx = rem % shape[d];
      rem /= shape[d];
      if (out_shape[d] != 1) o += idx * os[d];
    }
    acc[o] = is_max ? std::max(acc[o], x[i]) : acc[o] + x[i];
    count[o]++;
  }
  if (average)
    for (size_t o = 0; o < acc.size(); ++o) acc[o] /= count[o];
  return acc;
}

class ReduceTest : public ::testing::TestWithParam<DType> {};

TEST_P(ReduceTest, EveryAxisSetMatchesReference) {
  const DType dt = GetParam();
  const double tol = dt == DType::Float32 ? 1e-6 : 1e-13;
  const Shape shape{2, 3, 4, 5};
  const Tensor x = testing::randn_t(shape, 11, dt);
  const std::vector<double> xv = x.to_vector<double>();
  const std::vector<std::vector<int64_t>> axis_sets = {{}, {0}, {1}, {3}, {-1}, {0, 1}, {1, 2}, {2, 3},
                                                       {0, 2}, {1, 3}, {0, 2, 3}, {0, 1, 2, 3}};
  for (const auto& axes : axis_sets) {
    const auto norm = kernels::normalize_axes(axes, 4, "test");
    for (bool keep : {false, true}) {
      const Shape want_shape = kernels::reduced_shape(shape, norm, keep);
      const Tensor s = kernels::sum(x, axes, keep), m = kernels::mean(x, axes, keep), mx = kernels::max(x, axes, keep);
      EXPECT_EQ(s.shape(), want_shape);
      EXPECT_TRUE(all_close(s, ref_reduce(xv, shape, norm, false, false), tol, tol)) << shape_str(axes);
      EXPECT_TRUE(all_close(m, ref_reduce(xv, shape, norm, false, true), tol, tol)) << shape_str(axes);
      EXPECT_TRUE(all_close(mx, ref_reduce(xv, shape, norm, true, false), 0, 0)) << shape_str(axes);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ReduceTest, ::testing::Values(DType::Float32, DType::Float64),
                         [](const auto& p) { return std::string(dtype_name(p.param)); });

TEST(Reduce, LongRowsSplitAcrossThreadsAccumulateInDouble) {
  // 2^20 values of 0.1f: a float accumulator drifts by ~1e-3 relative; double does not.
  const Tensor x = Tensor::full({1 << 20}, 0.1);
  const double want = static_cast<double>(0.1f) * (1 << 20);
  EXPECT_NEAR(kernels::sum(x).item<double>(), want, want * 1e-7);
  const Tensor two = Tensor::full({2, 1 << 19}, 0.1);
  for (double v : kernels::sum(two, {1}).to_vector<double>()) EXPECT_NEAR(v, want / 2, want * 1e-7);
}

// The chunked paths on random data against the float64 loop: rows of 65,536 and more split
// across threads (300,001: the last chunk partial), and short columns over many rows split by
// rows ([5000, 37] over axis 0); sum, mean and max, each row its own values.
TEST_P(ReduceTest, LongRowsAndTallColumnsMatchReference) {
  const DType dt = GetParam();
  const double tol = dt == DType::Float32 ? 1e-6 : 1e-12;
  const std::vector<std::pair<Shape, std::vector<int64_t>>> cases = {
      {{3, 300001}, {1}}, {{3, 300001}, {}}, {{5000, 37}, {0}}, {{2, 70001, 3}, {1}}};
  for (const auto& [shape, axes] : cases) {
    const Tensor x = testing::randn_t(shape, 31, dt);
    const std::vector<double> xv = x.to_vector<double>();
    const auto norm = kernels::normalize_axes(axes, static_cast<int64_t>(shape.size()), "test");
    const std::string what = shape_str(shape) + " over " + shape_str(axes);
    EXPECT_TRUE(all_close(kernels::sum(x, axes, true), ref_reduce(xv, shape, norm, false, false), tol, tol)) << what;
    EXPECT_TRUE(all_close(kernels::mean(x, axes, true), ref_reduce(xv, shape, norm, false, true), tol, tol)) << what;
    EXPECT_TRUE(all_close(kernels::max(x, axes, true), ref_reduce(xv, shape, norm, true, false), 0, 0)) << what;
  }
}

TEST(Reduce, StridedInputAndEmptyAxes) {
  // A transposed (strided) input, over adjacent and over split axes, against the float64 loop
  // on its values in logical order.
  const Tensor x = testing::randn_t({6, 4}, 12).transpose(0, 1);  // [4, 6], strided
  const std::vector<double> xv = x.to_vector<double>();
  EXPECT_TRUE(all_close(kernels::sum(x, {1}, true), ref_reduce(xv, {4, 6}, {1}, false, false), 1e-6, 1e-6));
  EXPECT_TRUE(all_close(kernels::mean(x, {0}, true), ref_reduce(xv, {4, 6}, {0}, false, true), 1e-6, 1e-6));
  const Tensor y = testing::randn_t({5, 4, 3}, 13).permute({2, 0, 1});  // [3, 5, 4], strided
  const std::vector<double> yv = y.to_vector<double>();
  EXPECT_TRUE(all_close(kernels::sum(y, {0, 2}, true), ref_reduce(yv, {3, 5, 4}, {0, 2}, false, false), 1e-6, 1e-6));
  EXPECT_TRUE(all_close(kernels::max(y, {0, 2}, true), ref_reduce(yv, {3, 5, 4}, {0, 2}, true, false), 0, 0));
  const Tensor e = Tensor::zeros({3, 0});
  EXPECT_TRUE(all_close(kernels::sum(e, {1}), std::vector<double>{0, 0, 0}));
  EXPECT_THROW(kernels::max(e, {1}), Error);
  EXPECT_THROW(kernels::sum(x, {0, 0}), Error);
}

TEST(Reduce, MaxPropagatesNaN) {
  const Tensor x = Tensor::from_vector(std::vector<float>{1, NAN, 3, 4}, {2, 2});
  const std::vector<float> m = kernels::max(x, {1}).to_vector<float>();
  EXPECT_TRUE(std::isnan(m[0]));
  EXPECT_EQ(m[1], 4.0f);
}

}  // namespace
}  // namespace fgvc

namespace fgvc {
namespace {

TEST(Reduce, SameBitsWhateverTheThreadCount) {
  const Tensor long_rows = testing::randn_t({3, 300000}, 21), tall = testing::randn_t({5000, 40}, 22);
  auto run = [&] {
    return std::vector<std::vector<float>>{kernels::sum(long_rows, {1}).to_vector<float>(),
                                           kernels::sum(long_rows).to_vector<float>(),
                                           kernels::sum(tall, {0}).to_vector<float>(),
                                           kernels::max(tall, {0}).to_vector<float>()};
  };
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto one = run();
  omp_set_num_threads(3);
  const auto three = run();
  omp_set_num_threads(saved);
  EXPECT_EQ(one, three);
}

}  // namespace
}  // namespace fgvc
