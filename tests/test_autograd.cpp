// The engine: gradients accumulate into leaves, shared subexpressions sum, no-grad scopes
// record nothing, the graph is freed after backward, and misuse is a clear error.
#include "test_util.h"

#include "optim/update_kernels.h"

namespace fgvc {
namespace {

using testing::all_close;

Tensor leaf(const std::vector<double>& v, const Shape& shape) {
  return Tensor::from_vector(v, shape).set_requires_grad(true);
}

TEST(Autograd, SimpleChainRule) {
  Tensor x = leaf({1.0, 2.0, 3.0}, {3});
  Tensor y = sum(mul(x, x) * 3.0);  // dy/dx = 6x
  backward(y);
  EXPECT_TRUE(all_close(x.grad(), {6.0, 12.0, 18.0}));
  EXPECT_EQ(y.item<double>(), 42.0);
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCalls) {
  Tensor x = leaf({1.0, -2.0}, {2});
  backward(sum(x * 2.0));
  backward(sum(x * 3.0));
  EXPECT_TRUE(all_close(x.grad(), {5.0, 5.0}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, DiamondGraphSumsBothPaths) {
  Tensor x = leaf({2.0}, {1});
  Tensor a = exp(x), b = x * 4.0;
  backward(sum(a * b));  // d/dx (4x e^x) = 4 e^x (1 + x)
  EXPECT_TRUE(all_close(x.grad(), {4 * std::exp(2.0) * 3.0}, 1e-12));
}

TEST(Autograd, SameTensorUsedTwiceAsInputs) {
  Tensor x = leaf({3.0}, {1});
  Tensor a = leaf({5.0}, {1});
  backward(sum(add(x, x) + a));  // d/dx = 2, d/da = 1: the shared gradient must not alias
  EXPECT_TRUE(all_close(x.grad(), {2.0}));
  EXPECT_TRUE(all_close(a.grad(), {1.0}));
}

// reshape's backward hands on a view of the incoming gradient: a new handle over the same
// memory. A leaf's gradient must still be its own (a later in-place change reaches nothing).
TEST(Autograd, LeafGradientsNeverShareMemoryThroughViews) {
  Tensor w = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor seed = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {6});
  backward(reshape(w, {6}), seed);
  seed.fill_(5.0);
  EXPECT_TRUE(all_close(w.grad(), {1, 2, 3, 4, 5, 6}));
  // Two leaves fed by one gradient through a view: each keeps its own copy.
  Tensor a = leaf({1, 1, 1, 1, 1, 1}, {6});
  Tensor b = leaf({1, 1, 1, 1, 1, 1}, {2, 3});
  backward(add(a, reshape(b, {6})), Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {6}));
  Tensor ga = a.grad();
  ga.fill_(-1.0);
  EXPECT_TRUE(all_close(b.grad(), {1, 2, 3, 4, 5, 6}));
}

// A gradient reaching a leaf through a transpose is a strided view; the leaf's gradient is
// contiguous all the same, so its raw data is in the parameter's order (as in PyTorch).
TEST(Autograd, LeafGradientsAreContiguous) {
  Tensor w = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor coef = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {3, 2});
  backward(sum(mul(transpose(w, 0, 1), coef)));
  ASSERT_TRUE(w.grad().is_contiguous());
  const double* g = w.grad().data<double>();
  EXPECT_EQ(std::vector<double>(g, g + 6), (std::vector<double>{1, 3, 5, 2, 4, 6}));
}

// x^0 is constant: its gradient is 0 everywhere, also at x = 0 (p x^(p-1) would be 0 * inf).
TEST(Autograd, PowerZeroHasAZeroGradient) {
  Tensor x = leaf({0.0, 2.0, -3.0}, {3});
  backward(sum(pow(x, 0.0)));
  EXPECT_TRUE(all_close(x.grad(), {0.0, 0.0, 0.0}));
}

// cast_ (and move_to_) of a leaf: its gradient follows, and a graph recorded before does not
// leave the leaf expecting gradients of the old dtype.
TEST(Autograd, CastLeafTakesNewGradients) {
  Tensor w = leaf({1.0, 2.0}, {2});
  backward(sum(w * 2.0));
  const Tensor old_graph = sum(w * 5.0);  // keeps the float64 accumulator alive
  w.cast_(DType::Float32);
  EXPECT_EQ(w.grad().dtype(), DType::Float32);
  backward(sum(w * 3.0));
  EXPECT_EQ(w.grad().dtype(), DType::Float32);
  EXPECT_EQ(w.grad().to_vector<float>(), (std::vector<float>{5.0f, 5.0f}));
  // The graph recorded before the cast is refused, with or without a gradient in place, rather
  // than leaving a float64 gradient on the float32 leaf.
  for (const bool with_grad : {true, false}) {
    if (!with_grad) w.zero_grad();
    try {
      backward(old_graph, Tensor(), /*retain_graph=*/true);
      ADD_FAILURE() << "a float64 gradient reached the float32 leaf";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("recorded before the tensor was cast or moved"), std::string::npos)
          << e.what();
    }
    EXPECT_TRUE(!w.grad().defined() || w.grad().dtype() == DType::Float32);
  }
  EXPECT_THROW(w.set_grad(Tensor::zeros({2}, DType::Float64)), Error);
}

