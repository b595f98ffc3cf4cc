// Elementwise ops against float64 references computed here with <cmath>, on contiguous,
// strided and broadcast inputs, float32 and float64.
#include <random>

#include "kernels/elementwise_ops.h"
#include "kernels/fast_divmod.h"
#include "test_util.h"

namespace fgvc {
namespace {

using kernels::BinaryOp;
using kernels::UnaryOp;
using testing::all_close;

double ref_unary(UnaryOp op, double x) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return std::log(x);
    case UnaryOp::Sqrt: return std::sqrt(x);
    case UnaryOp::Rsqrt: return 1 / std::sqrt(x);
    case UnaryOp::Abs: return std::fabs(x);
    case UnaryOp::Relu: return x > 0 ? x : 0;
    case UnaryOp::Sigmoid: return 1 / (1 + std::exp(-x));
    case UnaryOp::Tanh: return std::tanh(x);
    case UnaryOp::Square: return x * x;
    case UnaryOp::Reciprocal: return 1 / x;
    case UnaryOp::Sign: return x > 0 ? 1 : (x < 0 ? -1 : 0);
  }
  return NAN;
}

double ref_binary(BinaryOp op, double a, double b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Max: return std::max(a, b);
    case BinaryOp::Min: return std::min(a, b);
    case BinaryOp::Pow: return std::pow(a, b);
    case BinaryOp::Eq: return a == b;
    case BinaryOp::Gt: return a > b;
    case BinaryOp::ReluBackward: return b > 0 ? a : 0;
    case BinaryOp::SigmoidBackward: return a * b * (1 - b);
    case BinaryOp::TanhBackward: return a * (1 - b * b);
  }
  return NAN;
}

const UnaryOp kUnary[] = {UnaryOp::Neg, UnaryOp::Exp, UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Rsqrt, UnaryOp::Abs,
                          UnaryOp::Relu, UnaryOp::Sigmoid, UnaryOp::Tanh, UnaryOp::Square, UnaryOp::Reciprocal,
                          UnaryOp::Sign};
const BinaryOp kBinary[] = {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max,
                            BinaryOp::Min, BinaryOp::Pow, BinaryOp::Eq, BinaryOp::Gt, BinaryOp::ReluBackward,
                            BinaryOp::SigmoidBackward, BinaryOp::TanhBackward};

bool positive_domain(UnaryOp op) {
  return op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt || op == UnaryOp::Reciprocal;
}

class ElementwiseTest : public ::testing::TestWithParam<DType> {};

TEST_P(ElementwiseTest, UnaryMatchesReference) {
  const DType dt = GetParam();
  const double tol = dt == DType::Float32 ? 2e-6 : 1e-14;
  for (UnaryOp op : kUnary) {
    Tensor x = positive_domain(op) ? testing::rand_t({7, 33}, 1, 0.1, 4.0, dt) : testing::randn_t({7, 33}, 1, dt);
    if (!positive_domain(op) && op != UnaryOp::Reciprocal) {
      // Exact zeros, both signs, where 0 is in the domain (sign(0) = 0, relu's and abs's branch point).
      std::vector<double> v = x.to_vector<double>();
      for (size_t i = 0; i < v.size(); i += 7) v[i] = i % 14 == 0 ? 0.0 : -0.0;
      x = Tensor::from_vector(v, x.shape()).to(dt);
    }
    std::vector<double> want;
    for (double v : x.to_vector<double>()) want.push_back(ref_unary(op, v));
    EXPECT_TRUE(all_close(kernels::unary(op, x), want, tol, tol)) << kernels::op_name(op);
    // The same values through a transposed (strided) view.
    const Tensor xt = x.transpose(0, 1);
    EXPECT_TRUE(all_close(kernels::unary(op, xt).transpose(0, 1).contiguous(), want, tol, tol)) << kernels::op_name(op);
  }
}

