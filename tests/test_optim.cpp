// Optimisers against float64 references of their equations (TF's RMSProp, momentum SGD),
// TF-slim's weight decay on conv/fc weights only, the staircase schedule, clipping and EMA.
#include <cmath>

#include "optim/optimizer.h"
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
  const double decay = 0.9, momentum = 0.9, eps = 1.0, lr = 0.045, wd = 4e-5;
  optim::RMSProp opt(p.named, decay, momentum, eps, wd);
  for (int step = 0; step < 3; ++step) {
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
  std::vector<double> w = p.named[0].second.to_vector<double>(), v(w.size(), 0.0);
  optim::SGD opt(p.named, 0.9, 0.0);
  for (int step = 0; step < 3; ++step) {
    p.set_grads(20 + step);
    const std::vector<double> g = p.named[0].second.grad().to_vector<double>();
    for (size_t i = 0; i < w.size(); ++i) {
      v[i] = 0.9 * v[i] + g[i];
      w[i] -= 0.1 * v[i];
    }
    opt.step(0.1);
  }
  EXPECT_TRUE(testing::all_close(p.named[0].second, w, 1e-6, 1e-7));
  // Restored slots continue exactly where they were.
  Params q;
  for (size_t i = 0; i < q.named.size(); ++i) q.named[i].second.copy_(p.named[i].second);
  optim::SGD resumed(q.named, 0.9, 0.0);
  resumed.load_state(opt.state());
  p.set_grads(99);
  q.set_grads(99);
  opt.step(0.1);
  resumed.step(0.1);
  for (size_t i = 0; i < q.named.size(); ++i)
    EXPECT_EQ(q.named[i].second.to_vector<float>(), p.named[i].second.to_vector<float>());
}

TEST(Optim, WeightDecayOnlyOnConvAndFcWeights) {
  EXPECT_TRUE(optim::decays("layer1.0.conv1.weight", Tensor::zeros({2, 2, 3, 3})));
  EXPECT_TRUE(optim::decays("fc.weight", Tensor::zeros({10, 4})));
  EXPECT_FALSE(optim::decays("bn1.weight", Tensor::zeros({4})));
  EXPECT_FALSE(optim::decays("fc.bias", Tensor::zeros({10})));
}

TEST(Optim, ScheduleClippingAndEma) {
  EXPECT_DOUBLE_EQ(optim::exponential_decay(0.045, 0.94, 2, 0), 0.045);
  EXPECT_DOUBLE_EQ(optim::exponential_decay(0.045, 0.94, 2, 1.99), 0.045);
  EXPECT_DOUBLE_EQ(optim::exponential_decay(0.045, 0.94, 2, 5), 0.045 * 0.94 * 0.94);
  Params p;
  p.set_grads(5);
  double before = 0;
  for (auto& [n, t] : p.named)
    for (double g : t.grad().to_vector<double>()) before += g * g;
  EXPECT_NEAR(optim::clip_grad_norm(p.named, 0.5), std::sqrt(before), 1e-6);
  double after = 0;
  for (auto& [n, t] : p.named)
    for (double g : t.grad().to_vector<double>()) after += g * g;
  EXPECT_NEAR(std::sqrt(after), 0.5, 1e-6);
  optim::EMA ema(p.named, 0.9);
  const std::vector<double> start = p.named[1].second.to_vector<double>();
  p.named[1].second.fill_(1.0);
  ema.update(p.named);
  const std::vector<double> s = ema.shadow().at("bn.weight").to_vector<double>();
  for (size_t i = 0; i < s.size(); ++i) EXPECT_NEAR(s[i], 0.9 * start[i] + 0.1, 1e-6);
}

}  // namespace
}  // namespace fgvc
