// CUDA against the CPU reference for every op (forward and backward kernels), random
// numbers bit for bit, copies between devices, and the caching allocator. Every test skips
// with the reason when no GPU is visible.
#include "autograd/autocast.h"
#include "kernels/batch_norm.h"
#include "kernels/conv2d.h"
#include "nn/models/registry.h"
#include "optim/update_kernels.h"
#include "test_util.h"

namespace fgvc {
namespace {

using kernels::BinaryOp;
using kernels::UnaryOp;
using testing::expect_parity;
using testing::randn_t;
using Ts = std::vector<Tensor>;

// The same freshly initialised 10-class model twice: on the CPU and on the GPU.
std::pair<std::shared_ptr<nn::Classifier>, std::shared_ptr<nn::Classifier>> twin_models(const std::string& name,
                                                                                        uint64_t seed) {
  manual_seed(seed);
  auto cpu = nn::create_model(name, 10);
  manual_seed(seed);
  auto gpu = nn::create_model(name, 10);
  gpu->to(Device::cuda());
  return {cpu, gpu};
}

constexpr double kElementwiseTol = 1e-6;
constexpr double kReductionTol = 1e-5;
// float64 is held to float64's accuracy: a CUDA path that computed or summed in float32
// (about 6e-8 relative) must fail.
constexpr double kFloat64Tol = 1e-12;
double tol_for(DType dt, double float32_tol) { return dt == DType::Float64 ? kFloat64Tol : float32_tol; }

TEST(CudaParity, UnaryOps) {
  FGVC_REQUIRE_CUDA();
  for (DType dt : {DType::Float32, DType::Float64})
    for (UnaryOp op : {UnaryOp::Neg, UnaryOp::Exp, UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Rsqrt, UnaryOp::Abs,
                       UnaryOp::Relu, UnaryOp::Sigmoid, UnaryOp::Tanh, UnaryOp::Square, UnaryOp::Reciprocal,
                       UnaryOp::Sign}) {
      // Signed inputs, so that relu, abs and sign take both branches; the log and roots positive ones.
      const bool positive = op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt;
      Tensor x = positive ? testing::rand_t({37, 129}, 1, 0.1, 3.0, dt) : randn_t({37, 129}, 1, dt);
      if (!positive && op != UnaryOp::Reciprocal) {  // exact zeros too: sign(0) = 0, relu's branch point
        std::vector<double> v = x.to_vector<double>();
        for (size_t i = 0; i < v.size(); i += 7) v[i] = i % 14 == 0 ? 0.0 : -0.0;
        x = Tensor::from_vector(v, x.shape()).to(dt);
      }
      const double tol = tol_for(dt, kElementwiseTol);
      expect_parity(kernels::op_name(op), [op](const Ts& in) { return Ts{kernels::unary(op, in[0])}; }, {x}, tol);
      expect_parity(std::string(kernels::op_name(op)) + " strided",
                    [op](const Ts& in) { return Ts{kernels::unary(op, in[0].transpose(0, 1))}; }, {x}, tol);
    }
}

TEST(CudaParity, BinaryOpsWithBroadcasting) {
  FGVC_REQUIRE_CUDA();
  for (DType dt : {DType::Float32, DType::Float64})
    for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min,
                        BinaryOp::Pow, BinaryOp::Eq, BinaryOp::Gt, BinaryOp::ReluBackward, BinaryOp::SigmoidBackward,
                        BinaryOp::TanhBackward}) {
      // A positive base for pow; signed values otherwise (the relu gate and the comparisons see both signs).
      const Tensor a = op == BinaryOp::Pow ? testing::rand_t({8, 33, 17}, 2, 0.2, 2.0, dt) : randn_t({8, 33, 17}, 2, dt),
                   b = randn_t({33, 1}, 3, dt);
      // A second operand of a's shape, with some elements equal to a's (Eq and Gt see ties).
      Tensor same = randn_t({8, 33, 17}, 20, dt);
      same.view({-1}).slice(0, 0, 4488, 7).copy_(a.view({-1}).slice(0, 0, 4488, 7));
      const double tol = tol_for(dt, kElementwiseTol);
      expect_parity(kernels::op_name(op), [op](const Ts& in) { return Ts{kernels::binary(op, in[0], in[1])}; },
                    {a, b}, tol);
      expect_parity(std::string(kernels::op_name(op)) + " same shape",
                    [op](const Ts& in) { return Ts{kernels::binary(op, in[0], in[1])}; }, {a, same}, tol);
      expect_parity(std::string(kernels::op_name(op)) + " one tensor twice",
                    [op](const Ts& in) { return Ts{kernels::binary(op, in[0], in[0])}; }, {a}, tol);
      expect_parity(std::string(kernels::op_name(op)) + " scalar",
                    [op](const Ts& in) { return Ts{kernels::binary(op, in[0], 1.25)}; }, {a}, tol);
      expect_parity(std::string(kernels::op_name(op)) + " scalar strided",
                    [op](const Ts& in) { return Ts{kernels::binary(op, in[0].transpose(0, 2), 1.25)}; }, {a}, tol);
    }
}

TEST(CudaParity, Reductions) {
  FGVC_REQUIRE_CUDA();
  const Tensor x = randn_t({4, 33, 65, 7}, 4);
  for (const std::vector<int64_t>& axes : std::vector<std::vector<int64_t>>{{}, {0}, {1}, {3}, {1, 2}, {0, 2, 3}}) {
    expect_parity("sum " + shape_str(axes), [&](const Ts& in) { return Ts{kernels::sum(in[0], axes)}; }, {x},
                  kReductionTol);
    expect_parity("mean " + shape_str(axes), [&](const Ts& in) { return Ts{kernels::mean(in[0], axes, true)}; }, {x},
                  kReductionTol);
    expect_parity("max " + shape_str(axes), [&](const Ts& in) { return Ts{kernels::max(in[0], axes)}; }, {x}, 0.0 + 1e-12);
  }
  // Few long rows (split across blocks) and very many short rows.
  expect_parity("sum long rows", [](const Ts& in) { return Ts{kernels::sum(in[0], {1})}; }, {randn_t({3, 1 << 20}, 5)},
                kReductionTol);
  expect_parity("sum many rows", [](const Ts& in) { return Ts{kernels::sum(in[0], {1})}; }, {randn_t({70000, 3}, 6)},
                kReductionTol);
  // Global average pooling of a batch: more rows than a grid's y dimension, each longer than a warp.
  expect_parity("mean over H and W, [40, 2048, 9, 9]", [](const Ts& in) { return Ts{kernels::mean(in[0], {2, 3})}; },
                {randn_t({40, 2048, 9, 9}, 7)}, kReductionTol);
  // A long reduced axis and few outputs (bias gradients): split across blocks, then combined.
  for (DType dt : {DType::Float32, DType::Float64}) {
    const Tensor tall = randn_t({5000, 37}, 16, dt), stack = randn_t({3, 4000, 45}, 17, dt);
    const double tol = tol_for(dt, kReductionTol);
    expect_parity("sum tall axis 0", [](const Ts& in) { return Ts{kernels::sum(in[0], {0})}; }, {tall}, tol);
    expect_parity("mean tall axis 0", [](const Ts& in) { return Ts{kernels::mean(in[0], {0}, true)}; }, {tall}, tol);
    expect_parity("max tall axis 0", [](const Ts& in) { return Ts{kernels::max(in[0], {0})}; }, {tall}, 1e-12);
    expect_parity("sum stack axis 1", [](const Ts& in) { return Ts{kernels::sum(in[0], {1})}; }, {stack}, tol);
    expect_parity("max stack axis 1", [](const Ts& in) { return Ts{kernels::max(in[0], {1})}; }, {stack}, 1e-12);
    expect_parity("sum all, odd size", [](const Ts& in) { return Ts{kernels::sum(in[0])}; },
                  {randn_t({(1 << 20) + 3}, 18, dt)}, tol);
    expect_parity("sum long rows", [](const Ts& in) { return Ts{kernels::sum(in[0], {1})}; },
                  {randn_t({3, 300001}, 21, dt)}, tol);
  }
  // The same input twice gives the same bits (a fixed order of summation, no atomics).
  const Tensor tall = randn_t({5000, 37}, 19).cuda();
  EXPECT_EQ(kernels::sum(tall, {0}).cpu().to_vector<float>(), kernels::sum(tall, {0}).cpu().to_vector<float>());
}

