// Network layers: values against direct float64 loops, gradient checks, batch-norm running
// statistics, modules (names, state_dict, strict loading) and the ResNet parameter counts.
#include <omp.h>

#include <array>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "kernels/batch_norm.h"
#include "kernels/conv2d.h"
#include "kernels/pool2d_window.h"
#include "kernels/winograd_conv.h"
#include "nn/models/inception_resnet_v2.h"
#include "nn/models/inception_v3.h"
#include "nn/models/registry.h"
#include "nn/models/resnet_cifar.h"
#include "nn/models/resnet.h"
#include "tensor/safetensors.h"
#include "test_util.h"

namespace fgvc {
namespace {

using kernels::Conv2dGeometry;
using kernels::Pool2dGeometry;
using Inputs = std::vector<Tensor>;

Tensor r64(const Shape& s, uint64_t seed) { return testing::randn_t(s, seed, DType::Float64); }

uint32_t bits_of(float f) {  // compares -0 and +0 apart
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// Direct convolution in float64.
std::vector<double> ref_conv(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dGeometry& g) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), O = w.size(0), KH = w.size(2), KW = w.size(3);
  const int64_t Ho = g.out_size(H, KH, true), Wo = g.out_size(W, KW, false);
  const std::vector<double> xv = x.to_vector<double>(), wv = w.to_vector<double>();
  const std::vector<double> bv = b.defined() ? b.to_vector<double>() : std::vector<double>(O, 0.0);
  std::vector<double> out;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oy = 0; oy < Ho; ++oy)
        for (int64_t ox = 0; ox < Wo; ++ox) {
          double s = bv[o];
          for (int64_t c = 0; c < C; ++c)
            for (int64_t i = 0; i < KH; ++i)
              for (int64_t j = 0; j < KW; ++j) {
                const int64_t iy = oy * g.stride_h - g.pad_top + i * g.dilation_h;
                const int64_t ix = ox * g.stride_w - g.pad_left + j * g.dilation_w;
                if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                  s += xv[((n * C + c) * H + iy) * W + ix] * wv[((o * C + c) * KH + i) * KW + j];
              }
          out.push_back(s);
        }
  return out;
}

const std::vector<Conv2dGeometry> kGeometries = {
    Conv2dGeometry::symmetric(1, 0), Conv2dGeometry::symmetric(1, 1), Conv2dGeometry::symmetric(2, 1),
    {2, 2, 0, 1, 0, 1, 1, 1},  // TF SAME with stride 2: the extra row/column at the end
    {1, 2, 1, 0, 2, 1, 1, 1}, Conv2dGeometry::symmetric(1, 2, 2),
    // stride 3, dilated columns, padding wider than a kernel column's reach on both sides: whole
    // window columns in the padding at the first and the last outputs (im2col's copied ranges)
    {3, 3, 4, 1, 4, 5, 1, 2}};

TEST(Conv2d, MatchesDirectConvolution) {
  for (const Conv2dGeometry& g : kGeometries)
    for (int k : {1, 3}) {
      const Tensor x = r64({2, 3, 9, 8}, 1), w = r64({4, 3, k, k}, 2), b = r64({4}, 3);
      EXPECT_TRUE(testing::all_close(kernels::conv2d(x, w, b, g), ref_conv(x, w, b, g), 1e-12, 1e-12))
          << "stride " << g.stride_h << " pad " << g.pad_top << g.pad_bottom << g.pad_left << g.pad_right << " k " << k;
      const Tensor y32 = kernels::conv2d(x.to(DType::Float32), w.to(DType::Float32), Tensor(), g);
      EXPECT_LT(testing::rel_error(y32, Tensor::from_vector(ref_conv(x, w, Tensor(), g), y32.shape())), 1e-5);
    }
}

// The output against the direct sum, and both backward passes by the adjoint identities
// <conv(x, w), g> = <x, dx(g)> = <w, dw(g, x)>, in float64; float32 against float64.
void check_adjoints(const Tensor& x, const Tensor& w, const Tensor& y, const Conv2dGeometry& g) {
  EXPECT_TRUE(testing::all_close(y, ref_conv(x, w, Tensor(), g), 1e-12, 1e-12));
  const Tensor gy = r64(y.shape(), 23);
  const Tensor dx = kernels::conv2d_backward_input(gy, w, x.shape(), g);
  const Tensor dw = kernels::conv2d_backward_weight(gy, x, w.shape(), g);
  const auto dot = [](const Tensor& a, const Tensor& b) {
    return kernels::sum(kernels::binary(kernels::BinaryOp::Mul, a, b)).item<double>();
  };
  const double yg = dot(y, gy);
  EXPECT_NEAR(dot(x, dx), yg, 1e-10 * std::abs(yg));
  EXPECT_NEAR(dot(w, dw), yg, 1e-10 * std::abs(yg));
  EXPECT_LT(testing::rel_error(kernels::conv2d(x.to(DType::Float32), w.to(DType::Float32), Tensor(), g), y), 1e-5);
}

// The CPU's Winograd path off for a scope, and on again however the scope ends (a failed
// ASSERT returns early: the tests after it must not run without Winograd unseen).
struct WinogradOff {
  WinogradOff() { kernels::set_cpu_winograd(false); }
  ~WinogradOff() { kernels::set_cpu_winograd(true); }
  WinogradOff(const WinogradOff&) = delete;
  WinogradOff& operator=(const WinogradOff&) = delete;
};

// Images large enough that im2col runs in several tiles of output rows (the last one partial).
TEST(Conv2d, TiledColumnsMatchDirectConvolutionAndAdjoints) {
  {
    const WinogradOff off;  // the 3x3 stride-1 case would take Winograd's path instead
    for (const Conv2dGeometry& g : {Conv2dGeometry::symmetric(1, 1), Conv2dGeometry{2, 2, 0, 1, 0, 1, 1, 1}}) {
      const Tensor x = r64({2, 64, 80, 81}, 21), w = r64({3, 64, 3, 3}, 22);
      const int64_t rows = kernels::detail::conv2d_tile_rows(x.shape(), w.shape(), g);
      const Tensor y = kernels::conv2d(x, w, Tensor(), g);
      ASSERT_LT(rows, y.size(2) / 2) << "the test should cover several tiles";
      ASSERT_NE(y.size(2) % rows, 0) << "and a partial last one";
      check_adjoints(x, w, y, g);
    }
  }
  // A 1x1 convolution on a large plane: its weight gradient is one GEMM per image on the input.
  const Tensor x = r64({3, 8, 30, 31}, 24), w = r64({5, 8, 1, 1}, 25);
  const Tensor y = kernels::conv2d(x, w, Tensor(), Conv2dGeometry());
  check_adjoints(x, w, y, Conv2dGeometry());
}