TEST(Autograd, NoGradScopeRecordsNothing) {
  Tensor x = leaf({1.0}, {1});
  Tensor y;
  {
    NoGradGuard guard;
    y = x * 2.0;
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(y.grad_fn(), nullptr);
  EXPECT_TRUE(GradMode::enabled());
  EXPECT_THROW(backward(sum(y)), Error);
}

TEST(Autograd, InputsWithoutRequiresGradGetNoGradient) {
  Tensor x = leaf({1.0, 2.0}, {2});
  Tensor c = Tensor::from_vector(std::vector<double>{3.0, 4.0}, {2});
  backward(sum(x * c));
  EXPECT_TRUE(all_close(x.grad(), {3.0, 4.0}));
  EXPECT_FALSE(c.grad().defined());
}

TEST(Autograd, GraphIsFreedAfterBackward) {
  Tensor x = leaf({1.0, 2.0}, {2});
  Tensor y = sum(exp(x));
  backward(y);
  EXPECT_TRUE(y.grad_fn()->released());
  try {
    backward(y);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("already freed"), std::string::npos) << e.what();
  }
}

TEST(Autograd, RetainGraphAllowsASecondBackward) {
  Tensor x = leaf({1.0}, {1});
  Tensor y = sum(exp(x));
  backward(y, Tensor(), /*retain_graph=*/true);
  backward(y);
  EXPECT_TRUE(all_close(x.grad(), {2 * std::exp(1.0)}, 1e-12));
}

TEST(Autograd, SavedTensorsAreReleased) {
  Tensor x = leaf({1.0, 2.0, 3.0}, {3});
  Tensor e = exp(x);  // the exp node saves its output's storage
  Tensor y = sum(e);
  std::weak_ptr<Storage> saved = e.storage();
  e = Tensor();  // only the graph still holds the storage
  EXPECT_FALSE(saved.expired());
  backward(y);
  EXPECT_TRUE(saved.expired());
}

// A unary node keeps only what its backward reads: relu its output, so its input (in a
// network, the batch-norm output) is freed as soon as nothing else holds it; log its input.
TEST(Autograd, UnaryNodesKeepOnlyWhatTheirBackwardReads) {
  Tensor x = leaf({-1.0, 2.0, -3.0, 4.0}, {4});
  Tensor t = mul(x, x);  // an intermediate only relu reads
  const std::weak_ptr<Storage> t_storage = t.storage();
  Tensor y = relu(t);
  t = Tensor();
  EXPECT_TRUE(t_storage.expired()) << "relu kept its input";
  Tensor z = sum(mul(y, leaf({1.0, -2.0, 3.0, 0.5}, {4})));
  backward(z);
  EXPECT_TRUE(all_close(x.grad(), {-2.0, -8.0, -18.0, 4.0}, 1e-12, 1e-12));  // 2 x w where x x > 0
  Tensor u = mul(x, x);  // positive; mul keeps its inputs, not u
  const std::weak_ptr<Storage> u_storage = u.storage();
  Tensor v = log(u);
  const std::weak_ptr<Storage> v_storage = v.storage();
  v = sum(v);
  u = Tensor();
  EXPECT_FALSE(u_storage.expired());  // log reads its input
  EXPECT_TRUE(v_storage.expired());   // and not its output
}