// The fast paths of the elementwise kernels and where they must give way: 16-byte packs
// with a tail (sizes not a multiple of the pack), views whose data is not 16-byte aligned,
// a bias-like operand repeated over a contiguous one (either side of the op) and a broadcast
// operand that is not one contiguous block (the general path).
TEST(CudaParity, ElementwiseFastPathsAndFallbacks) {
  FGVC_REQUIRE_CUDA();
  for (DType dt : {DType::Float32, DType::Float64}) {
    const std::string type = dt == DType::Float32 ? " float32" : " float64";
    for (int64_t n : {1, 3, 4, 5, 1001, 4099}) {
      const Tensor x = randn_t({n}, 7, dt), y = randn_t({n}, 8, dt);
      const std::string size = " n=" + std::to_string(n) + type;
      expect_parity("tanh" + size, [](const Ts& in) { return Ts{kernels::unary(UnaryOp::Tanh, in[0])}; }, {x},
                    tol_for(dt, kElementwiseTol));
      expect_parity("sub" + size, [](const Ts& in) { return Ts{kernels::binary(BinaryOp::Sub, in[0], in[1])}; },
                    {x, y}, tol_for(dt, kElementwiseTol));
      expect_parity("div scalar" + size, [](const Ts& in) { return Ts{kernels::binary(BinaryOp::Div, in[0], 3.0)}; },
                    {x}, tol_for(dt, kElementwiseTol));
      // Views starting one element in: contiguous, not 16-byte aligned.
      if (n > 1) {
        expect_parity("exp offset view" + size,
                      [n](const Ts& in) { return Ts{kernels::unary(UnaryOp::Exp, in[0].slice(0, 1, n))}; }, {x},
                      tol_for(dt, kElementwiseTol));
        expect_parity("mul offset views" + size,
                      [n](const Ts& in) {
                        return Ts{kernels::binary(BinaryOp::Mul, in[0].slice(0, 1, n), in[1].slice(0, 0, n - 1))};
                      },
                      {x, y}, tol_for(dt, kElementwiseTol));
      }
    }
    const Tensor act = randn_t({5, 6, 7, 9}, 9, dt), channel = randn_t({6, 1, 1}, 10, dt),
                 rows = randn_t({5, 1, 1, 1}, 11, dt), last = randn_t({9}, 12, dt), middle = randn_t({7, 1}, 13, dt),
                 crossed = randn_t({9, 7}, 14, dt);
    for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Div}) {
      const std::string name = std::string(kernels::op_name(op)) + type;
      for (const Tensor& other : {channel, rows, last, middle}) {
        const std::string what = name + " " + shape_str(other.shape());
        expect_parity(what + " repeated right", [op](const Ts& in) { return Ts{kernels::binary(op, in[0], in[1])}; },
                      {act, other}, tol_for(dt, kElementwiseTol));
        expect_parity(what + " repeated left", [op](const Ts& in) { return Ts{kernels::binary(op, in[1], in[0])}; },
                      {act, other}, tol_for(dt, kElementwiseTol));
      }
      // A transposed [7, 9] operand: two dimensions, but not one contiguous block.
      expect_parity(name + " transposed operand",
                    [op](const Ts& in) { return Ts{kernels::binary(op, in[0], in[1].transpose(0, 1))}; },
                    {act, crossed}, tol_for(dt, kElementwiseTol));
    }
  }
  // fill_: contiguous (packs and tail), misaligned, strided; 16- and 64-bit types too.
  for (DType dt : {DType::Float32, DType::Float64, DType::BFloat16, DType::Int64}) {
    const Tensor x = randn_t({13, 11}, 15).to(dt);
    expect_parity(std::string("fill ") + dtype_name(dt), [](const Ts& in) {
      Tensor all = in[0].clone(), offset = in[0].clone(), strided = in[0].clone();
      all.fill_(2.5);
      offset.view({-1}).slice(0, 1, 140).fill_(-3.0);
      strided.transpose(0, 1).slice(0, 2, 9, 3).fill_(4.0);
      return Ts{all, offset, strided};
    }, {x}, 0.0 + 1e-12);
  }
}

TEST(CudaParity, Matmul) {
  FGVC_REQUIRE_CUDA();
  for (DType dt : {DType::Float32, DType::Float64})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Tensor a = randn_t(ta ? Shape{300, 65} : Shape{65, 300}, 7, dt);
        const Tensor b = randn_t(tb ? Shape{33, 300} : Shape{300, 33}, 8, dt);
        expect_parity("matmul", [&](const Ts& in) { return Ts{kernels::matmul(in[0], in[1], ta, tb)}; }, {a, b},
                      tol_for(dt, kReductionTol));
        const Tensor ba = randn_t(ta ? Shape{3, 300, 65} : Shape{3, 65, 300}, 9, dt);
        expect_parity("matmul batched shared", [&](const Ts& in) { return Ts{kernels::matmul(in[0], in[1], ta, tb)}; },
                      {ba, b}, tol_for(dt, kReductionTol));
        // Both batched (matmul's backward takes this path), and operands that are transposed views.
        const Tensor bb = randn_t(tb ? Shape{3, 33, 300} : Shape{3, 300, 33}, 10, dt);
        expect_parity("matmul batched both", [&](const Ts& in) { return Ts{kernels::matmul(in[0], in[1], ta, tb)}; },
                      {ba, bb}, tol_for(dt, kReductionTol));
        expect_parity("matmul of views",
                      [&](const Ts& in) { return Ts{kernels::matmul(in[0].transpose(0, 1), in[1].transpose(0, 1), ta, tb)}; },
                      {a.transpose(0, 1).contiguous(), b.transpose(0, 1).contiguous()}, tol_for(dt, kReductionTol));
      }
  // gemm accumulating: c = alpha op(a) op(b) + beta c.
  for (DType dt : {DType::Float32, DType::Float64}) {
    const Tensor a = randn_t({40, 70}, 11, dt), b = randn_t({50, 70}, 12, dt), c = randn_t({40, 50}, 13, dt);
    expect_parity("gemm alpha beta",
                  [](const Ts& in) {
                    const Tensor out = in[2].clone();
                    kernels::gemm(in[0], false, in[1], true, 0.5, -1.5, out);
                    return Ts{out};
                  },
                  {a, b, c}, tol_for(dt, kReductionTol));
  }
}