// Winograd's F(2x2, 3x3) (kernels/winograd_conv.h) takes the 3x3 stride-1 convolutions with
// padding up to 2: against the direct sum in float64 and by the adjoint identities, and in
// float32 against im2col + GEMM, for each pass. The shapes put odd sizes (a last tile half
// outside), asymmetric padding, blocks of tiles that cross tile rows and images, and a
// channel count whose blocks are small (200 x 200: 22 tiles).
TEST(Conv2d, WinogradMatchesDirectConvolutionAndIm2col) {
  struct Case {
    Shape x, w;
    Conv2dGeometry g;
  };
  const std::vector<Case> cases = {
      {{5, 16, 9, 7}, {16, 16, 3, 3}, Conv2dGeometry::symmetric(1, 1)},
      {{3, 6, 8, 11}, {10, 6, 3, 3}, {1, 1, 0, 2, 2, 0, 1, 1}},
      {{2, 5, 6, 5}, {7, 5, 3, 3}, Conv2dGeometry::symmetric(1, 0)},
      {{1, 3, 4, 4}, {2, 3, 3, 3}, Conv2dGeometry::symmetric(1, 2)},
      {{2, 200, 11, 13}, {200, 200, 3, 3}, {1, 1, 1, 2, 0, 1, 1, 1}},
      // 2,048 tiles: the weight gradient sums several runs of blocks (their order fixed).
      {{8, 16, 32, 32}, {16, 16, 3, 3}, Conv2dGeometry::symmetric(1, 1)},
  };
  uint64_t seed = 40;
  for (const Case& c : cases) {
    ASSERT_TRUE(kernels::detail::winograd_applies(c.x, c.w, c.g, DType::Float32)) << shape_str(c.w);
    const Tensor x = r64(c.x, ++seed), w = r64(c.w, ++seed);
    const Tensor y = kernels::conv2d(x, w, Tensor(), c.g);
    check_adjoints(x, w, y, c.g);
    // float32: each pass against im2col's.
    const Tensor x32 = x.to(DType::Float32), w32 = w.to(DType::Float32), gy = testing::randn_t(y.shape(), ++seed);
    const Tensor wy = kernels::conv2d(x32, w32, Tensor(), c.g);
    const Tensor wdx = kernels::conv2d_backward_input(gy, w32, c.x, c.g);
    const Tensor wdw = kernels::conv2d_backward_weight(gy, x32, c.w, c.g);
    Tensor iy, idx, idw;
    {
      const WinogradOff off;
      iy = kernels::conv2d(x32, w32, Tensor(), c.g);
      idx = kernels::conv2d_backward_input(gy, w32, c.x, c.g);
      idw = kernels::conv2d_backward_weight(gy, x32, c.w, c.g);
    }
    EXPECT_LT(testing::rel_error(wy, iy), 2e-6) << shape_str(c.w);
    EXPECT_LT(testing::rel_error(wdx, idx), 2e-6) << shape_str(c.w);
    EXPECT_LT(testing::rel_error(wdw, idw), 2e-6) << shape_str(c.w);
    // The same bits on one thread as on three (set explicitly: the default may be one).
    const int threads = omp_get_max_threads();
    std::vector<std::vector<float>> by_threads[2];
    for (const int t : {1, 3}) {
      omp_set_num_threads(t);
      by_threads[t == 3] = {kernels::conv2d(x32, w32, Tensor(), c.g).to_vector<float>(),
                            kernels::conv2d_backward_input(gy, w32, c.x, c.g).to_vector<float>(),
                            kernels::conv2d_backward_weight(gy, x32, c.w, c.g).to_vector<float>()};
    }
    omp_set_num_threads(threads);
    EXPECT_EQ(by_threads[0], by_threads[1]) << shape_str(c.w);
  }
  // Every small plane (1 to 5 pixels a side) with every padding from 0 to 2 on each side
  // that leaves an output: single tiles, half tiles, tiles all padding but one pixel.
  for (int64_t h = 1; h <= 5; ++h)
    for (int64_t wd = 1; wd <= 5; ++wd)
      for (int pads = 0; pads < 81; ++pads) {
        const Conv2dGeometry g{1, 1, pads % 3, pads / 3 % 3, pads / 9 % 3, pads / 27, 1, 1};
        if (g.out_size(h, 3, true) == 0 || g.out_size(wd, 3, false) == 0) continue;
        const Tensor x = r64({2, 3, h, wd}, ++seed), w = r64({2, 3, 3, 3}, ++seed);
        ASSERT_TRUE(kernels::detail::winograd_applies(x.shape(), w.shape(), g, DType::Float64));
        const Tensor y = kernels::conv2d(x, w, Tensor(), g);
        ASSERT_TRUE(testing::all_close(y, ref_conv(x, w, Tensor(), g), 1e-12, 1e-12)) << h << "x" << wd << " pads " << pads;
        const Tensor gy = r64(y.shape(), ++seed);
        const double yg = kernels::sum(kernels::binary(kernels::BinaryOp::Mul, y, gy)).item<double>();
        const Tensor dx = kernels::conv2d_backward_input(gy, w, x.shape(), g);
        const Tensor dw = kernels::conv2d_backward_weight(gy, x, w.shape(), g);
        ASSERT_NEAR(kernels::sum(kernels::binary(kernels::BinaryOp::Mul, x, dx)).item<double>(), yg, 1e-10 * (1 + std::abs(yg)))
            << h << "x" << wd << " pads " << pads;
        ASSERT_NEAR(kernels::sum(kernels::binary(kernels::BinaryOp::Mul, w, dw)).item<double>(), yg, 1e-10 * (1 + std::abs(yg)))
            << h << "x" << wd << " pads " << pads;
      }
  // Not for: stride 2, dilation, a 5x5 or 1x3 kernel, padding 3, 16-bit data, and 384 x 384
  // channels (fewer than 8 tiles a block).
  const Shape x{1, 8, 10, 10}, w{8, 8, 3, 3};
  EXPECT_FALSE(kernels::detail::winograd_applies(x, w, Conv2dGeometry::symmetric(2, 1), DType::Float32));
  EXPECT_FALSE(kernels::detail::winograd_applies(x, w, Conv2dGeometry::symmetric(1, 2, 2), DType::Float32));
  EXPECT_FALSE(kernels::detail::winograd_applies(x, {8, 8, 5, 5}, Conv2dGeometry::symmetric(1, 1), DType::Float32));
  EXPECT_FALSE(kernels::detail::winograd_applies(x, {8, 8, 1, 3}, Conv2dGeometry::symmetric(1, 1), DType::Float32));
  EXPECT_FALSE(kernels::detail::winograd_applies(x, w, Conv2dGeometry::symmetric(1, 3), DType::Float32));
  EXPECT_FALSE(kernels::detail::winograd_applies(x, w, Conv2dGeometry::symmetric(1, 1), DType::BFloat16));
  EXPECT_FALSE(
      kernels::detail::winograd_applies({1, 384, 8, 8}, {384, 384, 3, 3}, Conv2dGeometry::symmetric(1, 1), DType::Float32));
  // An empty batch: empty outputs and zero weight gradients (an empty sum), as im2col gives.
  const Tensor none = r64({0, 4, 6, 6}, 70), w4 = r64({5, 4, 3, 3}, 71);
  const Tensor y0 = kernels::conv2d(none, w4, Tensor(), Conv2dGeometry::symmetric(1, 1));
  EXPECT_EQ(y0.shape(), (Shape{0, 5, 6, 6}));
  EXPECT_EQ(kernels::conv2d_backward_input(y0, w4, none.shape(), Conv2dGeometry::symmetric(1, 1)).shape(), none.shape());
  const Tensor dw0 = kernels::conv2d_backward_weight(y0, none, w4.shape(), Conv2dGeometry::symmetric(1, 1));
  EXPECT_TRUE(testing::all_close(dw0, std::vector<double>(5 * 4 * 9, 0.0)));
  EXPECT_FALSE(kernels::detail::winograd_applies({2, 4, 6, 6}, {0, 4, 3, 3}, Conv2dGeometry::symmetric(1, 1), DType::Float32));
}

// A window wider than the padded input is an error (as in PyTorch), not a 1 x 1 output made
// up of missing rows: C++'s division truncates a negative span to 0.
TEST(Conv2d, WindowWiderThanTheInputIsAnError) {
  const Tensor x = r64({1, 2, 2, 2}, 9);
  EXPECT_THROW(kernels::conv2d(x, r64({3, 2, 3, 3}, 10), Tensor(), Conv2dGeometry::symmetric(2, 0)), Error);
  EXPECT_THROW(kernels::conv2d(x, r64({3, 2, 3, 1}, 10), Tensor(), Conv2dGeometry::symmetric(1, 0)), Error);
  EXPECT_THROW(kernels::conv2d(x, r64({3, 2, 2, 2}, 10), Tensor(), Conv2dGeometry::symmetric(1, 0, 2)), Error);
  EXPECT_EQ(Conv2dGeometry::symmetric(2, 0).out_size(2, 3, true), 0);
  EXPECT_EQ(Conv2dGeometry::symmetric(2, 0).out_size(3, 3, true), 1);  // exactly one window
  EXPECT_EQ(kernels::conv2d(x, r64({3, 2, 3, 3}, 10), Tensor(), Conv2dGeometry::symmetric(2, 1)).shape(),
            (Shape{1, 3, 1, 1}));  // padding makes room
}

// No input channels: the output is the bias (zeros without one) and every gradient is empty
// or zero, on both the im2col and the Winograd paths (no division by the zero column count).
TEST(Conv2d, NoInputChannels) {
  for (const int k : {3, 5}) {
    const Tensor x = Tensor::zeros({2, 0, 6, 6}, DType::Float64), w = Tensor::zeros({4, 0, k, k}, DType::Float64);
    const Conv2dGeometry g = Conv2dGeometry::symmetric(1, k / 2);
    const Tensor y = kernels::conv2d(x, w, Tensor(), g);
    ASSERT_EQ(y.shape(), (Shape{2, 4, 6, 6}));
    EXPECT_EQ(kernels::max(kernels::unary(kernels::UnaryOp::Abs, y), {}).item<double>(), 0.0);
    // With a bias, every output pixel is its channel's bias (no input adds anything).
    const Tensor bias = r64({4}, 5);
    const std::vector<double> yb = kernels::conv2d(x, w, bias, g).to_vector<double>(), bv = bias.to_vector<double>();
    ASSERT_EQ(yb.size(), 2u * 4 * 36);
    for (size_t at = 0; at < yb.size(); ++at) EXPECT_EQ(yb[at], bv[(at / 36) % 4]) << at;
    const Tensor gy = r64({2, 4, 6, 6}, 3);
    EXPECT_EQ(kernels::conv2d_backward_input(gy, w, x.shape(), g).shape(), x.shape());
    EXPECT_EQ(kernels::conv2d_backward_weight(gy, x, w.shape(), g).shape(), w.shape());
  }
}

TEST(Conv2d, GradientCheck) {
  for (const Conv2dGeometry& g : kGeometries) {
    const GradcheckResult res = gradcheck(
        [&](const Inputs& in) { return conv2d(in[0], in[1], in[2], g); }, {r64({2, 2, 6, 5}, 4), r64({3, 2, 3, 3}, 5), r64({3}, 6)});
    EXPECT_TRUE(res.ok) << res.message;
  }
  const GradcheckResult pointwise = gradcheck([](const Inputs& in) { return conv2d(in[0], in[1], Tensor(), Conv2dGeometry()); },
                                              {r64({2, 3, 4, 4}, 7), r64({5, 3, 1, 1}, 8)});
  EXPECT_TRUE(pointwise.ok) << pointwise.message;
}

TEST(BatchNorm, TrainingNormalisesAndUpdatesRunningStatistics) {
  const Tensor x = kernels::add(r64({4, 3, 5, 5}, 1), Tensor::scalar(2.0, DType::Float64));
  Tensor gamma = Tensor::from_vector(std::vector<double>{1.0, 2.0, 0.5}, {3});
  Tensor beta = Tensor::from_vector(std::vector<double>{0.0, -1.0, 3.0}, {3});
  Tensor rm = Tensor::zeros({3}, DType::Float64), rv = Tensor::ones({3}, DType::Float64);
  const Tensor y = batch_norm(x, gamma, beta, rm, rv, true, 0.1, 1e-5);
  // Per channel: y = gamma (x - mean) / sqrt(var + eps) + beta over the batch's statistics
  // (biased variance), every element; the running statistics move 0.1 of the way to the
  // batch's (unbiased variance).
  const std::vector<double> xv = x.to_vector<double>(), yv = y.to_vector<double>(), g = gamma.to_vector<double>(),
                            bt = beta.to_vector<double>();
  const std::vector<double> rmv = rm.to_vector<double>(), rvv = rv.to_vector<double>();
  std::vector<double> mean(3, 0.0), var(3, 0.0);
  for (int c = 0; c < 3; ++c) {
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 25; ++i) mean[c] += xv[n * 75 + c * 25 + i];
    mean[c] /= 100;
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 25; ++i) var[c] += (xv[n * 75 + c * 25 + i] - mean[c]) * (xv[n * 75 + c * 25 + i] - mean[c]);
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 25; ++i) {
        const size_t at = n * 75 + c * 25 + i;
        EXPECT_NEAR(yv[at], g[c] * (xv[at] - mean[c]) / std::sqrt(var[c] / 100 + 1e-5) + bt[c], 1e-12) << c;
      }
    EXPECT_NEAR(rmv[c], 0.1 * mean[c], 1e-12) << c;
    EXPECT_NEAR(rvv[c], 0.9 + 0.1 * var[c] / 99, 1e-12) << c;  // unbiased
  }
  // Evaluation uses the running statistics, with gamma and beta, in every channel.
  const std::vector<double> ye = batch_norm(x, gamma, beta, rm, rv, false, 0.1, 1e-5).to_vector<double>();
  for (int c = 0; c < 3; ++c)
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 25; ++i) {
        const size_t at = n * 75 + c * 25 + i;
        EXPECT_NEAR(ye[at], g[c] * (xv[at] - rmv[c]) / std::sqrt(rvv[c] + 1e-5) + bt[c], 1e-12) << c;
      }
}

