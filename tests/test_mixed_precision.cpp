// Mixed precision on the CPU, the reference for the GPU's: every kernel that autocast keeps in
// 16 bits (elementwise, reductions, batch norm, pooling, convolution, dropout) gives the
// float32 result rounded to bfloat16 or float16, bit for bit; and autocast models keep
// their activations in 16 bits, with float32 logits, parameters and gradients.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "fgvc/fgvc.h"
#include "kernels/batch_norm.h"
#include "kernels/conv2d.h"
#include "kernels/pool2d.h"
#include "test_util.h"

namespace fgvc {
namespace {

using testing::rand_t;
using testing::randn_t;
using testing::rel_error;
namespace k = kernels;

const DType kLowTypes[] = {DType::BFloat16, DType::Float16};

// The float32 values that `low` holds exactly, so that both sides start from the same inputs.
Tensor representable(const Tensor& x, DType low) { return x.to(low).to(DType::Float32); }

// `got` (16-bit) is `want` (float32) rounded to got's dtype, element for element (NaN as NaN).
::testing::AssertionResult rounds_from(const Tensor& got, const Tensor& want) {
  if (got.dtype() == DType::Float32 || want.dtype() != DType::Float32)
    return ::testing::AssertionFailure() << "got " << describe(got) << ", want " << describe(want);
  if (got.shape() != want.shape())
    return ::testing::AssertionFailure() << "shape " << shape_str(got.shape()) << " vs " << shape_str(want.shape());
  const std::vector<double> a = got.to(DType::Float32).to_vector<double>();
  const std::vector<double> b = want.to(got.dtype()).to(DType::Float32).to_vector<double>();
  for (size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i]))))
      return ::testing::AssertionFailure() << dtype_name(got.dtype()) << " element " << i << ": " << a[i]
                                           << ", float32 rounded: " << b[i];
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult same_values(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype()) return ::testing::AssertionFailure() << describe(a) << " vs " << describe(b);
  return testing::all_close(a, b, 0.0, 0.0);
}

TEST(MixedPrecision, ElementwiseOpsRoundTheFloat32Result) {
  for (DType low : kLowTypes) {
    const Tensor x = representable(randn_t({3, 4, 5, 6}, 1), low), y = representable(randn_t({3, 4, 5, 6}, 2), low);
    const Tensor channel = representable(randn_t({1, 4, 1, 1}, 3), low);
    const Tensor xl = x.to(low), yl = y.to(low), cl = channel.to(low);
    // Positive inputs too: on normal ones log, sqrt, rsqrt and pow give NaN for half the
    // elements, which would compare NaN with NaN there.
    const Tensor px = representable(testing::rand_t({3, 4, 5, 6}, 4, 0.5, 2.0), low),
                 py = representable(testing::rand_t({3, 4, 5, 6}, 5, 0.5, 2.0), low);
    for (int op = 0; op <= static_cast<int>(k::UnaryOp::Sign); ++op) {
      const auto u = static_cast<k::UnaryOp>(op);
      EXPECT_TRUE(rounds_from(k::unary(u, xl), k::unary(u, x))) << k::op_name(u);
      EXPECT_TRUE(rounds_from(k::unary(u, px.to(low)), k::unary(u, px))) << k::op_name(u) << " positive";
      // A strided view (the general path).
      EXPECT_TRUE(rounds_from(k::unary(u, xl.permute({3, 1, 2, 0})), k::unary(u, x.permute({3, 1, 2, 0}))))
          << k::op_name(u);
    }
    for (int op = 0; op <= static_cast<int>(k::BinaryOp::TanhBackward); ++op) {
      const auto b = static_cast<k::BinaryOp>(op);
      EXPECT_TRUE(rounds_from(k::binary(b, xl, yl), k::binary(b, x, y))) << k::op_name(b);
      EXPECT_TRUE(rounds_from(k::binary(b, px.to(low), py.to(low)), k::binary(b, px, py))) << k::op_name(b) << " positive";
      EXPECT_TRUE(rounds_from(k::binary(b, xl, cl), k::binary(b, x, channel))) << k::op_name(b) << " per channel";
      EXPECT_TRUE(rounds_from(k::binary(b, cl, xl), k::binary(b, channel, x))) << k::op_name(b) << " per channel";
      EXPECT_TRUE(rounds_from(k::binary(b, xl.transpose(1, 3), yl.transpose(1, 3)),
                              k::binary(b, x.transpose(1, 3), y.transpose(1, 3))))
          << k::op_name(b) << " strided";
      EXPECT_TRUE(rounds_from(k::binary(b, xl, 0.7), k::binary(b, x, 0.7))) << k::op_name(b) << " scalar";
    }
  }
}