TEST(CudaParity, SoftmaxAndCrossEntropy) {
  FGVC_REQUIRE_CUDA();
  const Tensor labels = kernels::topk(randn_t({64, 1000}, 12), 1).indices.reshape({64});
  for (DType dt : {DType::Float32, DType::Float64}) {
    const std::string type = dt == DType::Float32 ? " float32" : " float64";
    const Tensor x = randn_t({64, 1000}, 10, dt);
    const Tensor g = randn_t({64, 1000}, 11, dt);
    const double tol = tol_for(dt, kElementwiseTol), long_tol = tol_for(dt, kReductionTol);
    for (int64_t axis : {0, 1}) {
      expect_parity("softmax" + type, [&](const Ts& in) { return Ts{kernels::softmax(in[0], axis)}; }, {x}, tol);
      expect_parity("log_softmax" + type, [&](const Ts& in) { return Ts{kernels::log_softmax(in[0], axis)}; }, {x},
                    tol);
      expect_parity("softmax_backward" + type,
                    [&](const Ts& in) { return Ts{kernels::softmax_backward(in[1], kernels::softmax(in[0], axis), axis)}; },
                    {x, g}, long_tol);
      expect_parity("log_softmax_backward" + type,
                    [&](const Ts& in) {
                      return Ts{kernels::log_softmax_backward(in[1], kernels::log_softmax(in[0], axis), axis)};
                    },
                    {x, g}, long_tol);
    }
    const Tensor gl = randn_t({64}, 13, dt);
    // Without smoothing a -inf logit (a class masked out) off the label leaves the loss and its
    // gradient finite (the CPU's CrossEntropy.MinusInfinityLogitWithoutSmoothing).
    Tensor masked = x.clone();
    const int64_t off_label = (labels.to_vector<int64_t>()[0] + 1) % 1000;
    masked.select(0, 0).select(0, off_label).fill_(-INFINITY);
    for (double smoothing : {0.0, 0.1}) {
      const std::string what = "cross_entropy" + type + " smoothing " + std::to_string(smoothing);
      const auto ce = [smoothing](const Ts& in) {
        const kernels::CrossEntropyOutput o = kernels::cross_entropy(in[0], in[1], smoothing);
        return Ts{o.loss, o.lse, kernels::cross_entropy_backward(in[2], in[0], in[1], o.lse, smoothing)};
      };
      expect_parity(what, ce, {x, labels, gl}, long_tol);
      if (smoothing == 0) expect_parity(what + " -inf logit", ce, {masked, labels, gl}, long_tol);
    }
  }
  // Fewer classes than a warp, and CUB-200's count (not a power of two).
  for (int64_t classes : {10, 200}) {
    const Tensor logits = randn_t({37, classes}, 14), grad = randn_t({37}, 15);
    const Tensor some_labels = kernels::topk(randn_t({37, classes}, 16), 1).indices.reshape({37});
    expect_parity("cross_entropy " + std::to_string(classes) + " classes, smoothing 0.1", [](const Ts& in) {
      const kernels::CrossEntropyOutput o = kernels::cross_entropy(in[0], in[1], 0.1);
      return Ts{o.loss, o.lse, kernels::cross_entropy_backward(in[2], in[0], in[1], o.lse, 0.1)};
    }, {logits, some_labels, grad}, kReductionTol);
  }
  const Tensor x = randn_t({64, 1000}, 10);
  const Tensor bad = Tensor::from_vector(std::vector<int64_t>{1, 1000}, {2}, Device::cuda());
  EXPECT_THROW(kernels::cross_entropy(x.slice(0, 0, 2).cuda(), bad), Error);
}

TEST(CudaParity, TopKConcatAndCopies) {
  FGVC_REQUIRE_CUDA();
  const Tensor x = randn_t({50, 1000}, 14);
  expect_parity("topk", [](const Ts& in) { auto t = kernels::topk(in[0], 5); return Ts{t.values, t.indices}; }, {x}, 0.0 + 1e-12);
  const Tensor ties = Tensor::from_vector(std::vector<float>{1, 5, 3, 5, 2, NAN, 7, 7}, {2, 4});
  expect_parity("topk ties", [](const Ts& in) { return Ts{kernels::topk(in[0], 3).indices}; }, {ties}, 1e-12);
  // Long rows in float64 with planted ties far apart (columns j and j + 256, which one GPU
  // thread may scan both of): the lower index first, as on the CPU.
  std::vector<double> wide = randn_t({4, 1000}, 17, DType::Float64).to_vector<double>();
  for (int64_t r = 0; r < 4; ++r)
    for (const int64_t j : {int64_t{3}, int64_t{259}, int64_t{515}, int64_t{771}}) wide[r * 1000 + j] = 9.0 + r % 2;
  expect_parity("topk float64, ties 256 apart", [](const Ts& in) { auto t = kernels::topk(in[0], 6); return Ts{t.values, t.indices}; },
                {Tensor::from_vector(wide, {4, 1000})}, 1e-12);
  expect_parity("concat", [](const Ts& in) { return Ts{kernels::concat({in[0], in[1].transpose(0, 1)}, 1)}; },
                {randn_t({6, 5}, 15), randn_t({7, 6}, 16)}, 1e-12);
  expect_parity("casts", [](const Ts& in) {
    return Ts{in[0].to(DType::BFloat16).to(DType::Float32), in[0].to(DType::Float16).to(DType::Float32),
              in[0].to(DType::Int64).to(DType::Float64), in[0].permute({1, 0}).contiguous(),
              in[0].permute({1, 0}).to(DType::BFloat16).to(DType::Float32)};  // a strided cast
  }, {kernels::binary(BinaryOp::Mul, randn_t({33, 17}, 17), 100.0)}, 1e-12);
}

TEST(CudaParity, RandomNumbersAreBitIdentical) {
  FGVC_REQUIRE_CUDA();
  for (DType dt : {DType::Float32, DType::Float64}) {
    Generator g1(123), g2(123);
    const Tensor cpu_n = randn({1000, 37}, g1, dt), gpu_n = randn({1000, 37}, g2, dt, Device::cuda());
    EXPECT_EQ(cpu_n.to_vector<double>(), gpu_n.to_vector<double>()) << dtype_name(dt);
    const Tensor cpu_u = rand({999}, g1, dt), gpu_u = rand({999}, g2, dt, Device::cuda());
    EXPECT_EQ(cpu_u.to_vector<double>(), gpu_u.to_vector<double>()) << dtype_name(dt);
    EXPECT_EQ(g1.offset(), g2.offset());
  }
}

TEST(CudaParity, AsyncCopyFromPinnedMemory) {
  FGVC_REQUIRE_CUDA();
  Tensor host = Tensor::empty({1 << 20}, DType::Float32, Device::cpu(), /*pinned=*/true);
  ASSERT_TRUE(host.storage()->pinned());
  host.copy_(randn_t({1 << 20}, 18));
  const Tensor dev = host.to(Device::cuda(), /*non_blocking=*/true);
  Tensor back = Tensor::empty({1 << 20}, DType::Float32, Device::cpu(), true);
  back.copy_(dev, /*non_blocking=*/true);
  cuda_synchronize();
  EXPECT_EQ(back.to_vector<float>(), host.to_vector<float>());
}

TEST(CudaAllocator, CachesBlocksAndReportsUsage) {
  FGVC_REQUIRE_CUDA();
  cuda_synchronize();
  const CudaMemoryStats before = cuda_memory_stats();
  {
    Tensor a = Tensor::empty({1 << 20}, DType::Float32, Device::cuda());  // 4 MiB
    const CudaMemoryStats during = cuda_memory_stats();
    EXPECT_GE(during.allocated, before.allocated + (4u << 20));
    EXPECT_GE(during.peak_allocated, during.allocated);
    EXPECT_GE(during.reserved, during.allocated);
  }
  const CudaMemoryStats after_free = cuda_memory_stats();
  EXPECT_EQ(after_free.allocated, before.allocated);
  for (int i = 0; i < 10; ++i) Tensor::empty({1 << 20}, DType::Float32, Device::cuda());  // reuses the block
  EXPECT_EQ(cuda_memory_stats().num_cuda_mallocs, after_free.num_cuda_mallocs);
  cuda_empty_cache();
  EXPECT_EQ(cuda_memory_stats().reserved, cuda_memory_stats().allocated);
}