TEST(BatchNorm, CountsTrainingBatchesOnly) {
  nn::BatchNorm2d bn(3, 1e-3, 0.1);
  const Tensor x = r64({2, 3, 4, 4}, 17).to(DType::Float32);
  bn.forward(x);
  bn.forward(x);
  EXPECT_EQ(bn.num_batches_tracked.item<int64_t>(), 2);
  bn.eval();
  bn.forward(x);
  EXPECT_EQ(bn.num_batches_tracked.item<int64_t>(), 2);
  EXPECT_THROW(kernels::increment(Tensor::zeros({})), Error);  // float32: not a counter
  EXPECT_THROW(kernels::increment(Tensor::zeros({2}, DType::Int64)), Error);
}

TEST(BatchNorm, PerChannelOperandsAreChecked) {
  const Tensor x = r64({2, 3, 4, 4}, 14), c3 = r64({3}, 15), c4 = r64({4}, 16);
  const auto message = [](auto f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] { kernels::batch_norm_train(x, c3, c4, 1e-3); }).find("beta"), std::string::npos);
  EXPECT_NE(message([&] { kernels::batch_norm_apply(x, c3, c3, c4, c3); }).find("mean"), std::string::npos);
  EXPECT_NE(message([&] { kernels::batch_norm_apply(x, c3, c3, c3, c3.to(DType::Float32)); }).find("invstd"),
            std::string::npos);
  EXPECT_NE(message([&] { kernels::batch_norm_backward(x, x, c3, c3, c4, true); }).find("invstd"), std::string::npos);
  EXPECT_NE(message([&] { kernels::batch_norm_backward(x.to(DType::Float32), x, c3, c3, c3, true); }).find("gradient"),
            std::string::npos);
}

TEST(BatchNorm, GradientCheckTrainingAndEval) {
  for (bool training : {true, false}) {
    Tensor rm = r64({3}, 9), rv = kernels::add(kernels::unary(kernels::UnaryOp::Square, r64({3}, 10)), Tensor::scalar(0.5, DType::Float64));
    const GradcheckResult res = gradcheck(
        [&](const Inputs& in) {
          Tensor m = rm.clone(), v = rv.clone();
          return batch_norm(in[0], in[1], in[2], m, v, training, 0.1, 1e-3);
        },
        {r64({3, 3, 2, 2}, 11), r64({3}, 12), r64({3}, 13)});
    EXPECT_TRUE(res.ok) << (training ? "train: " : "eval: ") << res.message;
    // [N, C] input (batch norm after a linear layer): statistics over the batch alone.
    const GradcheckResult flat = gradcheck(
        [&](const Inputs& in) {
          Tensor m = rm.clone(), v = rv.clone();
          return batch_norm(in[0], in[1], in[2], m, v, training, 0.1, 1e-3);
        },
        {r64({6, 3}, 14), r64({3}, 15), r64({3}, 16)});
    EXPECT_TRUE(flat.ok) << (training ? "train [N, C]: " : "eval [N, C]: ") << flat.message;
  }
}

TEST(Pooling, ValuesMatchPyTorchRules) {
  const Tensor x6 = Tensor::arange(36, DType::Float64).reshape({1, 1, 6, 6});
  // 3x3 stride 2 on 6x6: floor mode gives 2x2, ceil mode adds the partial window at 4..5.
  EXPECT_EQ(kernels::max_pool2d(x6, Pool2dGeometry::square(3, 2)).y.to_vector<double>(),
            (std::vector<double>{14, 16, 26, 28}));
  const Tensor mx = kernels::max_pool2d(x6, Pool2dGeometry::square(3, 2, 0, true)).y;
  EXPECT_EQ(mx.shape(), (Shape{1, 1, 3, 3}));
  EXPECT_EQ(mx.to_vector<double>(), (std::vector<double>{14, 16, 17, 26, 28, 29, 32, 34, 35}));
  const Tensor x = Tensor::arange(25, DType::Float64).reshape({1, 1, 5, 5});
  // 3x3 stride 1 pad 1, with and without the padding in the divisor.
  const Tensor in_pad = kernels::avg_pool2d(x, Pool2dGeometry::square(3, 1, 1, false, true));
  const Tensor ex_pad = kernels::avg_pool2d(x, Pool2dGeometry::square(3, 1, 1, false, false));
  EXPECT_DOUBLE_EQ(in_pad.to_vector<double>()[0], (0 + 1 + 5 + 6) / 9.0);
  EXPECT_DOUBLE_EQ(ex_pad.to_vector<double>()[0], (0 + 1 + 5 + 6) / 4.0);
  EXPECT_DOUBLE_EQ(ex_pad.to_vector<double>()[6], 6.0);  // an interior window
  EXPECT_EQ(Pool2dGeometry::square(3, 2, 1).out_size(112, true), 56);  // ResNet's stem
  EXPECT_EQ(Pool2dGeometry::square(3, 2).out_size(147, true), 73);     // Inception's
  // A window wider than the input: an error in floor mode; in ceil mode, as in PyTorch, one
  // window overhanging the end (k + s - 1 past the start is still within reach) makes one.
  const Tensor x2 = Tensor::arange(4, DType::Float64).reshape({1, 1, 2, 2});
  EXPECT_EQ(Pool2dGeometry::square(3, 2).out_size(2, true), 0);
  EXPECT_THROW(kernels::max_pool2d(x2, Pool2dGeometry::square(3, 2)), Error);
  EXPECT_THROW(kernels::avg_pool2d(x2, Pool2dGeometry::square(3, 2)), Error);
  EXPECT_EQ(kernels::max_pool2d(x2, Pool2dGeometry::square(3, 2, 0, true)).y.to_vector<double>(),
            (std::vector<double>{3}));
  EXPECT_EQ(Pool2dGeometry::square(4, 2, 0, true).out_size(2, true), 0);  // 2 - 4 + 1 < 0: none
  EXPECT_EQ(Pool2dGeometry::square(3, 2, 0, true).out_size(1, true), 0);  // 1 - 3 + 1 < 0: none
}

// Every output of max and average pooling against the plain definition (each window scanned
// row by row: the first of tied maxima, the last NaN; the sum in that order), on inputs full
// of ties and with NaNs, over kernels, strides, paddings and both rounding modes: the columns
// pooled together across a row and those pooled one at a time (padding, overhang) alike. The
// gradients are the bits of a scatter over the outputs in order (what the gathers must match).
// Max and average pooling and both backward passes against the definition, value by value
// (ties everywhere, NaNs in some windows): every square geometry on a small plane, and
// geometries whose height and width differ (a swapped pair fails) on a small plane and on
// planes large enough for the threaded loops.
void expect_pooling_matches_definition(const Pool2dGeometry& g, int64_t planes, int64_t h, int64_t w) {
  const int64_t kh = g.kernel_h, kw = g.kernel_w, sh = g.stride_h, sw = g.stride_w, ph = g.pad_h, pw = g.pad_w;
  if (g.out_size(h, true) <= 0 || g.out_size(w, false) <= 0) return;
  std::vector<float> v(static_cast<size_t>(planes * h * w));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 7919) % 5);  // ties everywhere
  for (size_t i = 13; i < v.size(); i += 77) v[i] = NAN;
  const Tensor x = Tensor::from_vector(v, {1, planes, h, w});
  const kernels::MaxPoolOutput mx = kernels::max_pool2d(x, g);
  const std::vector<float> y = mx.y.to_vector<float>(), avg = kernels::avg_pool2d(x, g).to_vector<float>();
  const std::vector<int64_t> arg = mx.argmax.to_vector<int64_t>();
  const int64_t ho = mx.y.size(2), wo = mx.y.size(3);
  const Tensor gy = testing::randn_t(mx.y.shape(), 7);
  const std::vector<float> gv = gy.to_vector<float>();
  const std::vector<float> max_dx = kernels::max_pool2d_backward(gy, mx.argmax, x.shape(), g).to_vector<float>();
  const std::vector<float> avg_dx = kernels::avg_pool2d_backward(gy, x.shape(), g).to_vector<float>();
  std::vector<float> want_max_dx(v.size(), 0.0f), want_avg_dx(v.size(), 0.0f);
  const std::string geometry = "k" + std::to_string(kh) + "x" + std::to_string(kw) + " s" + std::to_string(sh) + "x" +
                               std::to_string(sw) + " p" + std::to_string(ph) + "x" + std::to_string(pw) +
                               (g.ceil_mode ? " ceil" : "") + (g.count_include_pad ? "" : " excluding padding") + " on " +
                               std::to_string(h) + "x" + std::to_string(w);
  int64_t failures = 0;  // one message per geometry is enough
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t oy = 0; oy < ho; ++oy)
      for (int64_t ox = 0; ox < wo; ++ox) {
        const int64_t y0 = oy * sh - ph, x0 = ox * sw - pw;
        const int64_t y1p = std::min<int64_t>(y0 + kh, h + ph), x1p = std::min<int64_t>(x0 + kw, w + pw);
        float best = -INFINITY;
        int64_t at = std::max<int64_t>(y0, 0) * w + std::max<int64_t>(x0, 0);
        double sum = 0;
        int64_t inside = 0;
        for (int64_t iy = std::max<int64_t>(y0, 0); iy < std::min(y1p, h); ++iy)
          for (int64_t ix = std::max<int64_t>(x0, 0); ix < std::min(x1p, w); ++ix) {
            const float e = v[p * h * w + iy * w + ix];
            if (e > best || std::isnan(e)) best = e, at = iy * w + ix;
            sum += e, ++inside;
          }
        const int64_t o = (p * ho + oy) * wo + ox;
        const double divisor = g.count_include_pad ? double((y1p - y0) * (x1p - x0)) : double(inside);
        const float want = static_cast<float>(sum / divisor);
        const bool max_ok = std::isnan(best) ? std::isnan(y[o]) : y[o] == best;
        const bool avg_ok = std::isnan(want) ? std::isnan(avg[o]) : avg[o] == want;
        if ((!max_ok || arg[o] != at || !avg_ok) && failures++ == 0)
          ADD_FAILURE() << geometry << " output " << o << ": max " << y[o] << " (want " << best << "), argmax " << arg[o]
                        << " (want " << at << "), average " << avg[o] << " (want " << want << ")";
        want_max_dx[p * h * w + at] += gv[o];
        const float share = gv[o] / static_cast<float>(divisor);
        for (int64_t iy = std::max<int64_t>(y0, 0); iy < std::min(y1p, h); ++iy)
          for (int64_t ix = std::max<int64_t>(x0, 0); ix < std::min(x1p, w); ++ix) want_avg_dx[p * h * w + iy * w + ix] += share;
      }
  for (size_t i = 0; i < v.size(); ++i)
    if ((bits_of(max_dx[i]) != bits_of(want_max_dx[i]) || bits_of(avg_dx[i]) != bits_of(want_avg_dx[i])) &&
        failures++ == 0)
      ADD_FAILURE() << geometry << " gradient at " << i << ": max " << max_dx[i] << " (want " << want_max_dx[i]
                    << "), average " << avg_dx[i] << " (want " << want_avg_dx[i] << ")";
}