TEST_P(ElementwiseTest, BinaryMatchesReference) {
  const DType dt = GetParam();
  const double tol = dt == DType::Float32 ? 2e-6 : 1e-14;
  const Tensor a = testing::rand_t({5, 9}, 2, 0.2, 3.0, dt);
  Tensor b = testing::randn_t({5, 9}, 3, dt);
  // Some equal pairs, so that Eq (and Gt's ties) see both answers.
  for (int64_t i = 0; i < 45; i += 4) b.view({45}).select(0, i).copy_(a.view({45}).select(0, i));
  const std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>();
  for (BinaryOp op : kBinary) {
    std::vector<double> want;
    for (size_t i = 0; i < av.size(); ++i) want.push_back(ref_binary(op, av[i], bv[i]));
    EXPECT_TRUE(all_close(kernels::binary(op, a, b), want, tol, tol)) << kernels::op_name(op);
    // Both operands strided (the general path), and a scalar with a strided operand.
    EXPECT_TRUE(all_close(kernels::binary(op, a.transpose(0, 1), b.transpose(0, 1)).transpose(0, 1).contiguous(), want,
                          tol, tol))
        << kernels::op_name(op) << " transposed";
    for (const double scalar : {1.5, av[5]}) {  // the second one equal to an element
      std::vector<double> want_s;
      for (double v : av) want_s.push_back(ref_binary(op, v, scalar));
      EXPECT_TRUE(all_close(kernels::binary(op, a, scalar), want_s, tol, tol)) << kernels::op_name(op) << " scalar " << scalar;
      EXPECT_TRUE(all_close(kernels::binary(op, a.transpose(0, 1), scalar).transpose(0, 1).contiguous(), want_s, tol, tol))
          << kernels::op_name(op) << " scalar " << scalar << " transposed";
    }
  }
}

TEST_P(ElementwiseTest, BroadcastingFollowsNumPy) {
  const DType dt = GetParam();
  const Tensor a = testing::randn_t({4, 1, 3}, 4, dt), b = testing::randn_t({5, 1}, 5, dt);
  const Tensor c = kernels::sub(a, b);
  ASSERT_EQ(c.shape(), (Shape{4, 5, 3}));
  const std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> want;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 5; ++j)
      for (int k = 0; k < 3; ++k) want.push_back(av[i * 3 + k] - bv[j]);
  EXPECT_TRUE(all_close(c, want, 1e-6, 1e-7));
  // Bias over channels, and a 0-d scalar tensor.
  const Tensor x = testing::randn_t({2, 3, 4}, 6, dt), bias = testing::randn_t({3, 1}, 7, dt);
  const std::vector<double> xv = x.to_vector<double>(), biv = bias.to_vector<double>();
  std::vector<double> want2;
  for (int i = 0; i < 24; ++i) want2.push_back(xv[i] + biv[(i / 4) % 3]);
  EXPECT_TRUE(all_close(kernels::add(x, bias), want2, 1e-6, 1e-7));
  const Tensor s = Tensor::scalar(2.0, dt);
  std::vector<double> want3;
  for (double v : xv) want3.push_back(v * 2);
  EXPECT_TRUE(all_close(kernels::mul(s, x), want3, 1e-6, 1e-7));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, ElementwiseTest, ::testing::Values(DType::Float32, DType::Float64),
                         [](const auto& p) { return std::string(dtype_name(p.param)); });

TEST(Elementwise, SigmoidIsStableForLargeInputs) {
  const Tensor x = Tensor::from_vector(std::vector<float>{-1000.0f, -50.0f, 0.0f, 50.0f, 1000.0f}, {5});
  const std::vector<float> y = kernels::unary(UnaryOp::Sigmoid, x).to_vector<float>();
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[2], 0.5f);
  EXPECT_EQ(y[4], 1.0f);
  for (float v : y) EXPECT_FALSE(std::isnan(v));
}

TEST(Elementwise, MaxAndMinPropagateNaN) {
  const Tensor a = Tensor::from_vector(std::vector<float>{NAN, 1.0f}, {2});
  const Tensor b = Tensor::from_vector(std::vector<float>{0.0f, NAN}, {2});
  for (float v : kernels::binary(BinaryOp::Max, a, b).to_vector<float>()) EXPECT_TRUE(std::isnan(v));
  for (float v : kernels::binary(BinaryOp::Min, a, b).to_vector<float>()) EXPECT_TRUE(std::isnan(v));
}

