// Bad shapes, dtypes and devices raise fgvc::Error whose message names the op and the
// offending shapes/dtypes/devices; nothing aborts.
#include <algorithm>

#include "emd/ground_distance.h"
#include "tensor/region_errors.h"
#include "tensor/storage.h"
#include "test_util.h"

namespace fgvc {
namespace {

// Runs `f`, expects an fgvc::Error, and checks that its message contains every `part`.
template <class F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(Errors, ShapeMismatchNamesOpAndShapes) {
  const Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5});
  expect_error([&] { kernels::add(a, b); }, {"add", "[2, 3]", "[4, 5]"});
  expect_error([&] { kernels::matmul(a, b); }, {"matmul", "[2, 3]", "[4, 5]"});
  expect_error([&] { kernels::concat({a, b}, 0); }, {"concat", "[4, 5]"});
  expect_error([&] { fgvc::mul(a, b); }, {"mul", "[2, 3]", "[4, 5]"});
  expect_error([&] { kernels::sum(a, {2}); }, {"sum", "axis 2"});
  expect_error([&] { kernels::topk(a, 4); }, {"topk", "k = 4"});
  expect_error([&] { kernels::split(a, {1, 1}, 1); }, {"split", "[1, 1]"});
}

TEST(Errors, DtypeMismatchNamesOpAndDtypes) {
  const Tensor a = Tensor::zeros({2}), b = Tensor::zeros({2}, DType::Float64);
  expect_error([&] { kernels::add(a, b); }, {"add", "float32", "float64"});
  expect_error([&] { kernels::relu(Tensor::zeros({2}, DType::Int64)); }, {"relu", "int64"});
  expect_error([&] { kernels::matmul(Tensor::zeros({2, 2}), Tensor::zeros({2, 2}, DType::Float64)); },
               {"matmul", "float64"});
  expect_error([&] { kernels::cross_entropy(Tensor::zeros({2, 3}), Tensor::zeros({2})); },
               {"cross_entropy", "int64", "float32"});
}

TEST(Errors, DeviceMismatchNamesOpAndDevices) {
  FGVC_REQUIRE_CUDA();
  const Tensor a = Tensor::zeros({2}), b = Tensor::zeros({2}, DType::Float32, Device::cuda());
  expect_error([&] { kernels::add(a, b); }, {"add", "cpu", "cuda:0"});
  expect_error([&] { kernels::matmul(a.reshape({1, 2}), b.reshape({2, 1})); }, {"matmul", "cpu", "cuda:0"});
}

TEST(Errors, BadLabelsAreReportedWithTheRow) {
  const Tensor logits = testing::randn_t({3, 4}, 1);
  const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 7, 2}, {3});
  expect_error([&] { kernels::cross_entropy(logits, labels); }, {"cross_entropy", "row 1", "label 7"});
}

// The raw kernels' backward functions check what the autograd ops would never get wrong.
TEST(Errors, BackwardKernelsCheckTheirOperands) {
  const Tensor x = testing::randn_t({1, 2, 4, 4}, 1), w = testing::randn_t({3, 2, 3, 3}, 2);
  const Tensor gy = testing::randn_t({1, 3, 2, 2}, 3);
  const Conv2dGeometry g;
  expect_error([&] { kernels::conv2d_backward_weight(gy, x.to(DType::Float64), w.shape(), g); },
               {"conv2d_backward_weight", "float64", "float32"});
  expect_error([&] { kernels::conv2d_backward_input(gy.to(DType::Float64), w, x.shape(), g); },
               {"conv2d_backward_input", "float64", "float32"});
  const Pool2dGeometry pg = Pool2dGeometry::square(2, 2);
  const kernels::MaxPoolOutput p = kernels::max_pool2d(x, pg);
  expect_error([&] { kernels::max_pool2d_backward(p.y, p.argmax, {4, 4, 4, 4}, pg); },
               {"max_pool2d_backward", "[4, 4, 4, 4]"});
  expect_error([&] { kernels::max_pool2d_backward(p.y, p.argmax.to(DType::Float32), x.shape(), pg); },
               {"max_pool2d_backward", "float32"});
  EXPECT_EQ(kernels::max_pool2d_backward(p.y, p.argmax, x.shape(), pg).shape(), x.shape());
  // A 2 x 2 input pools to one output, not the gradient's 2 x 2.
  expect_error([&] { kernels::max_pool2d_backward(p.y, p.argmax, {1, 2, 2, 2}, pg); },
               {"max_pool2d_backward", "does not match", "[1, 2, 2, 2]"});
  // A plane without pixels has only empty windows, padding or not: refused, as PyTorch does.
  const Tensor flat = Tensor::zeros({1, 1, 2, 0});
  expect_error([&] { kernels::max_pool2d(flat, Pool2dGeometry::square(2, 1, 1)); },
               {"max_pool2d", "[1, 1, 2, 0]", "without pixels"});
  expect_error([&] { kernels::avg_pool2d_backward(Tensor::zeros({1, 1, 3, 1}), {1, 1, 2, 0}, Pool2dGeometry::square(2, 1, 1)); },
               {"avg_pool2d_backward", "without pixels"});
  // Indices in the plane but outside their outputs' windows (another geometry's), or beyond it.
  for (const int64_t wrong : {int64_t{2}, int64_t{16}, int64_t{-1}}) {
    std::vector<int64_t> arg = p.argmax.to_vector<int64_t>();
    arg[4] = wrong;  // plane 1, output (0, 0): window rows 0-1, columns 0-1
    expect_error([&] { kernels::max_pool2d_backward(p.y, Tensor::from_vector(arg, p.argmax.shape()), x.shape(), pg); },
                 {"max_pool2d_backward", "pooling index " + std::to_string(wrong), "outside its window", "plane 1"});
  }
}