TEST(Autograd, NonScalarRootNeedsAGradient) {
  Tensor x = leaf({1.0, 2.0}, {2});
  Tensor y = x * 2.0;
  EXPECT_THROW(backward(y), Error);
  EXPECT_THROW(backward(y, Tensor::ones({3}, DType::Float64)), Error);  // wrong shape
  backward(y, Tensor::from_vector(std::vector<double>{1.0, 10.0}, {2}));
  EXPECT_TRUE(all_close(x.grad(), {2.0, 20.0}));
}

TEST(Autograd, WrongGradientShapeFromABackwardIsReported) {
  Tensor x = leaf({1.0, 2.0}, {2});
  Tensor y = x.detach().clone();
  autograd::record("broken_op", {x}, {y}, [](const std::vector<Tensor>&, const std::vector<bool>&) {
    return std::vector<Tensor>{Tensor::zeros({5}, DType::Float64)};
  });
  try {
    backward(sum(y));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("broken_op"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[5]"), std::string::npos) << e.what();
  }
}

TEST(Autograd, OnlyFloatingLeavesCanRequireGrad) {
  Tensor i = Tensor::zeros({2}, DType::Int64);
  EXPECT_THROW(i.set_requires_grad(true), Error);
  Tensor x = leaf({1.0}, {1});
  Tensor y = x * 2.0;
  EXPECT_THROW(y.set_requires_grad(false), Error);  // not a leaf
}

// A cast to an integer type ends the graph (as in PyTorch): nothing is recorded, and the
// float cast in between carries the gradient back in the source's type.
TEST(Autograd, CastsToIntegersRecordNothing) {
  Tensor x = leaf({1.5, -2.0}, {2});
  const Tensor i = to_dtype(x, DType::Int64);
  EXPECT_FALSE(i.requires_grad());
  EXPECT_EQ(i.grad_fn(), nullptr);
  const Tensor f = to_dtype(x, DType::Float32);
  ASSERT_TRUE(f.requires_grad());
  backward(sum(mul(f, Tensor::from_vector(std::vector<float>{3.0f, -0.5f}, {2}))));
  EXPECT_EQ(x.grad().dtype(), DType::Float64);
  EXPECT_TRUE(all_close(x.grad(), {3.0, -0.5}, 0, 0));
}

// The gradient of a maximum shared by many float16 elements: counted in float32 (in float16
// 90,000 ties are infinity, and every share would be 0).
TEST(Autograd, MaxTiesAreCountedInFloat32For16BitInputs) {
  Tensor x = Tensor::zeros({300, 300}, DType::Float16).set_requires_grad(true);
  backward(max(x));
  ASSERT_EQ(x.grad().dtype(), DType::Float16);
  const std::vector<double> g = x.grad().to_vector<double>();
  double total = 0;
  for (double v : g) {
    ASSERT_GT(v, 0.0);
    total += v;
  }
  EXPECT_NEAR(total, 1.0, 0.01);  // each share is 1 / 90,000 rounded to a float16 subnormal
}

// Softmax and log-softmax of 16-bit inputs are taken in float32 (as on PyTorch's autocast
// list), differentiably, the gradient going back in the input's type.
TEST(Autograd, SoftmaxOf16BitInputsIsFloat32) {
  const Tensor x32 = testing::randn_t({4, 7}, 5);
  Tensor x = x32.to(DType::BFloat16).set_requires_grad(true);
  Tensor y, ly;
  {
    AutocastGuard autocast(DType::BFloat16);
    y = softmax(x, 1);
    ly = log_softmax(x, 1);
  }
  ASSERT_EQ(y.dtype(), DType::Float32);
  ASSERT_EQ(ly.dtype(), DType::Float32);
  const Tensor want = kernels::log_softmax(x.detach().to(DType::Float32), 1);
  EXPECT_EQ(ly.to_vector<float>(), want.to_vector<float>());
  EXPECT_EQ(y.to_vector<float>(), kernels::softmax(x.detach().to(DType::Float32), 1).to_vector<float>());
  const Tensor r = testing::randn_t({4, 7}, 6), q = testing::randn_t({4, 7}, 7);
  backward(add(sum(mul(ly, r)), sum(mul(y, q))));
  EXPECT_EQ(x.grad().dtype(), DType::BFloat16);
  // Each rule in float32, rounded to bfloat16 by its own cast's backward (each op casts x up
  // itself, as each autocast op does in PyTorch), the two added in bfloat16.
  const Tensor want_grad = kernels::add(kernels::log_softmax_backward(r, ly, 1).to(DType::BFloat16),
                                        kernels::softmax_backward(q, y, 1).to(DType::BFloat16));
  EXPECT_EQ(x.grad().to_vector<float>(), want_grad.to_vector<float>());
  EXPECT_EQ(softmax(x, 1).dtype(), DType::Float32);  // outside autocast too
}

// mul keeps each operand only for the other's gradient: dropout's mul(x, mask) keeps the
// mask, not x.
TEST(Autograd, MulKeepsOnlyTheOperandsItsBackwardReads) {
  Tensor x = leaf({1.0, -2.0, 3.0}, {3});
  Tensor t = x * 3.0;  // an intermediate that only the product below could keep
  const std::weak_ptr<Storage> t_storage = t.storage();
  const Tensor mask = Tensor::from_vector(std::vector<double>{2.0, 0.0, 2.0}, {3});
  Tensor y = sum(mul(t, mask));
  t = Tensor();
  EXPECT_TRUE(t_storage.expired()) << "mul kept the operand whose gradient nothing needs";
  backward(y);
  EXPECT_TRUE(all_close(x.grad(), {6.0, 0.0, 6.0}, 1e-12, 1e-12));
  // A product whose operands both need gradients keeps both.
  Tensor a = leaf({2.0}, {1}), b = leaf({5.0}, {1});
  Tensor p = mul(exp(a), b);
  backward(sum(p));
  EXPECT_TRUE(all_close(a.grad(), {5.0 * std::exp(2.0)}, 1e-12));
  EXPECT_TRUE(all_close(b.grad(), {std::exp(2.0)}, 1e-12));
}

// An error thrown inside backward leaves grad mode on, and a graph dropped without a
// backward is freed with its outputs.
TEST(Autograd, AFailedBackwardRestoresGradModeAndDroppedGraphsAreFreed) {
  Tensor x = leaf({1.0, 2.0}, {2});
  Tensor y = x.detach().clone();
  autograd::record("throws", {x}, {y}, [](const std::vector<Tensor>&, const std::vector<bool>&) -> std::vector<Tensor> {
    throw Error("test: a backward that fails");
  });
  EXPECT_THROW(backward(sum(y)), Error);
  EXPECT_TRUE(GradMode::enabled());
  std::weak_ptr<autograd::Node> node;
  {
    Tensor z = sum(exp(mul(x, x)));
    node = z.grad_fn();
    EXPECT_FALSE(node.expired());
  }
  EXPECT_TRUE(node.expired());
}

// A long chain dropped without a backward is freed without one destructor calling the next
// (200,000 nested destructors overflow an 8 MB stack).
TEST(Autograd, ALongGraphDroppedWithoutBackwardIsFreed) {
  Tensor x = leaf({1.0}, {1});
  std::weak_ptr<autograd::Node> first;
  {
    Tensor y = x * 1.0;
    first = y.grad_fn();
    for (int k = 0; k < 200000; ++k) y = y * 1.0;
  }
  EXPECT_TRUE(first.expired());
}

TEST(Autograd, UnusedSplitOutputsContributeZero) {
  Tensor x = leaf({1.0, 2.0, 3.0, 4.0}, {4});
  std::vector<Tensor> parts = split(x, {1, 3}, 0);
  backward(sum(parts[1] * 2.0));
  EXPECT_TRUE(all_close(x.grad(), {0.0, 2.0, 2.0, 2.0}));
}

// An empty strided slice contributes zeros (the view's end, recomputed for the backward,
// would be negative and count from the back).
TEST(Autograd, EmptyStridedSliceHasAZeroGradient) {
  Tensor x = leaf({1.0, 2.0, 3.0, 4.0}, {4});
  backward(sum(slice(x, 0, 0, 0, 2)) + sum(slice(x, 0, 1, 4, 2)));
  EXPECT_TRUE(all_close(x.grad(), {0.0, 1.0, 0.0, 1.0}));
}

// A slice of a leaf that is itself an expanded view (stride 0 along the axis): the gradient
// goes to the rows sliced, not to the first ones (every start has the same offset there), and
// negative starts count from the end.
TEST(Autograd, SliceOfAnExpandedAxisKeepsItsRows) {
  Tensor x = Tensor::from_vector(std::vector<double>{1.0, 2.0}, {1, 2}).expand({4, 2}).set_requires_grad(true);
  backward(sum(slice(x, 0, 2, 4) * 3.0) + sum(slice(x, 0, -4, -3)));
  EXPECT_TRUE(all_close(x.grad(), {1.0, 1.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0})) << x.grad().to_vector<double>()[0];
}

// In-place writes and the version of saved tensors (autograd/saved_tensor.h).

// Runs backward(root) and checks that it fails naming `node` and the in-place write.
void expect_modified_error(const Tensor& root, const std::string& node) {
  try {
    backward(root);
    FAIL() << "expected an error naming '" << node << "'";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'" + node + "'"), std::string::npos) << what;
    EXPECT_NE(what.find("modified in place"), std::string::npos) << what;
  }
}

TEST(Autograd, EveryInPlaceWriteBumpsTheVersion) {
  Tensor t = Tensor::zeros({4});
  Tensor view = t.slice(0, 1, 3);  // views share the count
  EXPECT_EQ(t.version(), 0u);
  t.fill_(1.0);
  view.copy_(Tensor::ones({2}));
  Generator gen(3);
  uniform_(t, 0.0, 1.0, gen);
  normal_(t, 0.0, 1.0, gen);
  Tensor strided = Tensor::zeros({4, 2}).transpose(0, 1);  // the random fill copies into this one
  normal_(strided, 0.0, 1.0, gen);
  EXPECT_EQ(t.version(), 4u);
  EXPECT_EQ(view.version(), 4u);
  EXPECT_EQ(t.detach().version(), 4u);
  EXPECT_EQ(strided.version(), 1u);
  Tensor w = Tensor::ones({3}), g = Tensor::ones({3}), v = Tensor::zeros({3});
  optim::sgd_update(w, g, v, optim::SGDRule{0.1, 0.9, 0.0});
  EXPECT_EQ(w.version(), 1u);
  EXPECT_EQ(v.version(), 1u);
  EXPECT_EQ(g.version(), 0u);
}

TEST(Autograd, WritingASavedInputBeforeBackwardIsAnError) {
  Tensor w = leaf({1.0, 2.0}, {2});
  Tensor x = Tensor::from_vector(std::vector<double>{3.0, 4.0}, {2});
  Tensor y = sum(mul(x, w));  // w's gradient reads x
  x.fill_(0.0);
  expect_modified_error(y, "mul");
  EXPECT_FALSE(w.grad().defined());
}

TEST(Autograd, WritingATensorNoBackwardReadsIsFine) {
  Tensor w = leaf({1.0, 2.0}, {2});
  Tensor x = Tensor::from_vector(std::vector<double>{3.0, 4.0}, {2});
  Tensor y = sum(add(x, w)) + sum(mul(x, w));  // add keeps nothing; mul's w is read only for x's gradient
  x.slice(0, 0, 1).fill_(0.0);  // ... but x is read for w's: an error
  expect_modified_error(y, "mul");
  Tensor z = sum(add(x, w)) + sum(mul(x, w));
  w.fill_(5.0);  // read by no backward: x needs no gradient
  backward(z);
  EXPECT_TRUE(all_close(w.grad(), {1.0, 5.0}));  // 1 + x
}

TEST(Autograd, WritingAnOutputASaverReadsIsAnError) {
  Tensor x = leaf({-1.0, 2.0}, {2});
  Tensor y = relu(x);  // relu's backward reads y
  Tensor loss = sum(y * 2.0);
  y.slice(0, 1, 2).fill_(-7.0);
  expect_modified_error(loss, "relu");
}

// An optimiser step between the forward and the backward (the classic mistake): the weight
// the convolution saved is not the weight any more.
TEST(Autograd, AnOptimiserStepBeforeBackwardIsAnError) {
  Generator gen(9);
  Tensor x = randn({1, 2, 5, 5}, gen);
  Tensor w = randn({3, 2, 3, 3}, gen).set_requires_grad(true);
  x.set_requires_grad(true);
  Tensor loss = sum(conv2d(x, w, Tensor(), kernels::Conv2dGeometry::symmetric(1, 1)));
  Tensor g = Tensor::ones(w.shape()), v = Tensor::zeros(w.shape());
  optim::sgd_update(w, g, v, optim::SGDRule{0.1, 0.0, 0.0});
  expect_modified_error(loss, "conv2d");
}

// Eval-mode batch norm normalises with running_mean itself; a training-mode forward of the
// same layer updates running_mean in place before the first graph's backward.
TEST(Autograd, BatchNormRunningStatisticsUpdatedUnderAGraphAreAnError) {
  Generator gen(4);
  Tensor x = randn({4, 3, 2, 2}, gen).set_requires_grad(true);
  Tensor gamma = Tensor::ones({3}).set_requires_grad(true), beta = Tensor::zeros({3}).set_requires_grad(true);
  Tensor mean = Tensor::zeros({3}), var = Tensor::ones({3});
  Tensor eval_loss = sum(square(batch_norm(x, gamma, beta, mean, var, /*training=*/false, 0.1, 1e-3)));
  backward(sum(batch_norm(x, gamma, beta, mean, var, /*training=*/true, 0.1, 1e-3)));
  expect_modified_error(eval_loss, "batch_norm");
}

TEST(Autograd, RetainedGraphChecksAgainOnTheSecondBackward) {
  Tensor x = leaf({1.0, 2.0}, {2});
  Tensor e = exp(x);
  Tensor y = sum(e);
  backward(y, Tensor(), /*retain_graph=*/true);
  e.fill_(1.0);
  expect_modified_error(y, "exp");
  EXPECT_TRUE(all_close(x.grad(), {std::exp(1.0), std::exp(2.0)}, 1e-12));  // the first backward's only
}

TEST(Autograd, TrainsALinearModel) {
  // Least squares by gradient descent: the engine, matmul, broadcasting and sum_to together.
  Generator gen(5);
  const Tensor xs = randn({64, 3}, gen, DType::Float64);
  const Tensor true_w = Tensor::from_vector(std::vector<double>{1.5, -2.0, 0.5}, {3, 1});
  const Tensor ys = kernels::add(kernels::matmul(xs, true_w), Tensor::scalar(0.25, DType::Float64));
  Tensor w = Tensor::zeros({3, 1}, DType::Float64).set_requires_grad(true);
  Tensor b = Tensor::zeros({1}, DType::Float64).set_requires_grad(true);
  for (int step = 0; step < 300; ++step) {
    Tensor loss = mean(square(matmul(xs, w) + b - ys));
    backward(loss);
    NoGradGuard guard;
    w.copy_(kernels::sub(w, kernels::binary(kernels::BinaryOp::Mul, w.grad(), 0.1)));
    b.copy_(kernels::sub(b, kernels::binary(kernels::BinaryOp::Mul, b.grad(), 0.1)));
    w.zero_grad();
    b.zero_grad();
  }
  EXPECT_TRUE(all_close(w, {1.5, -2.0, 0.5}, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(b, {0.25}, 1e-6, 1e-6));
}

}  // namespace
}  // namespace fgvc