TEST(MixedPrecision, ReductionsAccumulateInDoubleAndRoundTheFloat32Result) {
  for (DType low : kLowTypes) {
    const Tensor x = representable(randn_t({4, 6, 5, 7}, 4), low), xl = x.to(low);
    for (const std::vector<int64_t>& axes :
         std::vector<std::vector<int64_t>>{{0, 2, 3}, {2, 3}, {1}, {}, {0}, {3}}) {
      EXPECT_TRUE(rounds_from(k::sum(xl, axes), k::sum(x, axes))) << shape_str(axes);
      EXPECT_TRUE(rounds_from(k::mean(xl, axes, true), k::mean(x, axes, true))) << shape_str(axes);
      EXPECT_TRUE(rounds_from(k::max(xl, axes), k::max(x, axes))) << shape_str(axes);
    }
  }
}

// 16-bit activations with float32 parameters: y and dx are float32's rounded, and the
// statistics and the parameter gradients are float32's exactly.
TEST(MixedPrecision, BatchNormTakes16BitActivationsAndFloat32Parameters) {
  for (DType low : kLowTypes) {
    for (const Shape& shape : {Shape{4, 6, 5, 7}, Shape{8, 6}}) {
      const Tensor x = representable(k::binary(k::BinaryOp::Add, randn_t(shape, 5), 3.0), low);
      const Tensor g = representable(randn_t(shape, 6), low);
      const Tensor gamma = randn_t({6}, 7), beta = randn_t({6}, 8);
      const k::BatchNormStats want = k::batch_norm_train(x, gamma, beta, 1e-3);
      const k::BatchNormStats got = k::batch_norm_train(x.to(low), gamma, beta, 1e-3);
      EXPECT_TRUE(rounds_from(got.y, want.y));
      EXPECT_TRUE(same_values(got.mean, want.mean));
      EXPECT_TRUE(same_values(got.invstd, want.invstd));
      EXPECT_TRUE(same_values(got.var_unbiased, want.var_unbiased));
      EXPECT_TRUE(rounds_from(k::batch_norm_apply(x.to(low), gamma, beta, want.mean, want.invstd),
                              k::batch_norm_apply(x, gamma, beta, want.mean, want.invstd)));
      for (bool training : {true, false}) {
        const k::BatchNormGrads dw = k::batch_norm_backward(g, x, gamma, want.mean, want.invstd, training);
        const k::BatchNormGrads dl = k::batch_norm_backward(g.to(low), x.to(low), gamma, want.mean, want.invstd, training);
        EXPECT_TRUE(rounds_from(dl.dx, dw.dx)) << training;
        EXPECT_TRUE(same_values(dl.dgamma, dw.dgamma)) << training;
        EXPECT_TRUE(same_values(dl.dbeta, dw.dbeta)) << training;
      }
      // The parameters must be float32 beside 16-bit data.
      EXPECT_THROW(k::batch_norm_train(x.to(low), gamma.to(low), beta.to(low), 1e-3), Error);
    }
  }
}

TEST(MixedPrecision, PoolingForwardAndBackward) {
  const Pool2dGeometry geometries[] = {Pool2dGeometry::square(3, 2, 1, /*ceil_mode=*/true),
                                       Pool2dGeometry::square(3, 1, 1, false, /*count_include_pad=*/false),
                                       Pool2dGeometry::square(2, 2)};
  for (DType low : kLowTypes) {
    const Tensor x = representable(randn_t({2, 3, 9, 8}, 9), low), xl = x.to(low);
    for (const Pool2dGeometry& pg : geometries) {
      const k::MaxPoolOutput mw = k::max_pool2d(x, pg), ml = k::max_pool2d(xl, pg);
      EXPECT_TRUE(rounds_from(ml.y, mw.y));
      EXPECT_TRUE(same_values(ml.argmax, mw.argmax));
      const Tensor gy = representable(randn_t(mw.y.shape(), 10), low);
      EXPECT_TRUE(rounds_from(k::max_pool2d_backward(gy.to(low), ml.argmax, x.shape(), pg),
                              k::max_pool2d_backward(gy, mw.argmax, x.shape(), pg)));
      EXPECT_TRUE(rounds_from(k::avg_pool2d(xl, pg), k::avg_pool2d(x, pg)));
      EXPECT_TRUE(rounds_from(k::avg_pool2d_backward(gy.to(low), x.shape(), pg), k::avg_pool2d_backward(gy, x.shape(), pg)));
    }
  }
}