TEST(Pooling, EveryGeometryMatchesTheDefinition) {
  for (const int k : {1, 2, 3, 5})
    for (const int s : {1, 2, 3})
      for (int pad = 0; 2 * pad <= k; ++pad)
        for (const bool ceil : {false, true})
          for (const bool include_pad : {true, false})
            expect_pooling_matches_definition(Pool2dGeometry::square(k, s, pad, ceil, include_pad), 2, 7, 11);
  // Height and width apart: kernel, stride and padding (kernel_h, kernel_w, stride_h,
  // stride_w, pad_h, pad_w), each with both roundings and both divisors; 16 planes of 60 x 67
  // take the threaded loops.
  for (const auto& [kh, kw, sh, sw, ph, pw] : std::vector<std::array<int, 6>>{
           {3, 2, 2, 1, 1, 0}, {2, 3, 1, 2, 0, 1}, {5, 1, 3, 1, 2, 0}, {1, 3, 1, 1, 0, 1}})
    for (const bool ceil : {false, true})
      for (const bool include_pad : {true, false}) {
        const Pool2dGeometry g{kh, kw, sh, sw, ph, pw, ceil, include_pad};
        expect_pooling_matches_definition(g, 2, 7, 11);
        expect_pooling_matches_definition(g, 16, 60, 67);  // over 2^14 outputs
      }
}

// The CUDA backward passes gather over covering_outputs (pool2d_window.h), which the CPU uses
// only for stride 1: for every geometry, each pixel's range is exactly the outputs whose
// windows hold it.
TEST(Pooling, CoveringOutputsAreTheWindowsHoldingEachPixel) {
  for (const int k : {1, 2, 3, 5})
    for (const int s : {1, 2, 3})
      for (int pad = 0; 2 * pad <= k; ++pad)
        for (const bool ceil : {false, true}) {
          const Pool2dGeometry g = Pool2dGeometry::square(k, s, pad, ceil);
          for (const int64_t size : {1, 2, 5, 7, 11}) {
            const int64_t out = g.out_size(size, true);
            if (out <= 0) continue;
            const kernels::PoolDims d{1, size, size, out, out};
            for (int64_t i = 0; i < size; ++i) {
              const kernels::CoveringRange r = kernels::covering_outputs(i, k, s, pad, out);
              for (int64_t o = 0; o < out; ++o) {
                const kernels::PoolWindow win = kernels::pool_window(o, 0, d, g);  // rows: y0..y1
                const bool holds = i >= win.y0 && i < win.y1, in_range = o >= r.first && o < r.end;
                EXPECT_EQ(holds, in_range) << "k" << k << " s" << s << " p" << pad << (ceil ? " ceil" : "") << " size "
                                           << size << " pixel " << i << " output " << o;
              }
            }
          }
        }
}

TEST(Pooling, GradientChecks) {
  // Distinct values so no two share a window maximum (no kinks).
  const Tensor x = kernels::add(kernels::binary(kernels::BinaryOp::Mul, Tensor::arange(72, DType::Float64), 0.1),
                                kernels::binary(kernels::BinaryOp::Mul, r64({72}, 1), 0.01))
                       .reshape({2, 1, 6, 6});
  for (const Pool2dGeometry& g : {Pool2dGeometry::square(2, 2), Pool2dGeometry::square(3, 2, 1, true),
                                   Pool2dGeometry::square(3, 1, 1, false, false)}) {
    const GradcheckResult m = gradcheck([&](const Inputs& in) { return max_pool2d(in[0], g); }, {x});
    EXPECT_TRUE(m.ok) << m.message;
    const GradcheckResult a = gradcheck([&](const Inputs& in) { return avg_pool2d(in[0], g); }, {x});
    EXPECT_TRUE(a.ok) << a.message;
  }
}

TEST(Layers, LinearAndDropout) {
  const GradcheckResult res =
      gradcheck([](const Inputs& in) { return linear(in[0], in[1], in[2]); }, {r64({4, 5}, 1), r64({3, 5}, 2), r64({3}, 3)});
  EXPECT_TRUE(res.ok) << res.message;
  Generator gen(1);
  const Tensor x = testing::randn_t({100000}, 4);  // random values: each kept one must be its own, scaled
  const std::vector<float> in = x.to_vector<float>(), y = dropout(x, 0.3, true, gen).to_vector<float>();
  int zeros = 0;
  for (size_t k = 0; k < y.size(); ++k) {
    if (y[k] == 0) ++zeros;
    else EXPECT_FLOAT_EQ(y[k], in[k] / 0.7f) << k;
  }
  EXPECT_NEAR(zeros / 100000.0, 0.3, 0.01);
  EXPECT_TRUE(dropout(x, 0.3, false, gen).same(x));
  // p = 1 drops everything (PyTorch's answer), p outside [0, 1] is an error.
  Tensor w = testing::randn_t({5}, 6);
  w.set_requires_grad(true);
  const Tensor all_dropped = dropout(w, 1.0, true, gen);
  EXPECT_EQ(all_dropped.to_vector<float>(), std::vector<float>(5, 0.0f));
  backward(sum(all_dropped, {}));
  EXPECT_EQ(w.grad().to_vector<float>(), std::vector<float>(5, 0.0f));
  EXPECT_THROW(dropout(x, 1.5, true, gen), Error);
  EXPECT_THROW(dropout(x, -0.1, true, gen), Error);
  // The gradient passes the kept values, scaled, and stops at the dropped ones: a generator
  // made afresh in each evaluation draws the same mask every time.
  const GradcheckResult d = gradcheck(
      [](const Inputs& v) {
        Generator g(7);
        return dropout(v[0], 0.4, true, g);
      },
      {r64({6, 7}, 5)});
  EXPECT_TRUE(d.ok) << d.message;
  EXPECT_GT(d.checked, 0);
}

