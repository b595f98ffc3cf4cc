// top-k ordering (ties, NaN) and concat/split round trips.
#include "test_util.h"

namespace fgvc {
namespace {

TEST(TopK, SortedDescendingWithLowerIndexOnTies) {
  const Tensor x = Tensor::from_vector(std::vector<float>{1, 5, 3, 5, 2, 0, -1, 7, 7, 7}, {2, 5});
  const kernels::TopK t = kernels::topk(x, 3);
  EXPECT_EQ(t.values.to_vector<float>(), (std::vector<float>{5, 5, 3, 7, 7, 7}));
  EXPECT_EQ(t.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 3, 2, 2, 3, 4}));
}

TEST(TopK, NaNRanksFirst) {
  const Tensor x = Tensor::from_vector(std::vector<double>{1, NAN, 3}, {3});
  const kernels::TopK t = kernels::topk(x, 2);
  EXPECT_EQ(t.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 2}));
}

TEST(TopK, MatchesFullSortOnRandomRows) {
  const Tensor x = testing::randn_t({16, 100}, 4);
  const kernels::TopK t = kernels::topk(x, 5);
  const std::vector<float> xv = x.to_vector<float>(), v = t.values.to_vector<float>();
  const std::vector<int64_t> idx = t.indices.to_vector<int64_t>();
  for (int r = 0; r < 16; ++r) {
    std::vector<float> row(xv.begin() + r * 100, xv.begin() + (r + 1) * 100);
    std::sort(row.begin(), row.end(), std::greater<float>());
    for (int j = 0; j < 5; ++j) {
      EXPECT_EQ(v[r * 5 + j], row[j]);
      EXPECT_EQ(xv[r * 100 + idx[r * 5 + j]], row[j]);
    }
  }
  EXPECT_EQ(kernels::topk(x, 0).values.shape(), (Shape{16, 0}));
}

TEST(Concat, RoundTripsWithSplitOnEveryAxis) {
  const Tensor a = testing::randn_t({2, 3, 4}, 5), b = testing::randn_t({2, 3, 4}, 6);
  for (int64_t axis = 0; axis < 3; ++axis) {
    const Tensor part = b.slice(axis, 0, 1 + axis);
    const Tensor c = kernels::concat({a, part}, axis);
    EXPECT_EQ(c.size(axis), a.size(axis) + part.size(axis));
    const std::vector<Tensor> pieces = kernels::split(c, {a.size(axis), part.size(axis)}, axis);
    EXPECT_TRUE(testing::all_close(pieces[0], a, 0, 0));
    EXPECT_TRUE(testing::all_close(pieces[1], part, 0, 0));
  }
  EXPECT_EQ(kernels::concat({Tensor::arange(2), Tensor::arange(3)}, 0).to_vector<float>(),
            (std::vector<float>{0, 1, 0, 1, 2}));
}

TEST(Concat, RejectsMismatches) {
  EXPECT_THROW(kernels::concat({}, 0), Error);
  EXPECT_THROW(kernels::concat({Tensor::zeros({2, 3}), Tensor::zeros({2, 3}, DType::Float64)}, 0), Error);
  EXPECT_THROW(kernels::split(Tensor::zeros({4}), {1, 2}, 0), Error);
}

}  // namespace
}  // namespace fgvc