TEST(CudaAllocator, OutOfMemoryNamesTheRequest) {
  FGVC_REQUIRE_CUDA();
  try {
    Tensor::empty({int64_t(1) << 48}, DType::Float32, Device::cuda());  // 1 PiB
    FAIL() << "expected an out-of-memory error";
  } catch (const OutOfMemory& e) {  // its own type: cuDNN's workspace falls back on it
    const std::string msg = e.what();
    EXPECT_NE(msg.find("out of memory"), std::string::npos) << msg;
    EXPECT_NE(msg.find("MiB"), std::string::npos) << msg;
  }
  EXPECT_NO_THROW(Tensor::zeros({16}, DType::Float32, Device::cuda()));  // still usable
}

TEST(CudaParity, AutogradOnTheGpuMatchesTheCpu) {
  FGVC_REQUIRE_CUDA();
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{3, 0, 9, 4}, {4});
  auto run = [&](Device d) {
    Tensor w = randn_t({16, 10}, 19).to(d).set_requires_grad(true);
    const Tensor x = randn_t({4, 16}, 20).to(d);
    backward(cross_entropy(relu(matmul(x, w)), labels.to(d), 0.1));
    return w.grad().cpu();
  };
  EXPECT_LT(testing::rel_error(run(Device::cuda()), run(Device::cpu())), kReductionTol);
}

// The backward rules, each run on the GPU against the CPU (float32): the gradient of
// sum(op(x) * g) for random g, by relative norm. The shape rules build their gradients from
// fresh zeros (slice), the engine's zeros (split's unused outputs) or broadcasts (expand).
TEST(CudaParity, AutogradRulesMatchTheCpu) {
  FGVC_REQUIRE_CUDA();
  using Op = std::function<Tensor(const Ts&)>;
  const std::vector<std::tuple<std::string, Op, Ts>> cases = {
      {"slice", [](const Ts& x) { return slice(x[0], 2, 1, 4, 2); }, {randn_t({2, 3, 5}, 1)}},
      {"split, one part unused", [](const Ts& x) { return split(x[0], {1, 2, 2}, 2)[1]; }, {randn_t({2, 3, 5}, 2)}},
      {"max over an axis", [](const Ts& x) { return max(x[0], {1}); }, {randn_t({4, 7, 3}, 3)}},
      {"max of all", [](const Ts& x) { return max(x[0]); }, {randn_t({4, 7, 3}, 4)}},
      {"softmax", [](const Ts& x) { return softmax(x[0], 1); }, {randn_t({5, 9}, 5)}},
      {"log_softmax", [](const Ts& x) { return log_softmax(x[0], 0); }, {randn_t({5, 9}, 6)}},
      {"sigmoid", [](const Ts& x) { return sigmoid(x[0]); }, {randn_t({6, 8}, 7)}},
      {"div broadcast", [](const Ts& x) { return div(x[0], x[1]); },
       {randn_t({4, 6}, 8), testing::rand_t({6}, 9, 0.5, 2.0)}},
      {"div broadcast left", [](const Ts& x) { return div(x[0], x[1]); },
       {randn_t({4, 1}, 10), testing::rand_t({4, 6}, 11, 0.5, 2.0)}},
      {"pow", [](const Ts& x) { return pow(x[0], 2.5); }, {testing::rand_t({7, 5}, 12, 0.5, 2.0)}},
      {"expand", [](const Ts& x) { return expand(x[0], {3, 4, 5}); }, {randn_t({4, 1}, 13)}},
      {"sum_to", [](const Ts& x) { return sum_to(x[0], {1, 5}); }, {randn_t({3, 4, 5}, 14)}},
      {"mean", [](const Ts& x) { return mean(x[0], {0, 2}, true); }, {randn_t({3, 4, 5}, 15)}},
      {"concat", [](const Ts& x) { return concat({x[0], x[1]}, 1); }, {randn_t({2, 3, 4}, 16), randn_t({2, 2, 4}, 17)}},
      {"transpose and reshape", [](const Ts& x) { return reshape(transpose(x[0], 0, 2), {-1, 6}); },
       {randn_t({2, 3, 4}, 18)}},
  };
  for (const auto& [name, op, inputs] : cases) {
    const auto gradients = [&, &op = op, &inputs = inputs](Device d) {
      Ts xs;
      for (const Tensor& t : inputs) xs.push_back((d.is_cpu() ? t.clone() : t.to(d)).set_requires_grad(true));
      const Tensor y = op(xs);
      const Tensor g = randn_t(y.shape(), 99).to(d);
      backward(sum(mul(y, g)));
      Ts out;
      for (const Tensor& x : xs) out.push_back(x.grad().cpu());
      return out;
    };
    const Ts want = gradients(Device::cpu()), got = gradients(Device::cuda());
    ASSERT_EQ(want.size(), got.size()) << name;
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_LT(testing::rel_error(got[i], want[i]), kReductionTol) << name << ": input " << i;
  }
}

TEST(CudaParity, ConvolutionAndPooling) {
  FGVC_REQUIRE_CUDA();
  kernels::set_cudnn_allow_tf32(false);  // exact FP32 products, comparable with the CPU
  const std::vector<Conv2dGeometry> geometries = {Conv2dGeometry::symmetric(1, 1), Conv2dGeometry::symmetric(2, 0),
                                                  {2, 2, 0, 1, 0, 1, 1, 1} /* TF SAME, asymmetric */,
                                                  Conv2dGeometry::symmetric(1, 2, 2)};
  // The algorithms by cuDNN's heuristics, then measured (set_cudnn_benchmark): FP32 math either way.
  for (bool measured : {false, true}) {
    kernels::set_cudnn_benchmark(measured);
    // 3x3 in every geometry above, then the models' other kernels: Inception's 1x7 and 7x1
    // (padding 0, 3 and 3, 0), the ResNet stem's 7x7 stride 2 and the 1x1 stride-2 shortcut.
    struct Case {
      int64_t kh, kw;
      Conv2dGeometry g;
    };
    std::vector<Case> cases;
    for (const Conv2dGeometry& g : geometries) cases.push_back({3, 3, g});
    cases.push_back({1, 7, {1, 1, 0, 0, 3, 3, 1, 1}});
    cases.push_back({7, 1, {1, 1, 3, 3, 0, 0, 1, 1}});
    cases.push_back({7, 7, Conv2dGeometry::symmetric(2, 3)});
    cases.push_back({1, 1, Conv2dGeometry::symmetric(2, 0)});
    for (const Case& c : cases)
      for (DType dt : {DType::Float32, DType::Float64}) {  // float64: cuDNN's double path, its own scale factors
        const Conv2dGeometry& g = c.g;
        const Tensor x = randn_t({2, 5, 13, 11}, 30, dt), w = randn_t({7, 5, c.kh, c.kw}, 31, dt), b = randn_t({7}, 32, dt);
        const Shape y_shape{2, 7, g.out_size(13, c.kh, true), g.out_size(11, c.kw, false)};
        const Tensor gy = randn_t(y_shape, 33, dt);
        expect_parity(std::string(measured ? "conv2d (measured algorithms) " : "conv2d ") + std::to_string(c.kh) + "x" +
                          std::to_string(c.kw) + " " + dtype_name(dt),
                      [&](const Ts& in) {
                        return Ts{kernels::conv2d(in[0], in[1], in[2], g),
                                  kernels::conv2d_backward_input(in[3], in[1], in[0].shape(), g),
                                  kernels::conv2d_backward_weight(in[3], in[0], in[1].shape(), g)};
                      },
                      {x, w, b, gy}, tol_for(dt, kReductionTol));
      }
  }
  kernels::set_cudnn_benchmark(false);
  kernels::set_cudnn_allow_tf32(true);
  const Tensor x = randn_t({2, 3, 12, 12}, 34);
  for (const Pool2dGeometry& g : {Pool2dGeometry::square(3, 2), Pool2dGeometry::square(3, 2, 1, true),
                                   Pool2dGeometry::square(3, 1, 1, false, false)}) {
    const int64_t o = g.out_size(12, true);
    const Tensor gy = randn_t({2, 3, o, o}, 35);
    expect_parity("max_pool2d", [&](const Ts& in) {
      const kernels::MaxPoolOutput m = kernels::max_pool2d(in[0], g);
      return Ts{m.y, m.argmax, kernels::max_pool2d_backward(in[1], m.argmax, in[0].shape(), g)};
    }, {x, gy}, kElementwiseTol);
    expect_parity("avg_pool2d", [&](const Ts& in) {
      return Ts{kernels::avg_pool2d(in[0], g), kernels::avg_pool2d_backward(in[1], in[0].shape(), g)};
    }, {x, gy}, kElementwiseTol);
    // The backward passes gather in the order of the CPU's scatter: the same bits.
    expect_parity("pooling gradients", [&](const Ts& in) {
      const kernels::MaxPoolOutput m = kernels::max_pool2d(in[0], g);
      return Ts{kernels::max_pool2d_backward(in[1], m.argmax, in[0].shape(), g),
                kernels::avg_pool2d_backward(in[1], in[0].shape(), g)};
    }, {x, gy}, 1e-300);
  }
}