// A name is one state-dict entry: registering it twice (as a parameter, buffer or child) is
// an error, not a silent merge in which one of the two is never saved or loaded.
TEST(Layers, ANameIsRegisteredOnce) {
  struct Twice : nn::Module {
    explicit Twice(int what) {
      register_parameter("w", Tensor::ones({2}));
      if (what == 0) register_parameter("w", Tensor::ones({3}));
      if (what == 1) register_buffer("w", Tensor::zeros({2}));
      if (what == 2) register_module("w", std::make_shared<nn::Linear>(2, 2));
      if (what == 3) register_buffer("", Tensor::zeros({2}));
    }
    std::string type_name() const override { return "Twice"; }
    Tensor forward_impl(const Tensor& x) override { return x; }
  };
  for (int what = 0; what < 3; ++what) {
    try {
      Twice m(what);
      ADD_FAILURE() << "no error for case " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'w' is registered twice"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(Twice(3), Error);
  EXPECT_EQ(Twice(4).state_dict().size(), 1u);
}

// An unknown name is an error listing the known ones, wherever it is asked about (a prefix of
// a known name is not one: "inception_v3x").
TEST(Models, UnknownNamesAreErrors) {
  for (const std::string name : {"nope", "inception_v3x"}) {
    for (const std::function<void()>& ask : std::vector<std::function<void()>>{
             [&] { nn::create_model(name); }, [&] { nn::default_input_size(name); },
             [&] { nn::min_input_size(name); }}) {
      try {
        ask();
        ADD_FAILURE() << name << " was taken";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("unknown model '" + name + "' (known: inception_resnet_v2, "),
                  std::string::npos)
            << e.what();
      }
    }
  }
  EXPECT_EQ(nn::min_input_size("inception_v3"), 75);
  EXPECT_EQ(nn::default_input_size("resnet20"), 32);
}

TEST(Models, ResNetParameterCountsMatchTorchvisionAndTimm) {
  EXPECT_EQ(nn::create_model("resnet50")->num_parameters(), 25557032);
  EXPECT_EQ(nn::create_model("resnet101")->num_parameters(), 44549160);
  EXPECT_EQ(nn::create_model("resnet152")->num_parameters(), 60192808);
  EXPECT_EQ(nn::create_model("seresnet50")->num_parameters(), 28088024);
  EXPECT_EQ(nn::create_model("resnetv2_50")->num_parameters(), 25549352);
  EXPECT_EQ(nn::create_model("resnetv2_101")->num_parameters(), 44541480);
  EXPECT_EQ(nn::create_model("resnetv2_152")->num_parameters(), 60185128);
  EXPECT_EQ(nn::create_model("resnet50", 200)->num_parameters(), 25557032 - 2049 * 1000 + 2049 * 200);
  EXPECT_THROW(nn::create_model("resnet51"), Error);
  EXPECT_EQ(nn::create_model("inception_v3")->num_parameters(), 27161264);  // with the aux head
  EXPECT_EQ(nn::InceptionV3(1000, /*aux_logits=*/false).num_parameters(), 23834568);
  EXPECT_EQ(nn::create_model("inception_v4")->num_parameters(), 42679816);
  EXPECT_EQ(nn::create_model("inception_resnet_v2")->num_parameters(), 55843464);
  // Our SE variants (counts documented in their model files).
  EXPECT_EQ(nn::create_model("inception_v3_se")->num_parameters(), 28822884);
  EXPECT_EQ(nn::create_model("inception_resnet_v2_se")->num_parameters(), 65092718);
  {  // SE after each module without a residual too, as after inception_v3_se's Mixed blocks
    std::set<std::string> names;
    for (auto& [name, w] : nn::create_model("inception_resnet_v2_se")->named_parameters()) names.insert(name);
    for (const char* se : {"mixed_5b_se.fc1.weight", "mixed_6a_se.fc2.bias", "mixed_7a_se.fc1.weight",
                           "repeat.0.se.fc1.weight", "block8.se.fc2.weight"})
      EXPECT_TRUE(names.count(se)) << se;
  }
  // With TF-slim's auxiliary classifier, which timm leaves out (AuxLogits.*: 1x1 to 128, 5x5 to
  // 768, both with batch norm, and a K-way layer); Inception-v3 has torchvision's always.
  const auto aux = [](int64_t in) { return in * 128 + 2 * 128 + 128 * 768 * 25 + 2 * 768 + 768 * 1000 + 1000; };
  EXPECT_EQ(nn::create_model("inception_v4", 1000, true)->num_parameters(), 42679816 + aux(1024));
  EXPECT_EQ(nn::create_model("inception_resnet_v2", 1000, true)->num_parameters(), 55843464 + aux(1088));
  EXPECT_EQ(nn::create_model("inception_resnet_v2_se", 1000, true)->num_parameters(), 65092718 + aux(1088));
  EXPECT_EQ(nn::create_model("inception_v3", 1000, true)->num_parameters(), 23834568 + aux(768));
  EXPECT_EQ(nn::create_model("resnet50", 1000, true)->num_parameters(), 25557032);
}

// He et al. 2016 section 4.2 (option A shortcuts have no parameters): 0.27M / 0.46M / 0.85M.
TEST(Models, CifarResNetsParameterCountsAndShortcuts) {
  EXPECT_EQ(nn::create_model("resnet20", 10)->num_parameters(), 269722);
  EXPECT_EQ(nn::create_model("resnet32", 10)->num_parameters(), 464154);
  EXPECT_EQ(nn::create_model("resnet56", 10)->num_parameters(), 853018);
  manual_seed(3);
  auto model = nn::create_model("resnet20", 7);
  const auto state = model->state_dict();
  for (const char* name : {"conv1.weight", "bn1.running_mean", "layer2.0.conv1.weight", "layer3.2.bn2.bias", "linear.weight"})
    EXPECT_TRUE(state.count(name)) << name;
  EXPECT_EQ(nn::classifier_weight(state).size(0), 7);
  EXPECT_EQ(nn::default_input_size("resnet20"), 32);
  for (const char* paper_model : {"resnet50", "resnetv2_101", "seresnet50", "inception_v3", "inception_resnet_v2_se"})
    EXPECT_EQ(nn::default_input_size(paper_model), 299) << paper_model;  // SPEC.md: --input-size 299
  // Any size the strides allow; 28 x 28 (Fashion-MNIST) goes to 7 x 7 before pooling.
  const Tensor x = testing::randn_t({2, 3, 28, 28}, 4);
  EXPECT_EQ(model->forward(x).shape(), (Shape{2, 7}));
  // Option A: with the residual branch silenced, a block that halves the size gives
  // relu(x[:, :, ::2, ::2]) between zero channels, half before and half after, as the PyTorch
  // port pads it (F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))), so that
  // its weights compute the same function here.
  nn::BasicBlock block(2, 4, 2);
  for (auto& [name, w] : block.named_parameters())
    if (name.find("conv") != std::string::npos) Tensor(w).copy_(Tensor::zeros(w.shape()));
  block.eval();
  const Tensor in = testing::randn_t({1, 2, 4, 4}, 8);
  const std::vector<float> xv = in.to_vector<float>(), yv = block.forward(in).to_vector<float>();
  ASSERT_EQ(yv.size(), 4u * 2 * 2);
  for (int c = 0; c < 4; ++c)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        EXPECT_EQ(yv[(c * 2 + i) * 2 + j], c == 1 || c == 2 ? std::max(0.0f, xv[((c - 1) * 4 + 2 * i) * 4 + 2 * j]) : 0.0f)
            << c;
}

TEST(Models, InceptionV3NamesAndAuxHead) {
  manual_seed(5);
  nn::InceptionV3 model(6);
  const auto state = model.state_dict();
  for (const char* name : {"Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_var", "Mixed_5b.branch_pool.conv.weight",
                           "Mixed_6e.branch7x7dbl_5.bn.bias", "Mixed_7c.branch3x3dbl_3b.conv.weight",
                           "AuxLogits.conv1.conv.weight", "AuxLogits.fc.bias", "fc.weight"})
    EXPECT_TRUE(state.count(name)) << name;
  EXPECT_EQ(state.at("Mixed_6b.branch7x7_2.conv.weight").shape(), (Shape{128, 128, 1, 7}));
  // 299 px: the auxiliary head needs Mixed_6e's 17x17 (it pools 5x5/3, then a 5x5 convolution).
  const Tensor x = testing::randn_t({2, 3, 299, 299}, 6);
  const Tensor logits = model.forward(x);
  EXPECT_EQ(logits.shape(), (Shape{2, 6}));
  ASSERT_TRUE(model.aux_logits().defined());
  EXPECT_EQ(model.aux_logits().shape(), (Shape{2, 6}));
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 3}, {2});
  backward(add(cross_entropy(logits, labels), mul(cross_entropy(model.aux_logits(), labels), 0.4)));
  EXPECT_TRUE(state.at("AuxLogits.fc.weight").grad().defined());
  model.eval();
  NoGradGuard no_grad;
  model.forward(x);
  EXPECT_FALSE(model.aux_logits().defined());
}

// Below 299 px the auxiliary classifier's grid is too small: in training the error says so and
// what to do; with the head off (or in evaluation) the same input runs.
TEST(Models, InceptionAuxHeadNeedsItsGrid) {
  manual_seed(7);
  nn::InceptionV3 model(4);
  const Tensor x = testing::randn_t({1, 3, 120, 120}, 8);
  try {
    model.forward(x);
    FAIL() << "a 120 px input ran the auxiliary classifier";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("InceptionV3: the auxiliary classifier needs a 17 x 17 grid (a 299 px input), this input gives 5 x 5", 0), 0u)
        << what;
    EXPECT_NE(what.find("set_aux_enabled(false)"), std::string::npos) << what;
  }
  model.set_aux_enabled(false);
  EXPECT_EQ(model.forward(x).shape(), (Shape{1, 4}));
  EXPECT_FALSE(model.aux_logits().defined());
}

TEST(Models, StateDictNamesAndStrictLoading) {
  auto model = nn::create_model("resnet50", 10);
  const auto state = model->state_dict();
  for (const char* name : {"conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                           "layer1.0.downsample.0.weight", "layer1.0.downsample.1.running_var",
                           "layer4.2.bn3.bias", "fc.weight", "fc.bias"})
    EXPECT_TRUE(state.count(name)) << name;
  EXPECT_EQ(state.at("fc.weight").shape(), (Shape{10, 2048}));
  // A second model takes the first one's weights by name.
  auto other = nn::create_model("resnet50", 10);
  other->load_state_dict(state);
  EXPECT_EQ(other->state_dict().at("layer3.1.conv2.weight").to_vector<float>(),
            state.at("layer3.1.conv2.weight").to_vector<float>());
  // Strict loading lists what is wrong.
  auto bad = state;
  bad.erase("fc.bias");
  bad["extra.weight"] = Tensor::zeros({1});
  bad["fc.weight"] = Tensor::zeros({5, 2048});
  try {
    other->load_state_dict(bad);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("missing (1): fc.bias"), std::string::npos) << m;
    EXPECT_NE(m.find("unexpected (1): extra.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("fc.weight: [5, 2048] vs [10, 2048]"), std::string::npos) << m;
  }
  const auto report = other->load_state_dict(bad, /*strict=*/false);
  EXPECT_EQ(report.missing.size(), 1u);
  // Integers for a floating-point tensor are refused, not converted (and not loaded when not
  // strict).
  auto integers = state;
  integers["fc.bias"] = Tensor::from_vector(std::vector<int64_t>(10, 3), {10});
  try {
    other->load_state_dict(integers);
    FAIL() << "loaded int64 values as fc.bias";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mis-shaped or mistyped (1): fc.bias: int64 values for a float32 tensor"),
              std::string::npos)
        << e.what();
  }
  const std::vector<float> bias_before = other->state_dict().at("fc.bias").to_vector<float>();
  EXPECT_EQ(other->load_state_dict(integers, /*strict=*/false).mismatched.size(), 1u);
  EXPECT_EQ(other->state_dict().at("fc.bias").to_vector<float>(), bias_before);
  // A file without batch norm's step counters (as timm exports them) loads through
  // load_weights; anything else missing is still an error.
  auto no_counters = state;
  for (auto it = no_counters.begin(); it != no_counters.end();)
    it = it->first.find("num_batches_tracked") != std::string::npos ? no_counters.erase(it) : std::next(it);
  ASSERT_LT(no_counters.size(), state.size());
  EXPECT_NO_THROW(nn::load_weights(*other, no_counters));
  no_counters.erase("layer1.0.bn1.running_var");
  EXPECT_THROW(nn::load_weights(*other, no_counters), Error);
}

