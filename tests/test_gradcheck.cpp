// Every differentiable op against float64 central differences, plus proof that the checker
// catches a wrong backward.
#include "test_util.h"

namespace fgvc {
namespace {

using Inputs = std::vector<Tensor>;

Tensor r(const Shape& s, uint64_t seed) { return testing::randn_t(s, seed, DType::Float64); }
Tensor pos(const Shape& s, uint64_t seed) { return testing::rand_t(s, seed, 0.5, 2.0, DType::Float64); }
// Normal values pushed at least 0.05 away from 0 (kinks of relu/abs).
Tensor away(const Shape& s, uint64_t seed) {
  Tensor t = r(s, seed);
  return kernels::add(t, kernels::binary(kernels::BinaryOp::Mul, kernels::unary(kernels::UnaryOp::Sign, t), 0.05));
}

void check(const char* name, const std::function<Tensor(const Inputs&)>& f, const Inputs& in) {
  const GradcheckResult res = gradcheck(f, in);
  EXPECT_TRUE(res.ok) << name << ": " << res.message;
  EXPECT_GT(res.checked, 0) << name;
}

TEST(Gradcheck, ElementwiseBinaryWithBroadcasting) {
  const Inputs in{r({3, 4}, 1), pos({4}, 2)};
  check("add", [](const Inputs& x) { return add(x[0], x[1]); }, in);
  check("sub", [](const Inputs& x) { return sub(x[0], x[1]); }, in);
  check("mul", [](const Inputs& x) { return mul(x[0], x[1]); }, in);
  check("div", [](const Inputs& x) { return div(x[0], x[1]); }, in);
  check("add 0-d", [](const Inputs& x) { return add(x[0], x[1]); }, {r({2, 3}, 3), r({}, 4)});
  check("mul [3,1]x[1,4]", [](const Inputs& x) { return mul(x[0], x[1]); }, {r({3, 1}, 5), r({1, 4}, 6)});
  // The left operand broadcast (its gradient summed over the new and the stretched axes).
  const Inputs left{r({4}, 7), pos({3, 4}, 8)}, left_kept{r({3, 1}, 9), pos({3, 4}, 10)};
  check("add left", [](const Inputs& x) { return add(x[0], x[1]); }, left);
  check("sub left", [](const Inputs& x) { return sub(x[0], x[1]); }, left);
  check("div left", [](const Inputs& x) { return div(x[0], x[1]); }, left);
  check("sub [3,1]-[3,4]", [](const Inputs& x) { return sub(x[0], x[1]); }, left_kept);
  check("div [3,1]/[3,4]", [](const Inputs& x) { return div(x[0], x[1]); }, left_kept);
}

TEST(Gradcheck, ElementwiseUnaryAndScalar) {
  check("neg", [](const Inputs& x) { return neg(x[0]); }, {r({5}, 1)});
  check("exp", [](const Inputs& x) { return exp(x[0]); }, {r({5}, 2)});
  check("log", [](const Inputs& x) { return log(x[0]); }, {pos({5}, 3)});
  check("sqrt", [](const Inputs& x) { return sqrt(x[0]); }, {pos({5}, 4)});
  check("relu", [](const Inputs& x) { return relu(x[0]); }, {away({4, 5}, 5)});
  check("sigmoid", [](const Inputs& x) { return sigmoid(x[0]); }, {r({5}, 6)});
  check("tanh", [](const Inputs& x) { return tanh(x[0]); }, {r({5}, 7)});
  check("square", [](const Inputs& x) { return square(x[0]); }, {r({5}, 8)});
  check("pow", [](const Inputs& x) { return pow(x[0], 2.5); }, {pos({5}, 9)});
  check("add_scalar", [](const Inputs& x) { return x[0] + 3.0; }, {r({5}, 10)});
  check("mul_scalar", [](const Inputs& x) { return x[0] * -1.5; }, {r({5}, 11)});
}

TEST(Gradcheck, Reductions) {
  const Inputs in{r({2, 3, 4}, 1)};
  for (const std::vector<int64_t>& axes : std::vector<std::vector<int64_t>>{{}, {0}, {1}, {2}, {0, 2}, {1, 2}}) {
    for (bool keep : {false, true}) {
      check("sum", [&](const Inputs& x) { return sum(x[0], axes, keep); }, in);
      check("mean", [&](const Inputs& x) { return mean(x[0], axes, keep); }, in);
      check("max", [&](const Inputs& x) { return max(x[0], axes, keep); }, in);
    }
  }
}

TEST(Gradcheck, SumToUndoesBroadcasting) {
  const Inputs in{r({2, 3, 4}, 2)};
  for (const Shape& to : std::vector<Shape>{{3, 4}, {3, 1}, {1, 4}, {2, 1, 4}, {4}, {}, {2, 3, 4}})
    check("sum_to", [&](const Inputs& x) { return sum_to(x[0], to); }, in);
}

TEST(Gradcheck, MaxSharesTheGradientAmongTies) {
  Tensor x = Tensor::from_vector(std::vector<double>{1.0, 3.0, 3.0, 2.0}, {4}).set_requires_grad(true);
  backward(max(x));
  EXPECT_TRUE(testing::all_close(x.grad(), {0.0, 0.5, 0.5, 0.0}));
}

TEST(Gradcheck, MatmulAllTransposesAndBatches) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const Inputs in{r(ta ? Shape{4, 3} : Shape{3, 4}, 1), r(tb ? Shape{5, 4} : Shape{4, 5}, 2)};
      check("matmul", [&](const Inputs& x) { return matmul(x[0], x[1], ta, tb); }, in);
      const Inputs bin{r(ta ? Shape{2, 4, 3} : Shape{2, 3, 4}, 3), r(tb ? Shape{2, 5, 4} : Shape{2, 4, 5}, 4)};
      check("matmul batched", [&](const Inputs& x) { return matmul(x[0], x[1], ta, tb); }, bin);
      const Inputs shared{r(ta ? Shape{2, 4, 3} : Shape{2, 3, 4}, 5), r(tb ? Shape{5, 4} : Shape{4, 5}, 6)};
      check("matmul shared", [&](const Inputs& x) { return matmul(x[0], x[1], ta, tb); }, shared);
    }
}