// The pooling geometries the models use, on a plane that is neither square nor even, and one
// whose every pair (kernel, stride, padding) differs between height and width, so that a
// swapped height and width fails; in float32 and float64, the gradients to the bit.
TEST(CudaParity, PoolingGeometriesOfTheModels) {
  FGVC_REQUIRE_CUDA();
  Pool2dGeometry uneven;
  uneven.kernel_h = 3, uneven.kernel_w = 2, uneven.stride_h = 2, uneven.stride_w = 1, uneven.pad_h = 1, uneven.pad_w = 0;
  uneven.ceil_mode = true;
  const std::vector<std::pair<std::string, Pool2dGeometry>> geometries = {
      {"3x3 stride 1 padding 1 (Inception branch pool)", Pool2dGeometry::square(3, 1, 1)},
      {"5x5 stride 3 (Inception auxiliary head)", Pool2dGeometry::square(5, 3)},
      {"1x1 stride 2 (resnet_cifar shortcut)", Pool2dGeometry::square(1, 2)},
      {"3x3 stride 2 padding 1 ceil, padding not counted", Pool2dGeometry::square(3, 2, 1, true, false)},
      {"3x2 stride 2x1 padding 1x0 ceil", uneven}};
  for (DType dt : {DType::Float32, DType::Float64})
    for (const auto& [name, g] : geometries) {
      const Tensor x = randn_t({2, 3, 13, 10}, 80, dt);
      const Tensor gy = randn_t({2, 3, g.out_size(13, true), g.out_size(10, false)}, 81, dt);
      const std::string what = name + " " + dtype_name(dt);
      expect_parity("max_pool2d " + what, [&g = g](const Ts& in) {
        const kernels::MaxPoolOutput m = kernels::max_pool2d(in[0], g);
        return Ts{m.y, m.argmax, kernels::max_pool2d_backward(in[1], m.argmax, in[0].shape(), g)};
      }, {x, gy}, 1e-300);
      expect_parity("avg_pool2d " + what, [&g = g](const Ts& in) {
        return Ts{kernels::avg_pool2d(in[0], g), kernels::avg_pool2d_backward(in[1], in[0].shape(), g)};
      }, {x, gy}, tol_for(dt, kElementwiseTol));
    }
}

// The same NaNs in the same places on both devices, and the other values within `tol`.
void expect_same_nans(const std::string& what, const std::function<Ts(const Ts&)>& op, const Ts& cpu_inputs,
                      double tol) {
  const Ts want = op(cpu_inputs);
  Ts gpu_inputs;
  for (const Tensor& t : cpu_inputs) gpu_inputs.push_back(t.cuda());
  const Ts got = op(gpu_inputs);
  ASSERT_EQ(want.size(), got.size()) << what;
  for (size_t k = 0; k < want.size(); ++k) {
    ASSERT_EQ(got[k].shape(), want[k].shape()) << what << ": output " << k;
    const std::vector<double> a = got[k].cpu().to_vector<double>(), b = want[k].to_vector<double>();
    size_t nans = 0;
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(std::isnan(a[i]), std::isnan(b[i])) << what << ": output " << k << " element " << i << ": " << a[i]
                                                    << " on the GPU, " << b[i] << " on the CPU";
      if (std::isnan(b[i])) {
        ++nans;
        continue;
      }
      if (a[i] == b[i]) continue;  // (infinities too)
      num += (a[i] - b[i]) * (a[i] - b[i]);
      den += b[i] * b[i];
    }
    EXPECT_LE(std::sqrt(num), tol * std::max(std::sqrt(den), 1e-30)) << what << ": output " << k;
    if (k == 0) {
      EXPECT_GT(nans, 0u) << what << ": the case has no NaN to place";
    }
  }
}

// A NaN wins a maximum on both devices (as in PyTorch), and -inf loses to everything else.
TEST(CudaParity, NanLandsWhereTheCpuPutsIt) {
  FGVC_REQUIRE_CUDA();
  for (DType dt : {DType::Float32, DType::Float64}) {
    Tensor x = randn_t({2, 3, 13, 10}, 82, dt);
    std::vector<double> v = x.to_vector<double>();
    for (size_t i = 5; i < v.size(); i += 37) v[i] = std::numeric_limits<double>::quiet_NaN();
    for (size_t i = 11; i < v.size(); i += 23) v[i] = -INFINITY;
    x = Tensor::from_vector(v, x.shape()).to(dt);
    for (const Pool2dGeometry& g : {Pool2dGeometry::square(3, 2), Pool2dGeometry::square(3, 1, 1, true)})
      expect_same_nans(std::string("max_pool2d ") + dtype_name(dt), [g](const Ts& in) {
        const kernels::MaxPoolOutput m = kernels::max_pool2d(in[0], g);
        return Ts{m.y, m.argmax};
      }, {x}, 1e-300);
    for (const std::vector<int64_t>& axes : std::vector<std::vector<int64_t>>{{1}, {3}, {2, 3}, {0}})
      expect_same_nans("max " + shape_str(axes) + " " + dtype_name(dt),
                       [&axes](const Ts& in) { return Ts{kernels::max(in[0], axes), kernels::sum(in[0], axes)}; }, {x},
                       tol_for(dt, kReductionTol));
    expect_same_nans(std::string("softmax ") + dtype_name(dt),
                     [](const Ts& in) { return Ts{kernels::softmax(in[0], 3), kernels::log_softmax(in[0], 3)}; }, {x},
                     tol_for(dt, kElementwiseTol));
  }
}