// A file whose parameter is stored as a type fgvc does not read (an 8-bit float) loads nothing
// and names that tensor with its type.
TEST(Models, LoadingNamesAParameterOfATypeFgvcDoesNotRead) {
  auto model = nn::create_model("resnet20", 10);
  const std::string path = ::testing::TempDir() + "/resnet20_f8.safetensors";
  {
    std::map<std::string, Tensor> state = model->state_dict();
    state["linear.bias"] = Tensor::zeros({10}, DType::UInt8);
    write_safetensors(path, state);
  }
  // U8 becomes F8_E4M3 in the header (one byte an element either way): the header rewritten
  // and padded again, the data section as it was.
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[i]);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_len));
  ASSERT_EQ(header.at("linear.bias").at("dtype"), "U8");
  header["linear.bias"]["dtype"] = "F8_E4M3";
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((text.size() >> (8 * i)) & 0xFF));
    out << text << bytes.substr(8 + header_len);
  }
  try {
    nn::load_weights(*model, path);
    FAIL() << "loaded a model without its linear.bias";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path + ": tensors of types fgvc does not read: linear.bias (F8_E4M3)"), std::string::npos) << m;
  }
}

TEST(Models, ResetClassifierLoadsEverythingButTheHead) {
  const std::string path = ::testing::TempDir() + "/imagenet_like.safetensors";
  auto pretrained = nn::create_model("resnet50", 1000);
  write_safetensors(path, pretrained->state_dict());
  auto fine = nn::create_model("resnet50", 200);
  EXPECT_THROW(nn::load_weights(*fine, path), Error);  // fc is [1000, 2048] in the file
  const std::vector<float> own_fc = fine->state_dict().at("fc.weight").to_vector<float>();
  nn::load_weights(*fine, path, /*reset_classifier=*/true);
  EXPECT_EQ(fine->state_dict().at("fc.weight").to_vector<float>(), own_fc);
  EXPECT_EQ(fine->state_dict().at("layer2.0.conv2.weight").to_vector<float>(),
            pretrained->state_dict().at("layer2.0.conv2.weight").to_vector<float>());
}

// Inception-v3 from ImageNet weights to 200 classes: its auxiliary classifier has a K-way layer
// too, reset with the main one; a file without the auxiliary head (timm's) keeps the model's.
TEST(Models, InceptionV3FineTunesWithItsAuxiliaryHead) {
  const std::string path = ::testing::TempDir() + "/inception_imagenet.safetensors";
  auto pretrained = nn::create_model("inception_v3", 1000);
  std::map<std::string, Tensor> file = pretrained->state_dict();
  write_safetensors(path, file);
  auto fine = nn::create_model("inception_v3", 200);
  EXPECT_THROW(nn::load_weights(*fine, path), Error);
  const std::vector<float> own_aux_fc = fine->state_dict().at("AuxLogits.fc.weight").to_vector<float>();
  nn::load_weights(*fine, path, /*reset_classifier=*/true);
  EXPECT_EQ(fine->state_dict().at("AuxLogits.fc.weight").to_vector<float>(), own_aux_fc);
  EXPECT_EQ(fine->state_dict().at("AuxLogits.conv0.conv.weight").to_vector<float>(),
            file.at("AuxLogits.conv0.conv.weight").to_vector<float>());
  // Without AuxLogits.* in the file: the rest loads, strictly, and the head keeps its own values.
  std::map<std::string, Tensor> no_aux;
  for (const auto& [name, t] : file)
    if (name.rfind("AuxLogits.", 0) != 0) no_aux[name] = t;
  write_safetensors(path, no_aux);
  auto same = nn::create_model("inception_v3", 1000);
  const std::vector<float> own_conv0 = same->state_dict().at("AuxLogits.conv0.conv.weight").to_vector<float>();
  nn::load_weights(*same, path);
  EXPECT_EQ(same->state_dict().at("AuxLogits.conv0.conv.weight").to_vector<float>(), own_conv0);
  EXPECT_EQ(same->state_dict().at("Mixed_7c.branch1x1.conv.weight").to_vector<float>(),
            file.at("Mixed_7c.branch1x1.conv.weight").to_vector<float>());
  // Part of the head missing is still an error.
  no_aux["AuxLogits.fc.weight"] = file.at("AuxLogits.fc.weight");
  write_safetensors(path, no_aux);
  EXPECT_THROW(nn::load_weights(*same, path), Error);
}

TEST(Models, ResNetForwardAndBackwardOnASmallInput) {
  manual_seed(3);
  auto model = nn::create_model("resnet50", 7);
  const Tensor x = testing::randn_t({2, 3, 64, 64}, 4);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{1, 5}, {2});
  Tensor loss = cross_entropy(model->forward(x), labels, 0.1);
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
  backward(loss);
  int64_t with_grad = 0;
  for (auto& [name, p] : model->named_parameters()) with_grad += p.grad().defined();
  EXPECT_EQ(with_grad, static_cast<int64_t>(model->named_parameters().size()));
  model->eval();
  NoGradGuard no_grad;
  EXPECT_EQ(model->forward(x).shape(), (Shape{2, 7}));
}

// The models only counted above: a training step on a small input reaches every parameter.
TEST(Models, EveryOtherArchitectureTrainsOnASmallInput) {
  for (const char* name : {"seresnet50", "resnetv2_50", "inception_v4", "inception_resnet_v2", "inception_resnet_v2_se",
                           "inception_v3_se"}) {
    manual_seed(8);
    auto model = nn::create_model(name, 5);
    const bool inception = nn::is_inception(name);
    // The Inception models' auxiliary classifier needs 299 px (tested above and below): off
    // here, as --aux-weight 0.
    if (inception) model->set_aux_enabled(false);
    const int size = inception ? 75 : 32;
    const Tensor x = testing::randn_t({2, 3, size, size}, 9);
    const Tensor labels = Tensor::from_vector(std::vector<int64_t>{1, 4}, {2});
    const Tensor loss = cross_entropy(model->forward(x), labels, 0.1);
    ASSERT_TRUE(std::isfinite(loss.item<double>())) << name;
    backward(loss);
    for (auto& [pname, p] : model->named_parameters()) {
      if (inception && pname.rfind("AuxLogits.", 0) == 0) {
        EXPECT_FALSE(p.grad().defined()) << name << " " << pname;  // skipped, so no gradient
        continue;
      }
      ASSERT_TRUE(p.grad().defined()) << name << " " << pname;
      EXPECT_TRUE(std::isfinite(kernels::sum(kernels::mul(p.grad(), p.grad())).item<double>())) << name << " " << pname;
    }
    // The loss reaches the stem, through every stage (zero-initialised residual branches, as
    // seresnet50's, still pass it by their shortcuts).
    const auto named = model->named_parameters();
    const Tensor& stem = named.front().second;
    EXPECT_GT(kernels::sum(kernels::mul(stem.grad(), stem.grad())).item<double>(), 0.0)
        << name << ": no gradient at " << named.front().first;
  }
}