// A view that reaches outside its storage, or a negative length, is an error, not a read of
// someone else's memory.
TEST(Errors, ViewsStayInsideTheirStorage) {
  const Tensor t = Tensor::zeros({4});
  expect_error([&] { t.as_strided({1000}, {1}, 0); }, {"as_strided", "outside"});
  expect_error([&] { t.as_strided({2}, {1}, 3); }, {"as_strided", "outside"});
  expect_error([&] { t.as_strided({2}, {-1}, 0); }, {"as_strided", "outside"});
  expect_error([&] { t.as_strided({-1}, {1}, 0); }, {"as_strided", "negative"});
  expect_error([&] { t.as_strided({2}, {1}, -1); }, {"as_strided", "outside"});
  EXPECT_EQ(t.as_strided({2}, {-1}, 3).numel(), 2);  // elements 3 and 2
  EXPECT_EQ(t.as_strided({0}, {1}, 4).numel(), 0);   // an empty view at the end
  EXPECT_EQ(t.as_strided({2, 4}, {0, 1}, 0).numel(), 8);  // broadcast rows
  expect_error([] { Tensor::arange(-1); }, {"arange", "negative"});
}

TEST(Errors, UndefinedTensorIsAnErrorNotACrash) {
  expect_error([] { Tensor().shape(); }, {"undefined"});
  expect_error([] { kernels::relu(Tensor()); }, {"relu", "undefined"});
}

// An exception thrown inside an OpenMP parallel region comes out of the region as itself, the
// first one thrown, once every thread is done; without a failure the region runs everything.
TEST(Errors, AnErrorInsideAParallelRegionIsRethrownAfterIt) {
  for (const int64_t failing_from : {int64_t{-1}, int64_t{0}, int64_t{37}, int64_t{999}}) {
    RegionErrors errors;
    std::vector<int> done(1000, 0);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < 1000; ++i)
      errors.run([&] {
        FGVC_CHECK(failing_from < 0 || i < failing_from, "work", "item ", i, " failed");
        done[i] = 1;
      });
    if (failing_from < 0) {
      EXPECT_NO_THROW(errors.rethrow());
      EXPECT_EQ(std::count(done.begin(), done.end(), 1), 1000);
      continue;
    }
    expect_error([&] { errors.rethrow(); }, {"work: item ", " failed"});
    EXPECT_EQ(done[failing_from], 0);
    for (int64_t i = failing_from; i < 1000; ++i) EXPECT_EQ(done[i], 0) << i;  // each a failing item
  }
}

// A host allocation that fails inside a kernel's parallel region (a convolution's column
// buffer, the distances' float64 scratch) is an fgvc::Error from the call, not the end of the
// process, and the same call works once memory is there again.
TEST(Errors, AnAllocationThatFailsInsideAKernelIsAnError) {
  // 5 x 5: no Winograd; 4 images of 64 x 32 x 32 (1 MiB), their column tiles 3.3 MB each.
  const Tensor x = testing::randn_t({4, 64, 32, 32}, 11), w = testing::randn_t({8, 64, 5, 5}, 12);
  const Conv2dGeometry g = Conv2dGeometry::symmetric(1, 2);
  set_host_allocation_limit(size_t(2) << 20);
  expect_error([&] { kernels::conv2d(x, w, Tensor(), g); }, {"out of host memory"});
  set_host_allocation_limit(0);
  const Tensor y = kernels::conv2d(x, w, Tensor(), g);
  EXPECT_EQ(y.shape(), (Shape{4, 8, 32, 32}));
  // float32 features: each thread widens its block of rows (32 x 4096 float64, 1 MiB) first.
  const Tensor a = testing::randn_t({64, 4096}, 13), b = testing::randn_t({16, 4096}, 14);
  set_host_allocation_limit(size_t(768) << 10);
  expect_error([&] { emd::pairwise_distances(a, b); }, {"out of host memory"});
  set_host_allocation_limit(0);
  EXPECT_EQ(emd::pairwise_distances(a, b).shape(), (Shape{64, 16}));
}

}  // namespace
}  // namespace fgvc