// Shapes with a dimension of 0, which cuDNN refuses and grids of 0 blocks cannot launch: an
// empty batch, no input channels (the output is the bias), no output channels; batch norm
// with no channels. The CPU's answers, on the device.
TEST(CudaParity, EmptyShapes) {
  FGVC_REQUIRE_CUDA();
  const kernels::Conv2dGeometry g = kernels::Conv2dGeometry::symmetric(1, 1);
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{0, 3, 5, 5}, {4, 3, 3, 3}}, {{2, 0, 5, 5}, {4, 0, 3, 3}}, {{2, 3, 5, 5}, {0, 3, 3, 3}},
      {{1, 2, 0, 4}, {3, 2, 1, 1}}};  // no rows: the 1x1 kernel sees only the padding (2 x 6 outputs)
  for (const auto& [xs, ws] : cases) {
    const Tensor x = randn_t(xs, 90), w = randn_t(ws, 91), b = randn_t({ws[0]}, 92);
    const Tensor gy = randn_t({xs[0], ws[0], g.out_size(xs[2], ws[2], true), g.out_size(xs[3], ws[3], false)}, 93);
    expect_parity("conv2d " + shape_str(xs) + " w " + shape_str(ws), [&](const Ts& in) {
      return Ts{kernels::conv2d(in[0], in[1], in[2], g), kernels::conv2d_backward_input(in[3], in[1], in[0].shape(), g),
                kernels::conv2d_backward_weight(in[3], in[0], in[1].shape(), g)};
    }, {x, w, b, gy}, kReductionTol);
  }
  expect_parity("batch norm without channels", [](const Ts& in) {
    const kernels::BatchNormStats s = kernels::batch_norm_train(in[0], in[1], in[2], 1e-5);
    const kernels::BatchNormGrads d = kernels::batch_norm_backward(in[0], in[0], in[1], s.mean, s.invstd, true);
    return Ts{s.y, s.mean, s.invstd, d.dx, d.dgamma, d.dbeta};
  }, {randn_t({2, 0, 4, 4}, 94), randn_t({0}, 95), randn_t({0}, 96)}, kElementwiseTol);
}

// Batch norm on the GPU: the fused kernels and the generic composition against the CPU, on
// shapes whose channels are split into one run or many (and a partial last run), small
// planes, [N, C] inputs, float32 and float64; the fused kernels give the same bits run after run.
TEST(CudaParity, BatchNorm) {
  FGVC_REQUIRE_CUDA();
  const std::vector<Shape> shapes = {{2, 3, 12, 12}, {5, 17, 7, 7}, {64, 4, 33, 31}, {3, 2, 150, 149}, {16, 10}, {2, 1, 1, 2}};
  uint64_t seed = 36;
  for (DType dt : {DType::Float32, DType::Float64})
    for (const Shape& shape : shapes) {
      // An offset mean, so that the variance pass has something to cancel.
      const Tensor x = kernels::add(randn_t(shape, ++seed, dt), Tensor::scalar(3.0, dt));
      const Tensor gamma = randn_t({shape[1]}, ++seed, dt), beta = randn_t({shape[1]}, ++seed, dt);
      const Tensor gy = randn_t(shape, ++seed, dt);
      const auto all = [](const Ts& in) {
        const kernels::BatchNormStats s = kernels::batch_norm_train(in[0], in[1], in[2], 1e-3);
        const kernels::BatchNormGrads t = kernels::batch_norm_backward(in[3], in[0], in[1], s.mean, s.invstd, true);
        const kernels::BatchNormGrads e = kernels::batch_norm_backward(in[3], in[0], in[1], s.mean, s.invstd, false);
        return Ts{s.y, s.mean, s.invstd, s.var_unbiased, t.dx, t.dgamma, t.dbeta, e.dx,
                  kernels::batch_norm_apply(in[0], in[1], in[2], s.mean, s.invstd)};
      };
      const std::string what = "batch_norm " + shape_str(shape) + " " + dtype_name(dt);
      const double tol = dt == DType::Float64 ? 1e-12 : kReductionTol;
      for (bool fused : {true, false}) {
        kernels::set_cuda_batch_norm_fused(fused);
        expect_parity(what + (fused ? " fused" : " generic"), all, {x, gamma, beta, gy}, tol);
      }
      kernels::set_cuda_batch_norm_fused(true);
      const Ts in = {x.cuda(), gamma.cuda(), beta.cuda(), gy.cuda()};
      const Ts first = all(in), second = all(in);
      for (size_t k = 0; k < first.size(); ++k)
        EXPECT_EQ(first[k].cpu().to_vector<double>(), second[k].cpu().to_vector<double>()) << what << " output " << k;
    }
  // The module counts its training batches on the GPU (kernels::increment, no read-back).
  nn::BatchNorm2d bn(4, 1e-3, 0.1);
  bn.to(Device::cuda());
  const Tensor x = randn_t({2, 4, 5, 5}, 60).cuda();
  bn.forward(x);
  bn.forward(x);
  EXPECT_TRUE(bn.num_batches_tracked.device().is_cuda());
  EXPECT_EQ(bn.num_batches_tracked.item<int64_t>(), 2);
}