// Where the squeeze-and-excitation blocks sit (the SE variants are our own, so no reference
// model checks them): in inception_v3_se after each Mixed block, on its output; in
// inception_resnet_v2_se on each residual block's scaled branch before the add, and after the
// modules without a residual. Every module's input and output recorded in one forward pass;
// one SE block's gate computed here by hand.
TEST(Models, SqueezeExciteSitsWhereTheModelFileSays) {
  struct Io {
    Tensor x, y;
  };
  struct Recorder : nn::ForwardObserver {
    std::map<const nn::Module*, Io> io;
    void before(const nn::Module&, const Tensor&) override {}
    void after(const nn::Module& m, const Tensor& x, const Tensor& y) override { io[&m] = {x, y}; }
  };
  auto bits = [](const Tensor& a, const Tensor& b) { return a.shape() == b.shape() && a.to_vector<float>() == b.to_vector<float>(); };
  NoGradGuard no_grad;
  for (const std::string name : {"inception_v3_se", "inception_resnet_v2_se"}) {
    manual_seed(21);
    auto model = nn::create_model(name, 4);
    model->eval();
    std::map<std::string, const nn::Module*> by_name;
    std::function<void(const nn::Module&, const std::string&)> walk = [&](const nn::Module& m, const std::string& prefix) {
      for (const auto& [n, child] : m.named_children()) {
        by_name[prefix + n] = child.get();
        walk(*child, prefix + n + ".");
      }
    };
    walk(*model, "");
    Recorder rec;
    {
      struct Observing {  // reset even when the forward pass throws
        explicit Observing(nn::ForwardObserver* o) { nn::Module::set_observer(o); }
        ~Observing() { nn::Module::set_observer(nullptr); }
      } observing(&rec);
      model->forward(testing::randn_t({1, 3, 75, 75}, 22));
    }
    int after_module = 0, on_branch = 0;
    bool gate_checked = false;
    for (const auto& [n, m] : by_name) {
      if (m->type_name() != "SqueezeExcite") continue;
      ASSERT_TRUE(rec.io.count(m)) << n << " did not run";
      const Io& se = rec.io.at(m);
      const std::string owner = n.substr(0, n.size() - 3);  // "Mixed_5b_se" -> "Mixed_5b"; "repeat.0.se" -> "repeat.0"
      if (n.size() > 3 && n.compare(n.size() - 3, 3, "_se") == 0) {
        ASSERT_TRUE(by_name.count(owner)) << n;
        EXPECT_TRUE(bits(se.x, rec.io.at(by_name.at(owner)).y)) << n << ": not on " << owner << "'s output";
        ++after_module;
      } else {
        ASSERT_EQ(n.compare(n.size() - 3, 3, ".se"), 0) << n;
        const auto* block = dynamic_cast<const nn::ResidualInceptionBlock*>(by_name.at(owner));
        ASSERT_NE(block, nullptr) << n;
        const Io& conv = rec.io.at(by_name.at(owner + ".conv2d"));
        const Io& out = rec.io.at(block);
        EXPECT_TRUE(bits(se.x, kernels::binary(kernels::BinaryOp::Mul, conv.y, block->scale()))) << n << ": not on the scaled branch";
        Tensor sum = kernels::add(se.y, out.x);
        if (block->has_relu()) sum = kernels::relu(sum);
        EXPECT_TRUE(bits(out.y, sum)) << n << ": the block's output is not its input plus the gated branch";
        ++on_branch;
      }
      if (!gate_checked) {  // x * sigmoid(W2 relu(W1 mean(x) + b1) + b2), in float64
        gate_checked = true;
        const auto params = m->named_parameters();
        std::map<std::string, std::vector<float>> w;
        for (const auto& [pn, t] : params) w[pn] = t.to_vector<float>();
        const int64_t C = se.x.size(1), hw = se.x.size(2) * se.x.size(3), R = static_cast<int64_t>(w.at("fc1.bias").size());
        EXPECT_EQ(R, C / 16) << n;
        const std::vector<float> x = se.x.to_vector<float>(), y = se.y.to_vector<float>();
        std::vector<double> mean(C, 0.0), hidden(R, 0.0);
        for (int64_t c = 0; c < C; ++c) {
          for (int64_t i = 0; i < hw; ++i) mean[c] += x[c * hw + i];
          mean[c] /= hw;
        }
        for (int64_t r = 0; r < R; ++r) {
          double a = w.at("fc1.bias")[r];
          for (int64_t c = 0; c < C; ++c) a += double(w.at("fc1.weight")[r * C + c]) * mean[c];
          hidden[r] = std::max(a, 0.0);
        }
        double err = 0, norm = 0;
        for (int64_t c = 0; c < C; ++c) {
          double a = w.at("fc2.bias")[c];
          for (int64_t r = 0; r < R; ++r) a += double(w.at("fc2.weight")[c * R + r]) * hidden[r];
          const double gate = 1.0 / (1.0 + std::exp(-a));
          for (int64_t i = 0; i < hw; ++i) {
            const double want = x[c * hw + i] * gate;
            err += (y[c * hw + i] - want) * (y[c * hw + i] - want), norm += want * want;
          }
        }
        EXPECT_LT(std::sqrt(err / norm), 1e-6) << n << ": the gate";
      }
    }
    EXPECT_TRUE(gate_checked) << name;
    if (name == "inception_v3_se") {
      EXPECT_EQ(after_module, 11);  // Mixed_5b ... Mixed_7c
      EXPECT_EQ(on_branch, 0);
    } else {
      EXPECT_EQ(after_module, 3);  // mixed_5b, mixed_6a, mixed_7a
      EXPECT_EQ(on_branch, 10 + 20 + 9 + 1);
    }
  }
}

// forward(x) is classify(features(x)) to the bit in evaluation mode (fgvc-infer runs the network
// once for both): a plain head, timm's 1x1-convolution head, and Inception-v3's dropout.
TEST(Models, ForwardIsTheClassifierOfTheFeatures) {
  NoGradGuard no_grad;
  for (const auto& [name, size] : std::vector<std::pair<std::string, int64_t>>{
           {"resnet20", 32}, {"resnetv2_50", 32}, {"inception_v3", 75}}) {
    manual_seed(12);
    auto model = nn::create_model(name, 6);
    model->eval();
    const Tensor x = testing::randn_t({2, 3, size, size}, 13);
    const Tensor f = model->features(x);
    ASSERT_EQ(f.shape(), (Shape{2, model->feature_dim()})) << name;
    const Tensor logits = model->forward(x);
    EXPECT_EQ(model->classify(f).to_vector<float>(), logits.to_vector<float>()) << name;
    // And the head is the affine map of the file's classifier on those features (W f + b, in
    // float64 here): features() is the penultimate layer, not some other one of its width.
    const auto state = model->state_dict();
    std::string head;
    for (const char* prefix : {"fc", "linear", "head.fc"})
      if (state.count(std::string(prefix) + ".weight")) head = prefix;
    ASSERT_FALSE(head.empty()) << name;
    const std::vector<double> w = state.at(head + ".weight").to_vector<double>(), b = state.at(head + ".bias").to_vector<double>(),
                              fv = f.to_vector<double>();
    const int64_t d = model->feature_dim();
    ASSERT_EQ(static_cast<int64_t>(w.size()), 6 * d) << name;
    std::vector<double> want(12);
    for (int n = 0; n < 2; ++n)
      for (int k = 0; k < 6; ++k) {
        double acc = b[k];
        for (int64_t j = 0; j < d; ++j) acc += w[k * d + j] * fv[n * d + j];
        want[n * 6 + k] = acc;
      }
    EXPECT_LT(testing::rel_error(logits.reshape({12}), Tensor::from_vector(want, {12})), 1e-5) << name;
  }
}

// nn::min_input_size: each model's forward works at it and fails one pixel below.
TEST(Models, MinimumInputSizes) {
  NoGradGuard no_grad;
  // One model of each stem (the deeper and SE variants share them).
  for (const std::string name : {"inception_v3", "inception_v4", "inception_resnet_v2", "resnet50", "resnetv2_50",
                                 "resnet20"}) {
    auto model = nn::create_model(name, 3);
    model->eval();
    const int least = nn::min_input_size(name);
    EXPECT_NO_THROW(model->forward(Tensor::zeros({1, 3, least, least}))) << name << " at " << least;
    if (least > 1) {
      EXPECT_THROW(model->forward(Tensor::zeros({1, 3, least - 1, least - 1})), Error) << name;
    }
  }
  // Training an Inception model with its auxiliary classifier: 299 (the 17 x 17 grid).
  nn::InceptionV3 v3(3);
  EXPECT_EQ(nn::min_input_size("inception_v3", true), 299);
  EXPECT_THROW(v3.forward(Tensor::zeros({2, 3, 298, 298})), Error);
  v3.set_aux_enabled(false);
  EXPECT_NO_THROW(v3.forward(Tensor::zeros({2, 3, 75, 75})));
  EXPECT_FALSE(v3.aux_logits().defined());
  for (const std::string name : {"inception_v4", "inception_resnet_v2"}) {
    EXPECT_EQ(nn::min_input_size(name, true), 299) << name;
    auto model = nn::create_model(name, 3, /*aux_classifier=*/true);
    model->train();
    EXPECT_THROW(model->forward(Tensor::zeros({2, 3, 298, 298})), Error) << name;  // the 16 x 16 grid
    model->set_aux_enabled(false);
    EXPECT_NO_THROW(model->forward(Tensor::zeros({2, 3, 75, 75}))) << name;
  }
}

// The auxiliary classifier of Inception-v4 and Inception-ResNet-v2 (TF-slim's AuxLogits) at
// 299: K logits per image in training, none in evaluation; timm's files (without it) load
// and leave it initialised; a training step reaches its weights; a model built without it
// (evaluation) loads a file that has it.
TEST(Models, InceptionV4AndResNetV2AuxiliaryClassifiers) {
  for (const std::string name : {"inception_v4", "inception_resnet_v2"}) {
    manual_seed(14);
    EXPECT_FALSE(nn::create_model(name, 4)->has_aux_classifier());
    auto model = nn::create_model(name, 4, /*aux_classifier=*/true);
    EXPECT_TRUE(model->has_aux_classifier());
    std::map<std::string, Tensor> timm;
    for (const auto& [pname, t] : model->state_dict())
      if (pname.rfind("AuxLogits.", 0) != 0) timm[pname] = t;
    EXPECT_NO_THROW(nn::load_weights(*model, timm)) << name;
    const Tensor x = testing::randn_t({2, 3, 299, 299}, 15);  // two: batch norm on the aux's 1 x 1 grid
    const Tensor labels = Tensor::from_vector(std::vector<int64_t>{2, 0}, {2});
    // Where the head sits: its input is the output of the last block on the 17 x 17 grid
    // (Mixed_6h = features.17; the 20 Block17s = repeat_1), seen by a forward observer.
    struct Seen : nn::ForwardObserver {
      const nn::Module *grid_block = nullptr, *head = nullptr;
      Tensor grid_out, head_in;
      void before(const nn::Module& m, const Tensor& in) override {
        if (&m == head) head_in = in;
      }
      void after(const nn::Module& m, const Tensor&, const Tensor& out) override {
        if (&m == grid_block) grid_out = out;
      }
    } seen;
    for (const auto& [child, m] : model->named_children()) {
      if (child == "AuxLogits") seen.head = m.get();
      if (child == "repeat_1") seen.grid_block = m.get();
      if (child == "features")
        for (const auto& [index, block] : m->named_children())
          if (index == "17") seen.grid_block = block.get();
    }
    ASSERT_TRUE(seen.head && seen.grid_block) << name;
    model->train();
    nn::Module::set_observer(&seen);
    const Tensor logits = model->forward(x);
    nn::Module::set_observer(nullptr);
    ASSERT_TRUE(seen.head_in.defined() && seen.grid_out.defined()) << name;
    EXPECT_TRUE(seen.head_in.same(seen.grid_out)) << name;
    EXPECT_EQ(seen.head_in.shape(), (Shape{2, name == "inception_v4" ? 1024 : 1088, 17, 17})) << name;
    ASSERT_TRUE(model->aux_logits().defined()) << name;
    EXPECT_EQ(model->aux_logits().shape(), (Shape{2, 4})) << name;
    backward(add(cross_entropy(logits, labels, 0.1), mul(cross_entropy(model->aux_logits(), labels, 0.1), 0.4)));
    for (const auto& [pname, p] : model->named_parameters()) {
      if (pname.rfind("AuxLogits.", 0) != 0) continue;
      EXPECT_TRUE(p.grad().defined()) << name << " " << pname;
    }
    auto plain = nn::create_model(name, 4);
    nn::load_weights(*plain, model->state_dict());  // strict: the file's AuxLogits.* are not used
    model->eval(), plain->eval();
    NoGradGuard no_grad;
    const Tensor small = testing::randn_t({1, 3, 75, 75}, 16);
    EXPECT_EQ(plain->forward(small).to_vector<float>(), model->forward(small).to_vector<float>()) << name;
    EXPECT_FALSE(model->aux_logits().defined()) << name;  // evaluation after training: none kept
  }
}