TEST(Gradcheck, SoftmaxFamilyAndLoss) {
  for (int64_t axis : {0, 1, -1}) {
    check("softmax", [&](const Inputs& x) { return softmax(x[0], axis); }, {r({3, 5}, 1)});
    check("log_softmax", [&](const Inputs& x) { return log_softmax(x[0], axis); }, {r({3, 5}, 2)});
  }
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{4, 0, 2}, {3});
  for (double e : {0.0, 0.1}) {
    check("cross_entropy", [&](const Inputs& x) { return cross_entropy(x[0], x[1], e); }, {r({3, 5}, 3), labels});
  }
}

TEST(Gradcheck, ShapeOps) {
  const Inputs in{r({2, 3, 4}, 1)};
  check("reshape", [](const Inputs& x) { return reshape(x[0], {4, -1}); }, in);
  check("permute", [](const Inputs& x) { return permute(x[0], {2, 0, 1}); }, in);
  check("transpose", [](const Inputs& x) { return transpose(x[0], 0, 2); }, in);
  check("slice", [](const Inputs& x) { return slice(x[0], 2, 1, 4, 2); }, in);
  check("slice neg", [](const Inputs& x) { return slice(x[0], 1, -2, 3); }, in);
  check("expand", [](const Inputs& x) { return expand(x[0], {2, 2, 3, 4}); }, in);
  check("contiguous", [](const Inputs& x) { return contiguous(transpose(x[0], 0, 1)); }, in);
  check("concat", [](const Inputs& x) { return concat({x[0], x[1]}, 1); }, {r({2, 3, 4}, 2), r({2, 1, 4}, 3)});
  check("split", [](const Inputs& x) {
    std::vector<Tensor> p = split(x[0], {1, 3}, 2);
    return add(mul(p[0], p[0]), p[1]);  // broadcast [2,3,1] + [2,3,3]
  }, in);
}

// Cases a review found missing: both operands broadcast, a middle axis expanded, pow of a
// negative base, negative axes, 0-d inputs, concat with a constant part, a three-way split
// with its middle unused, matmul of views, linear on 3-D input without a bias.
TEST(Gradcheck, BroadcastsViewsAndAxesAtTheirEdges) {
  const Inputs both{r({3, 1}, 20), pos({1, 4}, 21)};
  check("sub [3,1]-[1,4]", [](const Inputs& x) { return sub(x[0], x[1]); }, both);
  check("div [3,1]/[1,4]", [](const Inputs& x) { return div(x[0], x[1]); }, both);
  check("expand a middle axis", [](const Inputs& x) { return expand(x[0], {2, 4, 3}); }, {r({2, 1, 3}, 22)});
  check("pow of a negative base, integer exponent", [](const Inputs& x) { return pow(x[0], 3.0); },
        {kernels::unary(kernels::UnaryOp::Neg, pos({5}, 23))});
  check("pow, negative exponent", [](const Inputs& x) { return pow(x[0], -1.5); }, {pos({5}, 24)});
  for (bool keep : {false, true}) {
    check("sum axis -1", [keep](const Inputs& x) { return sum(x[0], {-1}, keep); }, {r({2, 3, 4}, 25)});
    check("mean axes -1, -3", [keep](const Inputs& x) { return mean(x[0], {-1, -3}, keep); }, {r({2, 3, 4}, 26)});
    check("max axis -2", [keep](const Inputs& x) { return max(x[0], {-2}, keep); }, {r({2, 3, 4}, 27)});
  }
  check("0-d mul and exp", [](const Inputs& x) { return exp(mul(x[0], x[1])); }, {r({}, 28), r({}, 29)});
  const Tensor constant = r({2, 2, 4}, 30);  // a part that needs no gradient
  check("concat axis -2 with a constant", [&](const Inputs& x) { return concat({x[0], constant, x[1]}, -2); },
        {r({2, 3, 4}, 31), r({2, 1, 4}, 32)});
  check("split in three, the middle unused", [](const Inputs& x) {
    const std::vector<Tensor> p = split(x[0], {1, 2, 1}, 1);
    return add(mul(p[0], p[0]), p[2]);
  }, {r({2, 4, 3}, 33)});
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      check("matmul of transposed views", [ta, tb](const Inputs& x) {
        return matmul(transpose(x[0], 0, 1), transpose(x[1], 0, 1), ta, tb);
      }, {r(ta ? Shape{3, 4} : Shape{4, 3}, 34), r(tb ? Shape{4, 5} : Shape{5, 4}, 35)});
  check("linear, 3-D input, no bias", [](const Inputs& x) { return linear(x[0], x[1], Tensor()); },
        {r({2, 3, 5}, 36), r({4, 5}, 37)});
}

