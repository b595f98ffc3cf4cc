// Optimisers against float64 references of their equations (TF's RMSProp, momentum SGD),
// TF-slim's weight decay on conv/fc weights only, the staircase schedule, clipping and EMA.
#include <cmath>
#include <functional>
#include <limits>
#include <set>

#include "autograd/autocast.h"
#include "nn/layers.h"
#include "nn/models/registry.h"
#include "optim/grad_scaler.h"
#include "optim/optimizer.h"
#include "tensor/random.h"
#include "test_util.h"

namespace fgvc {
namespace {

using optim::NamedTensors;

// A conv weight, a batch-norm weight and a bias, with fixed gradients.
struct Params {
  NamedTensors named;
  Params() {
    named = {{"conv.weight", testing::randn_t({3, 2, 1, 1}, 1).set_requires_grad(true)},
             {"bn.weight", testing::randn_t({3}, 2).set_requires_grad(true)},
             {"fc.bias", testing::randn_t({3}, 3).set_requires_grad(true)}};
  }
  void set_grads(uint64_t seed) {
    for (auto& [name, t] : named) Tensor(t).set_grad(testing::randn_t(t.shape(), seed++));
  }
};

TEST(Optim, RMSPropFollowsTensorFlow) {
  Params p;
  std::map<std::string, std::vector<double>> w, ms, mom;
  for (auto& [name, t] : p.named) {
    w[name] = t.to_vector<double>();
    ms[name] = std::vector<double>(t.numel(), 1.0);  // TF initialises ms to ones
    mom[name] = std::vector<double>(t.numel(), 0.0);
  }
  // A weight decay far above the default 4e-5, so that decaying the wrong tensors (or none)
  // moves the weights well beyond the tolerance. The learning rate changes every step (as the
  // staircase decay does): TensorFlow scales the update into the momentum, PyTorch's RMSprop
  // scales the momentum as it is applied, and only a changing rate tells the two apart.
  const double decay = 0.9, momentum = 0.9, eps = 1.0, wd = 0.05;
  const double rates[] = {0.045, 0.02, 0.005};
  optim::RMSProp opt(p.named, decay, momentum, eps, wd);
  for (int step = 0; step < 3; ++step) {
    const double lr = rates[step];
    p.set_grads(10 + step * 7);
    for (auto& [name, t] : p.named) {
      const std::vector<double> g0 = t.grad().to_vector<double>();
      for (size_t i = 0; i < g0.size(); ++i) {
        const double g = g0[i] + (name == "conv.weight" ? wd * w[name][i] : 0.0);  // decay on conv/fc weights only
        ms[name][i] = decay * ms[name][i] + (1 - decay) * g * g;
        mom[name][i] = momentum * mom[name][i] + lr * g / std::sqrt(ms[name][i] + eps);
        w[name][i] -= mom[name][i];
      }
    }
    opt.step(lr);
  }
  for (auto& [name, t] : p.named) EXPECT_TRUE(testing::all_close(t, w[name], 1e-5, 1e-7)) << name;
  EXPECT_EQ(opt.state().size(), 6u);  // ms and mom for each parameter
}

TEST(Optim, SgdMomentumAndStateRoundTrip) {
  Params p;
  std::map<std::string, std::vector<double>> w, v;
  for (auto& [name, t] : p.named) w[name] = t.to_vector<double>(), v[name] = std::vector<double>(t.numel(), 0.0);
  const double wd = 0.05;  // on conv.weight only, as TF-slim
  optim::SGD opt(p.named, 0.9, wd);
  for (int step = 0; step < 3; ++step) {
    p.set_grads(20 + step);
    for (auto& [name, t] : p.named) {
      const std::vector<double> g = t.grad().to_vector<double>();
      for (size_t i = 0; i < g.size(); ++i) {
        v[name][i] = 0.9 * v[name][i] + g[i] + (name == "conv.weight" ? wd * w[name][i] : 0.0);
        w[name][i] -= 0.1 * v[name][i];
      }
    }
    opt.step(0.1);
  }
  for (auto& [name, t] : p.named) EXPECT_TRUE(testing::all_close(t, w[name], 1e-6, 1e-7)) << name;
  // Restored slots continue exactly where they were.
  Params q;
  for (size_t i = 0; i < q.named.size(); ++i) q.named[i].second.copy_(p.named[i].second);
  optim::SGD resumed(q.named, 0.9, wd);
  resumed.load_state(opt.state());
  p.set_grads(99);
  q.set_grads(99);
  opt.step(0.1);
  resumed.step(0.1);
  for (size_t i = 0; i < q.named.size(); ++i)
    EXPECT_EQ(q.named[i].second.to_vector<float>(), p.named[i].second.to_vector<float>());
  // Another optimiser's state, or a parameter missing one of its slots, is refused whole
  // (nothing loaded) rather than restarting the slots it lacks.
  optim::RMSProp rmsprop(q.named);
  try {
    rmsprop.load_state(opt.state());
    ADD_FAILURE() << "an SGD state loaded into RMSProp";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not one this optimiser keeps (ms, mom)"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(rmsprop.state().empty());
  std::map<std::string, Tensor> half;
  for (const auto& [name, t] : q.named) half[name + ".ms"] = Tensor::ones(t.shape());
  try {
    rmsprop.load_state(half);
    ADD_FAILURE() << "a state without mom loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has 1 of its 2 slots"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(rmsprop.state().empty());
}

TEST(Optim, WeightDecayOnlyOnConvAndFcWeights) {
  EXPECT_TRUE(optim::decays("layer1.0.conv1.weight", Tensor::zeros({2, 2, 3, 3})));
  EXPECT_TRUE(optim::decays("fc.weight", Tensor::zeros({10, 4})));
  EXPECT_FALSE(optim::decays("bn1.weight", Tensor::zeros({4})));
  EXPECT_FALSE(optim::decays("fc.bias", Tensor::zeros({10})));
}

// On every model of the registry (the Inception models with their aux head): exactly the
// weights of Conv2d and Linear layers decay, found by the layers' types, not by the names
// the rule reads; batch-norm scales and shifts, and biases (the SE blocks' convolutions, the
// classifiers), do not.
TEST(Optim, WeightDecaySelectsConvAndFcWeightsOfEveryModel) {
  for (const std::string& name : nn::model_names()) {
    const std::shared_ptr<nn::Classifier> model = nn::create_model(name, 10, nn::is_inception(name));
    std::set<std::string> conv_and_fc;
    std::function<void(const nn::Module&, const std::string&)> walk = [&](const nn::Module& m, const std::string& at) {
      if (m.type_name() == "Conv2d" || m.type_name() == "Linear") conv_and_fc.insert(at + "weight");
      for (const auto& [child, sub] : m.named_children()) walk(*sub, at + child + ".");
    };
    walk(*model, "");
    int64_t decayed = 0, others = 0;
    for (const auto& [param, t] : model->named_parameters()) {
      const bool d = optim::decays(param, t);
      EXPECT_EQ(d, conv_and_fc.count(param) > 0) << name << ": " << param;
      (d ? decayed : others)++;
    }
    EXPECT_EQ(decayed, static_cast<int64_t>(conv_and_fc.size())) << name;
    EXPECT_GT(others, 0) << name;  // batch norm's scales and shifts at least
    // The classifier (a Linear layer, or timm's ResNet-v2 1x1 convolution head) decays.
    int classifiers = 0;
    for (const char* fc : {"fc.weight", "last_linear.weight", "classif.weight", "head.fc.weight", "linear.weight"})
      classifiers += static_cast<int>(conv_and_fc.count(fc));
    EXPECT_EQ(classifiers, 1) << name;
  }
}

// Hyperparameters no update can honour are refused when the optimiser is made, and a
// learning rate that is not finite when it steps (NaN would be written into every weight).
TEST(Optim, HyperparametersOutOfRangeAreErrors) {
  Tensor w = testing::randn_t({4}, 3).set_requires_grad(true);
  const optim::NamedTensors one = {{"w", w}};
  EXPECT_THROW(optim::RMSProp(one, 2.0), Error);                     // decay
  EXPECT_THROW(optim::RMSProp(one, 0.9, -1.0), Error);               // momentum
  EXPECT_THROW(optim::RMSProp(one, 0.9, 0.9, -5.0), Error);          // epsilon
  EXPECT_THROW(optim::RMSProp(one, 0.9, 0.9, 1.0, std::nan("")), Error);  // weight decay
  EXPECT_THROW(optim::SGD(one, 1.0), Error);
  EXPECT_THROW(optim::SGD({{"w", w}, {"w", w}}), Error);  // one name twice: one set of slots
  optim::SGD sgd(one, 0.0);
  w.set_grad(Tensor::ones({4}));
  const std::vector<float> before = w.to_vector<float>();
  for (const double lr : {std::nan(""), -0.1, std::numeric_limits<double>::infinity()})
    EXPECT_THROW(sgd.step(lr), Error) << lr;
  EXPECT_EQ(w.to_vector<float>(), before);
  sgd.step(0.5);
  EXPECT_FLOAT_EQ(w.to_vector<float>()[0], before[0] - 0.5f);
}

TEST(Optim, ScheduleClippingAndEma) {
  EXPECT_THROW(optim::exponential_decay(0.045, 0.94, 0, 10), Error);  // was a division by zero
  EXPECT_DOUBLE_EQ(optim::exponential_decay(0.045, 0.94, 200, 0), 0.045);
  EXPECT_DOUBLE_EQ(optim::exponential_decay(0.045, 0.94, 200, 199), 0.045);
  EXPECT_DOUBLE_EQ(optim::exponential_decay(0.045, 0.94, 200, 500), 0.045 * 0.94 * 0.94);
  // Whole steps per decay: a fractional --decay-epochs decays on its step exactly (in floating
  // point, floor((330 / 100) / 1.1) is 2 and floor((660 / 300) / 2.2) is 2, not 3).
  EXPECT_EQ(optim::decay_steps(100, 2), 200);
  EXPECT_EQ(optim::decay_steps(100, 1.1), 110);
  EXPECT_EQ(optim::decay_steps(300, 2.2), 660);
  EXPECT_EQ(optim::decay_steps(10, 1.3), 13);
  EXPECT_EQ(optim::decay_steps(3, 1.1), 3);  // 3.3 steps: TF-slim's int() keeps 3
  EXPECT_EQ(optim::decay_steps(5, 0.01), 1);  // never 0
  EXPECT_EQ(optim::decay_steps(1000, 1e300), std::numeric_limits<int64_t>::max());
  EXPECT_DOUBLE_EQ(optim::exponential_decay(0.1, 0.5, optim::decay_steps(100, 1.1), 329), 0.1 * 0.25);
  EXPECT_DOUBLE_EQ(optim::exponential_decay(0.1, 0.5, optim::decay_steps(100, 1.1), 330), 0.1 * 0.125);
  for (int64_t spe = 1; spe <= 400; ++spe)
    for (const int tenths : {3, 7, 11, 13, 22, 25, 29}) {
      const int64_t steps = optim::decay_steps(spe, tenths / 10.0);
      EXPECT_EQ(steps, std::max<int64_t>(1, spe * tenths / 10)) << spe << " x " << tenths / 10.0;
    }
  Params p;
  p.set_grads(5);
  double before = 0;
  for (auto& [n, t] : p.named)
    for (double g : t.grad().to_vector<double>()) before += g * g;
  ASSERT_GT(std::sqrt(before), 0.5);
  EXPECT_NEAR(optim::clip_grad_norm(p.named, 0.5), std::sqrt(before), 1e-6);
  double after = 0;
  for (auto& [n, t] : p.named)
    for (double g : t.grad().to_vector<double>()) after += g * g;
  // PyTorch's factor, 0.5 / (norm + 1e-6): the clipped norm is 0.5 norm / (norm + 1e-6).
  EXPECT_NEAR(std::sqrt(after), 0.5 * std::sqrt(before) / (std::sqrt(before) + 1e-6), 1e-7);
  // A norm under the limit is left as it is, bit for bit.
  const std::vector<double> kept = p.named[0].second.grad().to_vector<double>();
  EXPECT_NEAR(optim::clip_grad_norm(p.named, 1.0), 0.5, 1e-6);
  EXPECT_EQ(p.named[0].second.grad().to_vector<double>(), kept);
  // A bound that is not positive would flip (or zero) every gradient: refused, nothing touched.
  for (const double bad : {-1.0, 0.0, std::nan("")}) EXPECT_THROW(optim::clip_grad_norm(p.named, bad), Error) << bad;
  EXPECT_EQ(p.named[0].second.grad().to_vector<double>(), kept);
  // The moving average: every parameter, element by element, over steps of new random
  // weights, at the constructor's decay and at a step's own.
  optim::EMA ema(p.named, 0.9);
  std::map<std::string, std::vector<double>> want;
  for (const auto& [name, t] : p.named) want[name] = t.to_vector<double>();
  for (int step = 0; step < 4; ++step) {
    const double d = step % 2 == 0 ? 0.9 : 0.5;
    for (size_t i = 0; i < p.named.size(); ++i) {
      Tensor w = p.named[i].second;
      w.copy_(testing::randn_t(w.shape(), 40 + 10 * step + i));
      const std::vector<double> now = w.to_vector<double>();
      for (size_t j = 0; j < now.size(); ++j) want[p.named[i].first][j] = d * want[p.named[i].first][j] + (1 - d) * now[j];
    }
    if (step % 2 == 0) ema.update(p.named);
    else ema.update(p.named, 0.5);
  }
  for (const auto& [name, w] : want) {
    const std::vector<double> got = ema.shadow().at(name).to_vector<double>();
    for (size_t j = 0; j < got.size(); ++j) EXPECT_NEAR(got[j], w[j], 1e-6) << name << " " << j;
  }
}

// Finite means finite: 3e38 passes (a sum of squares would overflow), one inf or NaN fails.
TEST(Optim, AllFiniteFindsOneBadElement) {
  Tensor big = Tensor::from_vector(std::vector<float>{3e38f, -3e38f, 1.0f}, {3});
  EXPECT_TRUE(optim::all_finite({big, testing::randn_t({100}, 1)}));
  for (float bad : {INFINITY, -INFINITY, NAN}) {
    Tensor t = testing::randn_t({1000}, 2);
    std::vector<float> v = t.to_vector<float>();
    v[637] = bad;
    EXPECT_FALSE(optim::all_finite({big, Tensor::from_vector(v, {1000})})) << bad;
  }
}

// float16 loss scaling: the loss is scaled, gradients unscaled exactly (powers of two), an
// overflow skips the step and halves the scale, growth_interval clean steps double it.
TEST(Optim, GradScalerSkipsOverflowsAndAdaptsTheScale) {
  Params p;
  optim::GradScaler scaler(1024.0, 2.0, 0.5, /*growth_interval=*/3);
  const Tensor loss = Tensor::from_vector(std::vector<float>{1.5f}, {});
  EXPECT_FLOAT_EQ(scaler.scale(loss).item<float>(), 1536.0f);
  p.set_grads(5);
  std::vector<std::vector<double>> want;
  for (auto& [name, t] : p.named) want.push_back(t.grad().to_vector<double>());
  for (auto& [name, t] : p.named) Tensor(t).set_grad(kernels::binary(kernels::BinaryOp::Mul, t.grad(), 1024.0));
  ASSERT_TRUE(scaler.unscale(p.named));
  for (size_t i = 0; i < p.named.size(); ++i) EXPECT_TRUE(testing::all_close(p.named[i].second.grad(), want[i], 0, 0));
  scaler.update(true);
  EXPECT_EQ(scaler.good_steps(), 1);
  // An overflow: the step is skipped, the scale halves, the clean count restarts.
  std::vector<float> g = p.named[0].second.grad().to_vector<float>();
  g[1] = INFINITY;
  Tensor(p.named[0].second).set_grad(Tensor::from_vector(g, p.named[0].second.shape()));
  EXPECT_FALSE(scaler.unscale(p.named));
  scaler.update(false);
  EXPECT_DOUBLE_EQ(scaler.scale_value(), 512.0);
  EXPECT_EQ(scaler.skipped_steps(), 1);
  EXPECT_EQ(scaler.good_steps(), 0);
  for (int i = 0; i < 3; ++i) scaler.update(true);
  EXPECT_DOUBLE_EQ(scaler.scale_value(), 1024.0);
  scaler.load(8.0, 2, 5);
  scaler.update(true);
  EXPECT_DOUBLE_EQ(scaler.scale_value(), 16.0);
  EXPECT_EQ(scaler.skipped_steps(), 5);
}

// Autocast on the CPU with float64 as the compute dtype (the trainer uses bfloat16/float16 on
// CUDA; the plumbing is the same): convolutions run in the compute dtype and their outputs
// stay in it; the weights and their gradients stay float32 (tests/test_mixed_precision.cpp
// has the 16-bit types).
TEST(Optim, AutocastRunsConvolutionsInTheComputeDtype) {
  manual_seed(4);
  nn::Conv2d conv(3, 5, 3, 1, 1, /*bias=*/true);
  const Tensor x = testing::randn_t({2, 3, 6, 6}, 9);
  const Tensor plain = conv.forward(x);
  backward(sum(mul(plain, plain)));
  const Tensor plain_grad = conv.weight.grad().clone(), plain_bias_grad = conv.bias.grad().clone();
  conv.weight.zero_grad();
  conv.bias.zero_grad();
  Tensor y;
  {
    AutocastGuard autocast(DType::Float64);
    EXPECT_TRUE(Autocast::enabled());
    y = conv.forward(x);
  }
  EXPECT_FALSE(Autocast::enabled());
  EXPECT_EQ(y.dtype(), DType::Float64);  // the output stays in the autocast dtype, as do the layers after it
  EXPECT_LT(testing::rel_error(y, plain), 1e-6);
  backward(sum(mul(y, y)));
  EXPECT_EQ(conv.weight.grad().dtype(), DType::Float32);
  EXPECT_LT(testing::rel_error(conv.weight.grad(), plain_grad), 1e-5);
  EXPECT_LT(testing::rel_error(conv.bias.grad(), plain_bias_grad), 1e-5);
  // The cast's gradient is the gradient cast back.
  Tensor a = testing::randn_t({4}, 3).set_requires_grad(true);
  const Tensor c = testing::randn_t({4}, 6, DType::Float64);
  backward(sum(mul(to_dtype(a, DType::Float64), c)));
  EXPECT_EQ(a.grad().dtype(), DType::Float32);
  EXPECT_TRUE(testing::all_close(a.grad(), c.to_vector<double>(), 1e-7, 0));
}

}  // namespace
}  // namespace fgvc