// Module::to(DType): a float64 copy of a model (the reference the GPU parity tests use) keeps
// its integer buffers and computes what the float32 model does, to float32 rounding.
// Fresh models start as their references do (only from-scratch training sees this): timm's
// ResNet-v2 with a normal(0, 0.01) 1x1 classifier (its residual ends not zeroed), timm's seresnet50
// with zeroed last batch-norm scales (torchvision's resnet50 keeps 1), convolution biases
// PyTorch's uniform(+-1/sqrt(fan-in)).
TEST(Models, InitialisationFollowsTheReferences) {
  const auto stats = [](const Tensor& t) {
    const std::vector<double> v = t.to_vector<double>();
    double sum = 0, sq = 0, largest = 0;
    for (double x : v) sum += x, sq += x * x, largest = std::max(largest, std::abs(x));
    const double mean = sum / v.size();
    return std::array<double, 3>{mean, std::sqrt(sq / v.size() - mean * mean), largest};
  };
  manual_seed(3);
  const auto v2 = nn::create_model("resnetv2_50", 200);
  std::map<std::string, Tensor> p;
  for (auto& [name, t] : v2->named_parameters()) p[name] = t;
  EXPECT_NEAR(stats(p.at("head.fc.weight"))[1], 0.01, 0.0005);
  EXPECT_EQ(stats(p.at("head.fc.bias"))[2], 0.0);
  EXPECT_GT(stats(p.at("stages.0.blocks.0.conv3.weight"))[2], 0.0);  // timm's ResNetV2: zero_init_last=False
  EXPECT_NEAR(stats(p.at("stages.0.blocks.0.conv2.weight"))[1], std::sqrt(2.0 / (64 * 9)), 0.002);  // Kaiming, fan-out
  for (const char* name : {"seresnet50", "resnet50"}) {
    const auto m = nn::create_model(name, 10);
    std::map<std::string, Tensor> q;
    for (auto& [n, t] : m->named_parameters()) q[n] = t;
    const bool se = std::string(name) == "seresnet50";
    EXPECT_EQ(stats(q.at("layer1.0.bn3.weight"))[0], se ? 0.0 : 1.0) << name;
    EXPECT_EQ(stats(q.at("layer1.0.bn2.weight"))[0], 1.0) << name;
    if (!se) continue;
    const std::array<double, 3> b = stats(q.at("layer1.0.se.fc1.bias"));  // fan-in 256
    EXPECT_GT(b[1], 0.5 / std::sqrt(3.0) / 16);
    EXPECT_LE(b[2], 1.0 / 16);
  }
}

TEST(Models, ToFloat64ConvertsParametersAndFloatBuffersOnly) {
  manual_seed(3);
  auto m32 = nn::create_model("resnet20", 10);
  manual_seed(3);
  auto m64 = nn::create_model("resnet20", 10);
  m64->to(DType::Float64);
  for (const auto& [name, p] : m64->named_parameters()) EXPECT_EQ(p.dtype(), DType::Float64) << name;
  const auto b32 = m32->named_buffers(), b64 = m64->named_buffers();
  for (size_t i = 0; i < b64.size(); ++i)
    EXPECT_EQ(b64[i].second.dtype(), is_floating(b32[i].second.dtype()) ? DType::Float64 : b32[i].second.dtype())
        << b64[i].first;
  m32->eval(), m64->eval();
  const Tensor x = testing::randn_t({2, 3, 32, 32}, 4);
  EXPECT_LT(testing::rel_error(m32->forward(x).to(DType::Float64), m64->forward(x.to(DType::Float64))), 1e-5);
  EXPECT_THROW(m64->to(DType::Int64), Error);
}


// Dropout with p = 0 in training is the identity: x itself, and no draws (the generator's
// offset stays, so the masks of the steps after it do not shift; a draw of exactly 0 would
// otherwise drop its element).
TEST(Layers, DropoutWithPZeroDrawsNothing) {
  Generator gen(5);
  const Tensor x = testing::randn_t({1000}, 9);
  EXPECT_TRUE(dropout(x, 0.0, true, gen).same(x));
  EXPECT_EQ(gen.offset(), 0u);
}

// The weight gradient of a convolution whose column matrix exceeds the 16 M-element chunk
// (im2col + GEMM path, small planes): the images' sums from several chunks add up. A 16 x 16
// kernel over 120 channels of 32 x 32 gives 30,720 rows x 289 columns per image (8.9 M): one
// image a chunk, two chunks; the batch's gradient is the sum of each image's.
TEST(Conv2d, WeightGradientAddsTheChunksOfALargeColumnMatrix) {
  const Conv2dGeometry g;  // stride 1, no padding: not pointwise, not Winograd (16 x 16)
  const Tensor x = testing::randn_t({2, 120, 32, 32}, 61), w = testing::randn_t({2, 120, 16, 16}, 62);
  ASSERT_FALSE(kernels::detail::winograd_applies(x.shape(), w.shape(), g, DType::Float32));
  ASSERT_EQ(kernels::detail::conv2d_tile_rows(x.shape(), w.shape(), g), 17) << "one tile per image: the chunked path";
  const Tensor gy = testing::randn_t({2, 2, 17, 17}, 63);
  const Tensor dw = kernels::conv2d_backward_weight(gy, x, w.shape(), g);
  Tensor want = Tensor::zeros(w.shape());
  for (int64_t n = 0; n < 2; ++n)
    want = kernels::add(want, kernels::conv2d_backward_weight(gy.slice(0, n, n + 1).contiguous(),
                                                              x.slice(0, n, n + 1).contiguous(), w.shape(), g));
  EXPECT_LT(testing::rel_error(dw, want), 1e-5);
}

// Fresh layers' scales: convolutions Kaiming-normal by fan-out (out x kh x kw; a layer whose
// widths differ tells it from fan-in), Linear layers uniform(+-1/sqrt(in)) (PyTorch's default).
TEST(Layers, InitialisationScalesCountTheRightFans) {
  const auto std_and_max = [](const Tensor& t) {
    const std::vector<double> v = t.to_vector<double>();
    double sq = 0, largest = 0;
    for (double x : v) sq += x * x, largest = std::max(largest, std::abs(x));
    return std::array<double, 2>{std::sqrt(sq / v.size()), largest};
  };
  manual_seed(4);
  const nn::Conv2d widen(16, 256, 3);  // fan-out 2304, fan-in 144
  EXPECT_NEAR(std_and_max(widen.weight)[0], std::sqrt(2.0 / (256 * 9)), 0.001);
  const nn::Conv2d narrow(256, 16, 1);  // fan-out 16, fan-in 256
  EXPECT_NEAR(std_and_max(narrow.weight)[0], std::sqrt(2.0 / 16), 0.02);
  const nn::Linear fc(2048, 10);  // bound 1/sqrt(2048), not 1/sqrt(10)
  for (const Tensor& t : {fc.weight, fc.bias}) {
    const std::array<double, 2> s = std_and_max(t);
    EXPECT_LE(s[1], 1.0 / std::sqrt(2048.0));
    EXPECT_GT(s[1], 0.5 / std::sqrt(2048.0));
  }
  EXPECT_NEAR(std_and_max(fc.weight)[0], 1.0 / std::sqrt(3.0 * 2048), 0.001);  // uniform's std: bound / sqrt(3)
}

// A bottleneck that halves the grid at an unchanged width (in = 4 x planes) still projects
// its shortcut (1x1 stride-2 convolution and batch norm): the identity has the wrong size.
TEST(Models, StridedBottleneckOfUnchangedWidthProjectsItsShortcut) {
  nn::Bottleneck block(256, 64, 2, false);
  const auto state = block.state_dict();
  ASSERT_TRUE(state.count("downsample.0.weight"));
  EXPECT_EQ(state.at("downsample.0.weight").shape(), (Shape{256, 256, 1, 1}));
  EXPECT_TRUE(state.count("downsample.1.running_var"));
  block.eval();
  NoGradGuard no_grad;
  EXPECT_EQ(block.forward(testing::randn_t({1, 256, 8, 8}, 3)).shape(), (Shape{1, 256, 4, 4}));
}

// load_weights fills in batch norm's step counters only where the file leaves them out (timm's
// exports): a file's own counters are loaded, as any other tensor.
TEST(Models, LoadWeightsKeepsTheFilesBatchNormCounters) {
  auto model = nn::create_model("resnet20", 10);
  std::map<std::string, Tensor> weights;
  for (const auto& [name, t] : model->state_dict()) weights[name] = t.detach().clone();
  weights["bn1.num_batches_tracked"] = Tensor::scalar(7, DType::Int64);
  weights.erase("layer1.0.bn1.num_batches_tracked");
  nn::load_weights(*model, weights);
  const auto state = model->state_dict();
  EXPECT_EQ(state.at("bn1.num_batches_tracked").item<int64_t>(), 7);
  EXPECT_EQ(state.at("layer1.0.bn1.num_batches_tracked").item<int64_t>(), 0);  // left out: the model's own
}

}  // namespace
}  // namespace fgvc