// As cuDNN does it: 16-bit operands, float32 sums, one rounding.
TEST(MixedPrecision, ConvolutionOnTheCpu) {
  const Conv2dGeometry g = Conv2dGeometry::symmetric(2, 1);
  for (DType low : kLowTypes) {
    const Tensor x = representable(randn_t({2, 5, 9, 9}, 11), low), w = representable(randn_t({7, 5, 3, 3}, 12), low);
    const Tensor y = k::conv2d(x, w, Tensor(), g);
    const Tensor gy = representable(randn_t(y.shape(), 13), low);
    EXPECT_TRUE(rounds_from(k::conv2d(x.to(low), w.to(low), Tensor(), g), y));
    EXPECT_TRUE(rounds_from(k::conv2d_backward_input(gy.to(low), w.to(low), x.shape(), g),
                            k::conv2d_backward_input(gy, w, x.shape(), g)));
    EXPECT_TRUE(rounds_from(k::conv2d_backward_weight(gy.to(low), x.to(low), w.shape(), g),
                            k::conv2d_backward_weight(gy, x, w.shape(), g)));
  }
}

TEST(MixedPrecision, DropoutDrawsTheSameMaskInEveryDtype) {
  const Tensor x = representable(randn_t({16, 64}, 14), DType::BFloat16);
  Generator g32(15), g16(15);
  const Tensor want = dropout(x, 0.3, true, g32), got = dropout(x.to(DType::BFloat16), 0.3, true, g16);
  EXPECT_TRUE(rounds_from(got, want));
}

// Gradients of a 16-bit network against float32's, by norm. The first layer's weight gradient
// is the worst: it sums thousands of products of rounded activations and gradients, with much
// cancellation (bfloat16 keeps 8 bits of mantissa, float16 11).
double kGradientTolerance(DType low) { return low == DType::BFloat16 ? 0.15 : 0.06; }

// A head that ran in 16 bits: the loss is taken in float32, and the gradient comes back 16-bit.
TEST(MixedPrecision, CrossEntropyTakes16BitLogitsInFloat32) {
  const Tensor logits = representable(randn_t({6, 5}, 22), DType::BFloat16);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 0}, {6});
  Tensor low = logits.to(DType::BFloat16).set_requires_grad(true), high = logits.clone().set_requires_grad(true);
  const Tensor got = cross_entropy(low, labels, 0.1), want = cross_entropy(high, labels, 0.1);
  EXPECT_EQ(got.dtype(), DType::Float32);
  EXPECT_EQ(got.item<float>(), want.item<float>());
  backward(got);
  backward(want);
  EXPECT_TRUE(rounds_from(low.grad(), high.grad()));
}

// Records the dtype of every module's output.
struct DTypeRecorder : nn::ForwardObserver {
  std::vector<std::pair<std::string, DType>> outputs;
  void before(const nn::Module&, const Tensor&) override {}
  void after(const nn::Module& m, const Tensor&, const Tensor& y) override { outputs.push_back({m.type_name(), y.dtype()}); }
};

// The ops PyTorch's autocast runs in float32 (sum, exp, log, pow) take 16-bit inputs up to
// float32 inside an AutocastGuard, differentiably (the gradient comes back in the input's
// dtype); outside one a 16-bit input gives a 16-bit result, as in PyTorch.
TEST(MixedPrecision, AutocastRunsSumExpLogAndPowInFloat32) {
  for (DType low : kLowTypes) {
    Tensor x = rand_t({64}, 21, 0.5, 2.0).to(low);
    x.set_requires_grad(true);
    {
      AutocastGuard autocast(low);
      const Tensor parts[] = {exp(x), log(x), pow(x, 3.0)};
      for (const Tensor& y : parts) EXPECT_EQ(y.dtype(), DType::Float32) << dtype_name(low);
      const Tensor total = sum(add(add(parts[0], parts[1]), parts[2]), {});
      EXPECT_EQ(total.dtype(), DType::Float32);
      EXPECT_EQ(sum(x, {}).dtype(), DType::Float32);
      backward(total);
    }
    ASSERT_EQ(x.grad().dtype(), low);
    // d/dx (e^x + log x + x^3) = e^x + 1/x + 3x^2, from the 16-bit x, rounded to 16 bits once.
    const Tensor x32 = x.detach().to(DType::Float32);
    const Tensor want = add(add(exp(x32), div(Tensor::full({64}, 1.0f), x32)), mul(mul(x32, x32), 3.0));
    EXPECT_LT(rel_error(x.grad().to(DType::Float32), want), low == DType::BFloat16 ? 4e-3 : 5e-4);
    EXPECT_EQ(exp(x.detach()).dtype(), low);  // outside autocast: the input's dtype
    EXPECT_EQ(sum(x.detach(), {}).dtype(), low);
  }
}