// The kernels that autocast keeps in 16 bits (tests/test_mixed_precision.cpp has the CPU's
// against float32): the GPU's against the CPU's, in bfloat16 and float16. Both compute in
// float (or double, for sums) and round once; the GPU's exp, tanh and the like may differ from
// the CPU's in the last bit of a float, which moves a few elements by one 16-bit step.
TEST(CudaParity, SixteenBitKernels) {
  FGVC_REQUIRE_CUDA();
  for (DType low : {DType::BFloat16, DType::Float16}) {
    const double tol = low == DType::BFloat16 ? 4e-3 : 5e-4;
    const std::string name = dtype_name(low);
    // Positive inputs: log, sqrt and pow are defined (a NaN would fail any comparison).
    const Tensor x = testing::rand_t({3, 5, 7, 9}, 70, 0.5, 2.0).to(low), y = testing::rand_t({3, 5, 7, 9}, 71, 0.5, 2.0).to(low);
    const Tensor c = testing::rand_t({1, 5, 1, 1}, 72, 0.5, 2.0).to(low);
    for (int op = 0; op <= static_cast<int>(UnaryOp::Sign); ++op) {
      const auto u = static_cast<UnaryOp>(op);
      expect_parity(name + " " + kernels::op_name(u), [u](const Ts& in) {
        return Ts{kernels::unary(u, in[0]), kernels::unary(u, in[0].permute({3, 1, 2, 0}))};
      }, {x}, tol);
    }
    for (int op = 0; op <= static_cast<int>(BinaryOp::TanhBackward); ++op) {
      const auto b = static_cast<BinaryOp>(op);
      expect_parity(name + " " + kernels::op_name(b), [b](const Ts& in) {
        return Ts{kernels::binary(b, in[0], in[1]), kernels::binary(b, in[0], in[2]), kernels::binary(b, in[2], in[0]),
                  kernels::binary(b, in[0].transpose(1, 3), in[1].transpose(1, 3)), kernels::binary(b, in[0], 0.7)};
      }, {x, y, c}, tol);
    }
    expect_parity(name + " reductions", [](const Ts& in) {
      Ts out;
      for (const std::vector<int64_t>& axes : std::vector<std::vector<int64_t>>{{0, 2, 3}, {2, 3}, {1}, {}})
        out.push_back(kernels::sum(in[0], axes)), out.push_back(kernels::mean(in[0], axes)),
            out.push_back(kernels::max(in[0], axes));
      return out;
    }, {x}, tol);
    // The split kernels: long rows, and a long axis 0 with few outputs.
    expect_parity(name + " long reductions", [](const Ts& in) {
      return Ts{kernels::sum(in[0], {1}), kernels::mean(in[0], {1}), kernels::sum(in[1], {0}), kernels::max(in[1], {0})};
    }, {testing::rand_t({3, 300001}, 83, 0.5, 2.0).to(low), testing::rand_t({5000, 37}, 84, 0.5, 2.0).to(low)}, tol);
    // Batch norm with several runs of a block per channel.
    const Tensor big = randn_t({64, 4, 33, 31}, 85).to(low), big_gy = randn_t({64, 4, 33, 31}, 86).to(low);
    expect_parity(name + " batch_norm [64, 4, 33, 31]", [](const Ts& in) {
      const kernels::BatchNormStats s = kernels::batch_norm_train(in[0], in[1], in[2], 1e-3);
      const kernels::BatchNormGrads t = kernels::batch_norm_backward(in[3], in[0], in[1], s.mean, s.invstd, true);
      return Ts{s.y, s.mean, s.invstd, s.var_unbiased, t.dx, t.dgamma, t.dbeta};
    }, {big, randn_t({4}, 87), randn_t({4}, 88), big_gy}, tol);
    const Tensor gamma = randn_t({5}, 73), beta = randn_t({5}, 74), gy = randn_t({3, 5, 7, 9}, 75).to(low);
    for (bool fused : {true, false}) {
      kernels::set_cuda_batch_norm_fused(fused);
      expect_parity(name + (fused ? " batch_norm fused" : " batch_norm generic"), [](const Ts& in) {
        const kernels::BatchNormStats s = kernels::batch_norm_train(in[0], in[1], in[2], 1e-3);
        const kernels::BatchNormGrads t = kernels::batch_norm_backward(in[3], in[0], in[1], s.mean, s.invstd, true);
        const kernels::BatchNormGrads e = kernels::batch_norm_backward(in[3], in[0], in[1], s.mean, s.invstd, false);
        return Ts{s.y, s.mean, s.invstd, s.var_unbiased, t.dx, t.dgamma, t.dbeta, e.dx,
                  kernels::batch_norm_apply(in[0], in[1], in[2], s.mean, s.invstd)};
      }, {x, gamma, beta, gy}, tol);
    }
    kernels::set_cuda_batch_norm_fused(true);
    // Signed inputs: the branches below zero (relu's gate, sigmoid and tanh of negatives). The
    // ops whose float32 result is exactly rounded on both sides (IEEE arithmetic, then one
    // rounding to 16 bits) must match bit for bit: an error of one 16-bit step, which the
    // tolerance above lets through, fails here.
    const double exact = 1e-300;
    const Tensor z = testing::rand_t({3, 5, 7, 9}, 76, -2.0, 2.0).to(low), w = testing::rand_t({3, 5, 7, 9}, 77, -2.0, 2.0).to(low);
    for (UnaryOp u : {UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Relu, UnaryOp::Square, UnaryOp::Sign, UnaryOp::Sigmoid,
                      UnaryOp::Tanh, UnaryOp::Exp}) {
      const bool rounded_once = u != UnaryOp::Sigmoid && u != UnaryOp::Tanh && u != UnaryOp::Exp;
      expect_parity(name + " signed " + kernels::op_name(u), [u](const Ts& in) {
        return Ts{kernels::unary(u, in[0]), kernels::unary(u, in[0].transpose(0, 3))};
      }, {z}, rounded_once ? exact : tol);
    }
    for (BinaryOp b : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Max, BinaryOp::Min,
                       BinaryOp::ReluBackward, BinaryOp::TanhBackward, BinaryOp::SigmoidBackward})
      expect_parity(name + " signed " + kernels::op_name(b), [b](const Ts& in) {
        return Ts{kernels::binary(b, in[0], in[1]), kernels::binary(b, in[0], in[2]), kernels::binary(b, in[0], -0.3)};
      }, {z, w, c}, exact);
    expect_parity(name + " casts", [low](const Ts& in) {
      return Ts{in[0].to(DType::Float32), in[1].to(low), in[1].to(low).transpose(1, 2).contiguous()};
    }, {z, randn_t({3, 5, 7, 9}, 78)}, exact);
    const Pool2dGeometry pg = Pool2dGeometry::square(3, 2, 1, /*ceil_mode=*/true);
    expect_parity(name + " pooling", [pg](const Ts& in) {
      const kernels::MaxPoolOutput m = kernels::max_pool2d(in[0], pg);
      const Tensor g = kernels::binary(BinaryOp::Mul, m.y, 0.5);
      return Ts{m.y, kernels::max_pool2d_backward(g, m.argmax, in[0].shape(), pg), kernels::avg_pool2d(in[0], pg),
                kernels::avg_pool2d_backward(g, in[0].shape(), pg)};
    }, {x}, tol);
  }
}

// Per-parameter gradient errors of `model` against `reference` (relative by norm).
std::vector<double> gradient_errors(const nn::Module& model, const nn::Module& reference) {
  const auto got = model.named_parameters(), want = reference.named_parameters();
  std::vector<double> e;
  for (size_t i = 0; i < got.size(); ++i)
    e.push_back(testing::rel_error(got[i].second.grad().cpu().to(DType::Float64), want[i].second.grad()));
  return e;
}

// A float64 CPU twin of `name` (same seed) after the same step, the reference both float32 runs
// are measured against.
std::shared_ptr<nn::Classifier> float64_reference(const std::string& name, uint64_t seed, bool training,
                                                  const Tensor& x, const Tensor& labels, Tensor* logits) {
  manual_seed(seed);
  auto m = nn::create_model(name, 10);
  m->to(DType::Float64);
  m->train(training);
  *logits = m->forward(x.to(DType::Float64));
  backward(cross_entropy(*logits, labels, 0.1));
  return m;
}

// A randomly initialised ResNet in training mode is chaotic: float32 rounding alone moves
// the CPU's gradients by ~3% from float64 (batch-norm statistics over few values, 50
// layers deep). So in training mode the GPU must be as close to float64 as the CPU is; in
// eval mode (batch norm affine, well conditioned) it must match the CPU to 1e-4.
TEST(CudaParity, ResNetForwardAndBackwardOnTheGpu) {
  FGVC_REQUIRE_CUDA();
  kernels::set_cudnn_allow_tf32(false);
  const Tensor x = randn_t({2, 3, 64, 64}, 41);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{3, 7}, {2});
  for (bool training : {false, true}) {
    auto [cpu, gpu] = twin_models("resnet50", 40);
    cpu->train(training), gpu->train(training);
    const Tensor want = cpu->forward(x), got = gpu->forward(x.cuda());
    backward(cross_entropy(want, labels, 0.1));
    backward(cross_entropy(got, labels.cuda(), 0.1));
    const auto names = cpu->named_parameters();
    if (!training) {
      EXPECT_LT(testing::rel_error(got.cpu(), want), 1e-5) << "logits (eval mode)";
      const std::vector<double> e = gradient_errors(*gpu, *cpu);
      for (size_t i = 0; i < e.size(); ++i) EXPECT_LT(e[i], 1e-4) << names[i].first << " (eval mode)";
      continue;
    }
    Tensor logits64;
    const auto reference = float64_reference("resnet50", 40, true, x, labels, &logits64);
    const double logits_gpu = testing::rel_error(got.cpu().to(DType::Float64), logits64),
                 logits_cpu = testing::rel_error(want.to(DType::Float64), logits64);
    EXPECT_LT(logits_gpu, 4 * logits_cpu + 1e-6) << "logits (training mode; the CPU's float32 error is " << logits_cpu
                                                  << ")";
    const std::vector<double> e_gpu = gradient_errors(*gpu, *reference), e_cpu = gradient_errors(*cpu, *reference);
    for (size_t i = 0; i < e_gpu.size(); ++i)
      EXPECT_LT(e_gpu[i], 4 * e_cpu[i] + 1e-5) << names[i].first << " (training mode; the CPU's float32 error is "
                                               << e_cpu[i] << ")";
  }
  kernels::set_cudnn_allow_tf32(true);
}