// A NaN from bad weights or inputs must reach the loss (the trainer stops on it, fgvc-eval
// counts it), not vanish in the first ReLU.
TEST(Elementwise, ReluPropagatesNaN) {
  const Tensor x = Tensor::from_vector(std::vector<float>{NAN, -1.0f, 0.0f, 2.0f, -INFINITY, INFINITY}, {6});
  const std::vector<float> y = kernels::relu(x).to_vector<float>();
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 0.0f);
  EXPECT_EQ(y[3], 2.0f);
  EXPECT_EQ(y[4], 0.0f);
  EXPECT_EQ(y[5], INFINITY);
}

// ReLU's backward (on its output y): the gradient passes where y > 0 or y is NaN, as PyTorch's
// threshold_backward does, so a NaN input still sends its gradient back.
TEST(Elementwise, ReluBackwardPassesTheGradientWhereTheOutputIsNaN) {
  const Tensor y = Tensor::from_vector(std::vector<float>{NAN, 0.0f, 2.0f, INFINITY}, {4});
  const Tensor g = Tensor::from_vector(std::vector<float>{5.0f, 6.0f, 7.0f, 8.0f}, {4});
  EXPECT_EQ(kernels::binary(kernels::BinaryOp::ReluBackward, g, y).to_vector<float>(),
            (std::vector<float>{5.0f, 0.0f, 7.0f, 8.0f}));
}

TEST(Elementwise, ReluPropagatesNaNOnTheGpu) {
  FGVC_REQUIRE_CUDA();
  const Tensor x = Tensor::from_vector(std::vector<float>{NAN, -1.0f, 0.0f, 2.0f, -INFINITY, INFINITY}, {6});
  const std::vector<float> y = kernels::relu(x).to_vector<float>(), g = kernels::relu(x.cuda()).cpu().to_vector<float>();
  EXPECT_TRUE(std::isnan(g[0]));
  for (int k = 1; k < 6; ++k) EXPECT_EQ(g[k], y[k]) << k;
}

TEST(Elementwise, LargeInputsUseAllThreadsAndAgree) {
  const Tensor a = testing::randn_t({1 << 17}, 8), b = testing::randn_t({1 << 17}, 9);
  const std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>();
  std::vector<double> want;
  for (size_t i = 0; i < av.size(); ++i) want.push_back(static_cast<float>(av[i] * bv[i]));
  EXPECT_TRUE(all_close(kernels::mul(a, b), want, 0, 0));
}

TEST(Elementwise, EmptyTensors) {
  const Tensor e = Tensor::zeros({0, 3});
  EXPECT_EQ(kernels::relu(e).shape(), (Shape{0, 3}));
  EXPECT_EQ(kernels::add(e, Tensor::zeros({3})).shape(), (Shape{0, 3}));
}

// The GPU kernels' index division (kernels/fast_divmod.h) runs the same code on the host:
// against `/` and `%` for small, power-of-two, odd and the largest divisors, at both ends of
// the 32-bit range and at random.
TEST(FastDivmod, AgreesWithDivisionForEveryKindOfDivisor) {
  std::vector<uint32_t> divisors;
  for (uint32_t d = 1; d <= 300; ++d) divisors.push_back(d);
  for (uint32_t d : {1023u, 1024u, 1025u, 3136u, 21609u, 65535u, 65536u, 65537u, 1000003u, (1u << 31) - 1, 1u << 31,
                     (1u << 31) + 1, 0xfffffffeu, 0xffffffffu})
    divisors.push_back(d);
  std::mt19937 rng(5);
  for (int k = 0; k < 200; ++k) divisors.push_back(rng() | 1u);
  for (uint32_t d : divisors) {
    const kernels::FastDivmod f(d);
    std::vector<uint32_t> xs = {0, 1, d - 1, d, d + 1, 2 * d - 1, 0x7fffffffu, 0x80000000u, 0xfffffffeu, 0xffffffffu};
    for (int k = 0; k < 2000; ++k) xs.push_back(rng());
    for (uint32_t x : xs) {
      ASSERT_EQ(f.div(x), x / d) << x << " / " << d;
      ASSERT_EQ(f.mod(x), x % d) << x << " % " << d;
    }
  }
}

}  // namespace
}  // namespace fgvc