// Backward rules handed a non-contiguous gradient (a transpose after the op sends one back).
TEST(Gradcheck, OpsTakeANonContiguousIncomingGradient) {
  const auto t = [](const Tensor& y) { return transpose(y, 0, y.dim() - 1); };
  check("matmul", [&](const Inputs& x) { return t(matmul(x[0], x[1])); }, {r({3, 4}, 40), r({4, 5}, 41)});
  check("softmax", [&](const Inputs& x) { return t(softmax(x[0], 1)); }, {r({3, 5}, 42)});
  check("log_softmax", [&](const Inputs& x) { return t(log_softmax(x[0], 0)); }, {r({3, 5}, 43)});
  check("conv2d", [&](const Inputs& x) { return t(conv2d(x[0], x[1], x[2], kernels::Conv2dGeometry::symmetric(1, 1))); },
        {r({2, 2, 5, 4}, 44), r({3, 2, 3, 3}, 45), r({3}, 46)});
  check("batch_norm", [&](const Inputs& x) {
    Tensor m = Tensor::zeros({3}, DType::Float64), v = Tensor::ones({3}, DType::Float64);
    return t(batch_norm(x[0], x[1], x[2], m, v, true, 0.1, 1e-3));
  }, {r({3, 3, 2, 2}, 47), r({3}, 48), r({3}, 49)});
  // Distinct values, so that no two share a window's maximum.
  const Tensor plane = kernels::add(kernels::mul(Tensor::arange(72, DType::Float64), Tensor::scalar(0.1, DType::Float64)),
                                    kernels::mul(r({72}, 50), Tensor::scalar(0.01, DType::Float64)))
                           .reshape({2, 1, 6, 6});
  const Pool2dGeometry g = Pool2dGeometry::square(3, 2, 1, true);
  check("max_pool2d", [&](const Inputs& x) { return t(max_pool2d(x[0], g)); }, {plane});
  check("avg_pool2d", [&](const Inputs& x) { return t(avg_pool2d(x[0], g)); }, {plane});
  check("to_dtype float64 -> float64 (a no-op) after mul", [&](const Inputs& x) {
    return t(to_dtype(mul(x[0], x[0]), DType::Float64));
  }, {r({3, 4}, 51)});
}

TEST(Gradcheck, CatchesAWrongBackward) {
  // y = 2x with a backward that claims dy/dx = 3.
  auto wrong = [](const Inputs& x) {
    Tensor y = kernels::binary(kernels::BinaryOp::Mul, x[0], 2.0);
    autograd::record("wrong_double", {x[0]}, {y}, [](const std::vector<Tensor>& g, const std::vector<bool>&) {
      return std::vector<Tensor>{kernels::binary(kernels::BinaryOp::Mul, g[0], 3.0)};
    });
    return y;
  };
  const GradcheckResult res = gradcheck(wrong, {r({4}, 1)});
  EXPECT_FALSE(res.ok);
  EXPECT_NE(res.message.find("analytic"), std::string::npos) << res.message;
}

TEST(Gradcheck, SkipsKinksButFailsWhenMostPointsAreKinks) {
  // relu at exactly 0 everywhere: every point is a kink.
  const GradcheckResult res = gradcheck([](const Inputs& x) { return relu(x[0]); }, {Tensor::zeros({4}, DType::Float64)});
  EXPECT_FALSE(res.ok);
  EXPECT_EQ(res.skipped, 4);
}


// A backward rule that leaves an input without any gradient (as if its rule were forgotten)
// fails the check: that input's numeric gradient is compared against zero, not skipped.
TEST(Gradcheck, CatchesAMissingGradient) {
  auto forgets_b = [](const Inputs& x) {  // y = a b with only dy/da written
    Tensor y = kernels::mul(x[0], x[1]);
    autograd::record("forgets_b", {x[0], x[1]}, {y},
                     [b = x[1].detach()](const std::vector<Tensor>& g, const std::vector<bool>&) {
                       return std::vector<Tensor>{kernels::mul(g[0], b), Tensor()};
                     });
    return y;
  };
  const GradcheckResult res = gradcheck(forgets_b, {r({4}, 1), pos({4}, 2)});
  EXPECT_FALSE(res.ok);
  EXPECT_NE(res.message.find("input 1 "), std::string::npos) << res.message;
}

}  // namespace
}  // namespace fgvc