// Under autocast the convolutions, batch norms, activations and pooling of a network all
// produce 16-bit tensors; the logits, every parameter and every gradient stay float32, and
// the gradients agree with float32 training to 16-bit precision (eval mode: well conditioned).
TEST(MixedPrecision, AutocastKeepsActivationsIn16Bits) {
  const Tensor x = randn_t({8, 3, 32, 32}, 16);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}, {8});
  for (DType low : kLowTypes) {
    for (bool training : {false, true}) {
      manual_seed(17);
      auto reference = nn::create_model("resnet20", 10);
      manual_seed(17);
      auto model = nn::create_model("resnet20", 10);
      reference->train(training), model->train(training);
      const Tensor want = cross_entropy(reference->forward(x), labels, 0.1);
      backward(want);
      DTypeRecorder recorder;
      Tensor logits;
      {
        AutocastGuard autocast(low);
        nn::Module::set_observer(&recorder);
        logits = model->forward(x);
        nn::Module::set_observer(nullptr);
      }
      ASSERT_EQ(logits.dtype(), DType::Float32);
      const Tensor got = cross_entropy(logits, labels, 0.1);
      const double scale = low == DType::Float16 ? 1024.0 : 1.0;  // as GradScaler does for float16
      backward(mul(got, scale));
      const std::string what = std::string(dtype_name(low)) + (training ? " training" : " eval");
      int low_outputs = 0;
      for (const auto& [type, dtype] : recorder.outputs) {
        if (type == "Conv2d" || type == "BatchNorm2d" || type == "ReLU") {
          EXPECT_EQ(dtype, low) << type << " " << what;
          ++low_outputs;
        }
      }
      EXPECT_GE(low_outputs, 38) << what;  // resnet20's 19 convolutions and 19 batch norms
      EXPECT_NEAR(got.item<float>(), want.item<float>(), 2e-2 * std::abs(want.item<float>())) << what;
      const auto pr = reference->named_parameters(), pm = model->named_parameters();
      double worst = 0;
      for (size_t i = 0; i < pr.size(); ++i) {
        ASSERT_EQ(pm[i].second.dtype(), DType::Float32) << pm[i].first;
        const Tensor g = k::binary(k::BinaryOp::Mul, pm[i].second.grad(), 1.0 / scale);
        ASSERT_EQ(g.dtype(), DType::Float32) << pm[i].first;
        EXPECT_TRUE(std::isfinite(k::sum(g).item<double>())) << pm[i].first << " " << what;
        if (!training) {
          const double e = testing::rel_error(g, pr[i].second.grad());
          worst = std::max(worst, e);
          EXPECT_LT(e, kGradientTolerance(low)) << pm[i].first << " " << what;
        }
      }
      if (!training) std::printf("%s: largest relative error of a gradient %.4f\n", what.c_str(), worst);
    }
  }
}

// What a training step keeps for its backward pass (the host pool's bytes in use after the
// forward pass, every activation at batch 128 being 1 MiB or more): bfloat16 activations
// need little more than half of float32's.
TEST(MixedPrecision, AutocastHalvesTheActivationsKeptForBackward) {
  const Tensor x = randn_t({128, 3, 32, 32}, 18);
  std::vector<int64_t> classes(128);
  for (size_t i = 0; i < classes.size(); ++i) classes[i] = static_cast<int64_t>(i % 10);
  const Tensor labels = Tensor::from_vector(classes, {128});
  std::vector<double> kept;
  for (DType dtype : {DType::Float32, DType::BFloat16}) {
    manual_seed(19);
    auto model = nn::create_model("resnet20", 10);
    model->train(true);
    const size_t before = host_pool_stats().allocated;
    Tensor loss;
    {
      AutocastGuard autocast(dtype);
      loss = cross_entropy(model->forward(x), labels, 0.0);
    }
    kept.push_back(static_cast<double>(host_pool_stats().allocated - before));
    backward(loss);
  }
  std::printf("kept for backward: float32 %.1f MiB, bfloat16 %.1f MiB\n", kept[0] / 1048576, kept[1] / 1048576);
  EXPECT_GT(kept[0], 20.0 * 1048576);
  EXPECT_LT(kept[1], 0.6 * kept[0]);
}