// A training forward and backward on the GPU gives the same bits twice: the pooling
// gradients gather, the reductions add in a fixed order, cuDNN's algorithms are deterministic
// ones. Inception-v4 has the overlapping max pools (3x3, stride 2) and average pools whose
// gradients a scatter would race on; 96 px keeps it small.
TEST(CudaParity, TrainingStepRepeatsItsBits) {
  FGVC_REQUIRE_CUDA();
  const Tensor x = randn_t({4, 3, 96, 96}, 43).cuda();
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{1, 4, 7, 9}, {4}).cuda();
  std::vector<std::vector<float>> runs[2];
  for (auto& run : runs) {
    manual_seed(44);
    auto model = nn::create_model("inception_v4", 10);
    model->to(Device::cuda());
    model->train();
    backward(cross_entropy(model->forward(x), labels, 0.1));
    for (const auto& [name, w] : model->named_parameters()) run.push_back(w.grad().cpu().to_vector<float>());
  }
  const auto names = nn::create_model("inception_v4", 10)->named_parameters();
  for (size_t i = 0; i < runs[0].size(); ++i) EXPECT_EQ(runs[0][i], runs[1][i]) << names[i].first;
}

}  // namespace
}  // namespace fgvc

namespace fgvc {
namespace {

// The fused optimiser kernels on the GPU against the CPU loop (same element functions).
TEST(CudaParity, FusedOptimizerUpdates) {
  FGVC_REQUIRE_CUDA();
  const Shape shape{1000, 37};  // not a multiple of the block size
  const std::vector<Tensor> inputs = {testing::randn_t(shape, 1), testing::randn_t(shape, 2),
                                      testing::rand_t(shape, 3, 0.5, 2.0), testing::randn_t(shape, 4)};
  testing::expect_parity(
      "rmsprop_update",
      [](const std::vector<Tensor>& in) {
        Tensor w = in[0].clone(), ms = in[2].clone(), mom = in[3].clone();
        optim::rmsprop_update(w, in[1], ms, mom, optim::RMSPropRule{0.045, 0.9, 0.9, 1.0, 4e-5});
        return std::vector<Tensor>{w, ms, mom};
      },
      inputs, 1e-6);
  testing::expect_parity(
      "sgd_update",
      [](const std::vector<Tensor>& in) {
        Tensor w = in[0].clone(), v = in[3].clone();
        optim::sgd_update(w, in[1], v, optim::SGDRule{0.1, 0.9, 1e-4});
        return std::vector<Tensor>{w, v};
      },
      inputs, 1e-6);
  testing::expect_parity(
      "ema_update",
      [](const std::vector<Tensor>& in) {
        Tensor s = in[0].clone();
        optim::ema_update(s, in[1], 0.999);
        return std::vector<Tensor>{s};
      },
      inputs, 1e-6);
}

// Mixed precision on the GPU: cuDNN convolutions in bfloat16 and float16 (float32
// accumulation) against the CPU's float32, forward and both backward passes, at 16-bit
// tolerance; and a whole resnet20 training step under autocast against float32 on the CPU.
TEST(CudaParity, MixedPrecisionConvolutions) {
  FGVC_REQUIRE_CUDA();
  const Conv2dGeometry g = Conv2dGeometry::symmetric(1, 1);
  const Tensor x = randn_t({2, 8, 9, 9}, 1), w = randn_t({16, 8, 3, 3}, 2), gy = randn_t({2, 16, 9, 9}, 3);
  const Tensor y = kernels::conv2d(x, w, Tensor(), g);
  const Tensor dx = kernels::conv2d_backward_input(gy, w, x.shape(), g);
  const Tensor dw = kernels::conv2d_backward_weight(gy, x, w.shape(), g);
  for (DType low : {DType::BFloat16, DType::Float16}) {
    auto on_gpu = [&](const Tensor& t) { return t.to(Device::cuda()).to(low); };
    const double tol = low == DType::BFloat16 ? 2e-2 : 4e-3;
    EXPECT_LT(testing::rel_error(kernels::conv2d(on_gpu(x), on_gpu(w), Tensor(), g).to(DType::Float32).cpu(), y), tol)
        << dtype_name(low);
    EXPECT_LT(testing::rel_error(kernels::conv2d_backward_input(on_gpu(gy), on_gpu(w), x.shape(), g).to(DType::Float32).cpu(), dx),
              tol)
        << dtype_name(low);
    EXPECT_LT(testing::rel_error(kernels::conv2d_backward_weight(on_gpu(gy), on_gpu(x), w.shape(), g).to(DType::Float32).cpu(), dw),
              tol)
        << dtype_name(low);
  }
}

// Autocast resnet20: convolutions in 16 bits on the GPU against float32 on the CPU. Gradients
// are compared in eval mode (well conditioned, see ResNetForwardAndBackwardOnTheGpu); in
// training mode, the loss and that every gradient is float32 and finite. float16 runs with
// a loss scale of 1024, as training does (GradScaler), or small gradients underflow. The
// tolerances are 16-bit ones: a first-layer weight gradient sums 8192 products of rounded
// inputs and gradients with much cancellation (measured on an H200 with float32 activations:
// bfloat16 8.4% on conv1.weight, float16 2.7% there without a loss scale; with 16-bit
// activations, on the CPU: bfloat16 9.9%, float16 3.3%).
TEST(CudaParity, AutocastTrainingStep) {
  FGVC_REQUIRE_CUDA();
  const Tensor x = randn_t({8, 3, 32, 32}, 4);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}, {8});
  for (DType low : {DType::BFloat16, DType::Float16}) {
    for (bool training : {false, true}) {
      auto [cpu, gpu] = twin_models("resnet20", 7);
      cpu->train(training), gpu->train(training);
      const Tensor want = cross_entropy(cpu->forward(x), labels, 0.1);
      backward(want);
      Tensor got;
      const double scale = low == DType::Float16 ? 1024.0 : 1.0;
      {
        AutocastGuard autocast(low);
        got = cross_entropy(gpu->forward(x.to(Device::cuda())), labels.to(Device::cuda()), 0.1);
      }
      backward(mul(got, scale));
      const std::string what = std::string(dtype_name(low)) + (training ? " training" : " eval");
      EXPECT_NEAR(got.item<float>(), want.item<float>(), 2e-2 * std::abs(want.item<float>())) << what;
      const auto pc = cpu->named_parameters(), pg = gpu->named_parameters();
      for (size_t i = 0; i < pc.size(); ++i) {
        const Tensor g = kernels::binary(kernels::BinaryOp::Mul, pg[i].second.grad(), 1.0 / scale);
        ASSERT_EQ(g.dtype(), DType::Float32) << pg[i].first;
        EXPECT_TRUE(std::isfinite(kernels::sum(g.cpu()).item<double>())) << pg[i].first << " " << what;
        if (!training) {
          EXPECT_LT(testing::rel_error(g.cpu(), pc[i].second.grad()), low == DType::BFloat16 ? 0.15 : 0.06)
              << pg[i].first << " " << what;
        }
      }
    }
  }
}

}  // namespace
}  // namespace fgvc