// The other blocks of the paper's networks under autocast: squeeze-and-excitation (biased
// 1x1 convolutions on pooled 16-bit features), ResNet-v2's pre-activations and 1x1-convolution
// classifier (kept float32, like the Linear ones), Inception's concatenations and average
// pooling, the auxiliary head (trained at 299, the least it takes) and the classifier's dropout.
TEST(MixedPrecision, AutocastRunsSqueezeExcitationAndInceptionBlocks) {
  for (const auto& [name, size] : std::vector<std::pair<std::string, int64_t>>{{"seresnet50", 64}, {"resnetv2_50", 64}, {"inception_v3", 299}}) {
    const Tensor x = randn_t({2, 3, size, size}, 20);
    const Tensor labels = Tensor::from_vector(std::vector<int64_t>{1, 3}, {2});
    // The values first, in eval mode (well conditioned) against a float32 twin: the logits and
    // the whole gradient agree to bfloat16's precision, so that a block that ran wrongly in 16
    // bits (a gate on the wrong tensor, a concatenation out of order) cannot pass on dtypes alone.
    {
      manual_seed(21);
      auto twin = nn::create_model(name, 5);
      manual_seed(21);
      auto mixed = nn::create_model(name, 5);
      twin->train(false), mixed->train(false);
      const Tensor want = twin->forward(x);
      backward(cross_entropy(want, labels, 0.1));
      Tensor got;
      {
        AutocastGuard autocast(DType::BFloat16);
        got = mixed->forward(x);
      }
      backward(cross_entropy(got, labels, 0.1));
      std::vector<Tensor> mine, theirs;
      const auto pm = mixed->named_parameters(), pt = twin->named_parameters();
      for (size_t i = 0; i < pm.size(); ++i) {
        ASSERT_EQ(pm[i].second.grad().defined(), pt[i].second.grad().defined()) << name << " " << pm[i].first;
        if (!pm[i].second.grad().defined()) continue;  // the auxiliary head: not in eval mode
        mine.push_back(pm[i].second.grad().reshape({-1}));
        theirs.push_back(pt[i].second.grad().reshape({-1}));
      }
      const double logits_error = testing::rel_error(got, want);
      const double gradient_error = testing::rel_error(k::concat(mine, 0), k::concat(theirs, 0));
      std::printf("%s bfloat16 eval: logits %.2e, gradients %.2e (relative, by norm)\n", name.c_str(), logits_error,
                  gradient_error);
      // Measured: logits 4e-3 to 1.7e-2, gradients 3e-2 to 0.11 (50 layers of bfloat16); a block
      // run wrongly gives 0.5 to 0.8 (the twin's batch norms with other statistics did).
      EXPECT_LT(logits_error, 5e-2) << name;
      EXPECT_LT(gradient_error, 0.3) << name;
    }
    // Training: the blocks' activations in 16 bits, every gradient float32 and finite.
    manual_seed(21);
    auto model = nn::create_model(name, 5);
    model->train(true);
    Tensor logits;
    {
      AutocastGuard autocast(DType::BFloat16);
      logits = model->forward(x);
    }
    ASSERT_EQ(logits.dtype(), DType::Float32) << name;
    Tensor loss = cross_entropy(logits, labels, 0.1);
    if (model->has_aux_classifier()) {  // weighed in as fgvc-train does
      ASSERT_EQ(model->aux_logits().dtype(), DType::Float32) << name;
      loss = add(loss, mul(cross_entropy(model->aux_logits(), labels, 0.1), 0.4));
    }
    backward(loss);
    for (const auto& [pname, p] : model->named_parameters()) {
      ASSERT_TRUE(p.grad().defined()) << name << " " << pname;
      ASSERT_EQ(p.grad().dtype(), DType::Float32) << name << " " << pname;
      EXPECT_TRUE(std::isfinite(k::sum(p.grad()).item<double>())) << name << " " << pname;
    }
  }
}

}  // namespace
}  // namespace fgvc
