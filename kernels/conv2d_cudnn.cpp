// CUDA side of kernels/conv2d.h: cuDNN. Each shape's descriptors and algorithms are made on
// its first call and kept (ConvPlan): the algorithm by cuDNN's heuristics (the best that runs)
// or, with set_cudnn_benchmark(true), by cuDNN measuring them all; workspaces come from the
// caching allocator.
// TF32 tensor-core math is allowed by default (cuDNN's default math) and can be switched off
// (set_cudnn_allow_tf32) for bit-for-bit-comparable FP32, as the parity tests do.
#include <cudnn.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/conv2d.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_runtime.h"

#define FGVC_CUDNN_CHECK(expr)                                                                   \
  do {                                                                                           \
    cudnnStatus_t fgvc_st_ = (expr);                                                             \
    if (fgvc_st_ != CUDNN_STATUS_SUCCESS)                                                        \
      throw ::fgvc::Error(::fgvc::detail::concat("cuDNN error: ", #expr, " failed at ", __FILE__, \
                                                 ":", __LINE__, ": ", cudnnGetErrorString(fgvc_st_))); \
  } while (0)

// For destructors: report, do not throw.
#define FGVC_CUDNN_CHECK_NOTHROW(expr)                                                                \
  do {                                                                                                \
    cudnnStatus_t fgvc_st_ = (expr);                                                                  \
    if (fgvc_st_ != CUDNN_STATUS_SUCCESS)                                                             \
      std::fprintf(stderr, "fgvc: cuDNN error: %s failed at %s:%d: %s\n", #expr, __FILE__, __LINE__, \
                   cudnnGetErrorString(fgvc_st_));                                                    \
  } while (0)

namespace fgvc {
namespace kernels {

namespace {

std::atomic<bool> g_allow_tf32{true};  // settings: set from any thread, read per call

cudnnHandle_t handle(int device) {
  static std::mutex mu;
  static std::map<int, cudnnHandle_t> handles;
  std::lock_guard<std::mutex> lock(mu);
  cudnnHandle_t& h = handles[device];
  if (!h) {
    cuda::DeviceGuard guard(device);
    FGVC_CUDNN_CHECK(cudnnCreate(&h));
  }
  FGVC_CUDNN_CHECK(cudnnSetStream(h, cuda::stream(device)));
  return h;
}

// The descriptors of one convolution, x [N, C, H, W] * w [O, C, kh, kw] -> y, with symmetric
// padding (asymmetric padding is applied to the input beforehand).
struct ConvDescriptors {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  std::string shapes;  // for error messages

  ConvDescriptors(const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dGeometry& g, DType dtype) {
    // Data in the tensors' dtype; bfloat16/float16 (mixed precision) accumulate in float32.
    const bool half = dtype == DType::BFloat16 || dtype == DType::Float16;
    const cudnnDataType_t t = dtype == DType::Float64    ? CUDNN_DATA_DOUBLE
                              : dtype == DType::BFloat16 ? CUDNN_DATA_BFLOAT16
                              : dtype == DType::Float16  ? CUDNN_DATA_HALF
                                                         : CUDNN_DATA_FLOAT;
    const cudnnDataType_t compute = half ? CUDNN_DATA_FLOAT : t;
    try {
      set_up(xs, ws, ys, g, dtype, t, compute, half);
    } catch (...) {  // a constructor that throws has no destructor run
      release();
      throw;
    }
  }
  ~ConvDescriptors() { release(); }
  ConvDescriptors(const ConvDescriptors&) = delete;
  ConvDescriptors& operator=(const ConvDescriptors&) = delete;

 private:
  void set_up(const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dGeometry& g, DType dtype,
                cudnnDataType_t t, cudnnDataType_t compute, bool half) {
    FGVC_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    FGVC_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    FGVC_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    FGVC_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    auto i = [](int64_t v) { return static_cast<int>(v); };
    FGVC_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, t, i(xs[0]), i(xs[1]), i(xs[2]), i(xs[3])));
    FGVC_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, t, i(ys[0]), i(ys[1]), i(ys[2]), i(ys[3])));
    FGVC_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, t, CUDNN_TENSOR_NCHW, i(ws[0]), i(ws[1]), i(ws[2]), i(ws[3])));
    FGVC_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, g.pad_top, g.pad_left, g.stride_h, g.stride_w, g.dilation_h,
                                                     g.dilation_w, CUDNN_CROSS_CORRELATION, compute));
    const bool tf32 = g_allow_tf32 && dtype == DType::Float32;
    FGVC_CUDNN_CHECK(cudnnSetConvolutionMathType(
        conv, half ? CUDNN_TENSOR_OP_MATH : (tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH)));
    shapes = fgvc::detail::concat(shape_str(xs), " w ", shape_str(ws), " ", dtype_name(dtype));
  }
  void release() {  // those created
    if (x) FGVC_CUDNN_CHECK_NOTHROW(cudnnDestroyTensorDescriptor(x));
    if (y) FGVC_CUDNN_CHECK_NOTHROW(cudnnDestroyTensorDescriptor(y));
    if (w) FGVC_CUDNN_CHECK_NOTHROW(cudnnDestroyFilterDescriptor(w));
    if (conv) FGVC_CUDNN_CHECK_NOTHROW(cudnnDestroyConvolutionDescriptor(conv));
    x = y = nullptr, w = nullptr, conv = nullptr;
  }
};

// How each convolution's algorithm is chosen: cuDNN's heuristics (the first that reports
// success), or, with set_cudnn_benchmark(true), cuDNN's measurement of every algorithm on the
// first call of a shape (as PyTorch's cudnn.benchmark), the fastest that keeps the math the
// descriptor asks for (no TF32 where it was switched off), is deterministic (unless
// set_cudnn_deterministic(false)) and whose workspace fits.
std::atomic<bool> g_benchmark{false};
std::atomic<bool> g_deterministic{true};

template <class Perf>
bool keeps_math(const Perf& p, cudnnMathType_t wanted) {
  return p.status == CUDNN_STATUS_SUCCESS && (wanted != CUDNN_FMA_MATH || p.mathType == CUDNN_FMA_MATH);
}

// One direction's algorithms that keep the plan's math, in cuDNN's order (heuristic or
// measured), with their workspace sizes, and the one in use: the first whose workspace could
// be allocated (an FFT algorithm can ask for a gigabyte that a full device no longer has).
template <class Algo>
struct Choices {
  std::vector<std::pair<Algo, size_t>> ranked;
  size_t in_use = 0;
};

// Everything a convolution of one shape needs, made on its first call and kept: the
// descriptors, and per direction (forward, backward data, backward filter) the algorithms and
// their workspace sizes. Later calls of the shape do no cuDNN set-up at all.
struct ConvPlan {
  ConvPlan(const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dGeometry& g, DType dtype)
      : d(xs, ws, ys, g, dtype) {
    FGVC_CUDNN_CHECK(cudnnGetConvolutionMathType(d.conv, &math));
  }
  ConvDescriptors d;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  std::optional<Choices<cudnnConvolutionFwdAlgo_t>> forward;
  std::optional<Choices<cudnnConvolutionBwdDataAlgo_t>> backward_data;
  std::optional<Choices<cudnnConvolutionBwdFilterAlgo_t>> backward_filter;
};

// The plan for a shape on a device (made once; plans are never removed, so the reference
// stays valid), and the lock that guards the choices inside it.
std::mutex g_plans_mu;
ConvPlan& plan_for(int device, const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dGeometry& g, DType dtype) {
  static std::map<std::string, std::unique_ptr<ConvPlan>> plans;
  const bool tf32 = g_allow_tf32 && dtype == DType::Float32;
  const std::string key = fgvc::detail::concat(device, " ", shape_str(xs), " ", shape_str(ws), " stride ", g.stride_h, " ",
                                               g.stride_w, " pad ", g.pad_top, " ", g.pad_left, " dilation ", g.dilation_h,
                                               " ", g.dilation_w, " ", dtype_name(dtype), tf32 ? " tf32" : "",
                                               g_benchmark ? " measured" : "", g_deterministic ? "" : " any");
  std::unique_ptr<ConvPlan>& p = plans[key];
  if (!p) p = std::make_unique<ConvPlan>(xs, ws, ys, g, dtype);
  return *p;
}

// cuDNN's ranked list (heuristic or measured), kept where the algorithm runs with the plan's
// math; `size` gives each one's workspace.
template <class Algo, class Perf, class Rank, class Size>
Choices<Algo> rank_algorithms(const ConvPlan& plan, const char* direction, Rank rank, Size size) {
  std::vector<Perf> perf(32);
  int returned = 0;
  rank(static_cast<int>(perf.size()), &returned, perf.data());
  Choices<Algo> c;
  for (int k = 0; k < returned; ++k)
    if (keeps_math(perf[k], plan.math) && (!g_deterministic || perf[k].determinism == CUDNN_DETERMINISTIC)) {
      size_t bytes = 0;
      size(perf[k].algo, &bytes);
      c.ranked.emplace_back(perf[k].algo, bytes);
    }
  if (c.ranked.empty())
    throw Error(fgvc::detail::concat("conv2d: cuDNN offers no ", direction, " algorithm for x ", plan.d.shapes));
  return c;
}

// cuDNN's measurement (with set_cudnn_benchmark(true)) or its heuristics. The measurement
// allocates its own buffers and workspaces with cudaMalloc, beside fgvc's pool, which keeps
// every freed block: where that fails, the pool's cache goes back to the driver and it
// measures again, and where it fails still (a batch near the device's memory), the shape
// takes cuDNN's heuristic ranking instead of failing a step that runs with it.
template <class Measure, class Heuristic>
void measured_or_heuristic(Measure measure, Heuristic heuristic) {
  if (g_benchmark) {
    cudnnStatus_t status = measure();
    if (status == CUDNN_STATUS_ALLOC_FAILED) {
      cuda_empty_cache();
      status = measure();
    }
    if (status != CUDNN_STATUS_ALLOC_FAILED) {
      FGVC_CUDNN_CHECK(status);
      return;
    }
  }
  FGVC_CUDNN_CHECK(heuristic());
}

// The plan of a shape with its algorithms for one direction (`slot`), ranked on the shape's
// first call by `rank` (heuristic or measured) and `size`, which get the plan's descriptors.
template <class Algo, class Perf, class Rank, class Size>
std::pair<const ConvPlan*, Choices<Algo>*> planned(int device, const Shape& xs, const Shape& ws, const Shape& ys,
                                                   const Conv2dGeometry& g, DType dtype,
                                                   std::optional<Choices<Algo>> ConvPlan::*slot, const char* direction,
                                                   Rank rank, Size size) {
  std::lock_guard<std::mutex> lock(g_plans_mu);
  ConvPlan& p = plan_for(device, xs, ws, ys, g, dtype);
  std::optional<Choices<Algo>>& c = p.*slot;
  if (!c)
    c = rank_algorithms<Algo, Perf>(
        p, direction, [&](int n, int* r, Perf* perf) { rank(p.d, n, r, perf); },
        [&](Algo a, size_t* bytes) { size(p.d, a, bytes); });
  return {&p, &*c};
}

// An algorithm with its workspace allocated.
template <class Algo>
struct Ready {
  Algo algo;
  size_t bytes;
  Tensor workspace;
};

// The algorithm in use and its workspace. Where the workspace cannot be allocated, the next
// in the ranked list is tried (as PyTorch does), and the one that fits stays in use for the
// shape: a failed allocation empties the allocator's cache, too slow to retry on every call.
template <class Algo>
Ready<Algo> with_workspace(Choices<Algo>& c, Device device) {
  size_t k;
  {
    std::lock_guard<std::mutex> lock(g_plans_mu);
    k = c.in_use;
  }
  for (;; ++k) {
    const auto [algo, bytes] = c.ranked[k];  // never changes once ranked
    try {
      Tensor ws = Tensor::empty({static_cast<int64_t>(bytes ? bytes : 1)}, DType::UInt8, device);
      std::lock_guard<std::mutex> lock(g_plans_mu);
      c.in_use = std::max(c.in_use, k);
      return {algo, bytes, ws};
    } catch (const OutOfMemory&) {
      if (k + 1 == c.ranked.size()) throw;
    }
  }
}

// alpha and beta: double for double data, float for the rest (float16/bfloat16 included).
struct Scalars {
  float f1 = 1, f0 = 0;
  double d1 = 1, d0 = 0;
  const void* one(DType t) const { return t == DType::Float64 ? static_cast<const void*>(&d1) : &f1; }
  const void* zero(DType t) const { return t == DType::Float64 ? static_cast<const void*>(&d0) : &f0; }
};

bool symmetric(const Conv2dGeometry& g) { return g.pad_top == g.pad_bottom && g.pad_left == g.pad_right; }

// x zero-padded by the geometry's (possibly asymmetric) padding, and the geometry without it.
Tensor pad_input(const Tensor& x, const Conv2dGeometry& g) {
  Tensor xp = Tensor::zeros({x.size(0), x.size(1), x.size(2) + g.pad_top + g.pad_bottom, x.size(3) + g.pad_left + g.pad_right},
                            x.dtype(), x.device());
  xp.slice(2, g.pad_top, g.pad_top + x.size(2)).slice(3, g.pad_left, g.pad_left + x.size(3)).copy_(x);
  return xp;
}
Conv2dGeometry unpadded(Conv2dGeometry g) {
  g.pad_top = g.pad_bottom = g.pad_left = g.pad_right = 0;
  return g;
}

}  // namespace

void set_cudnn_allow_tf32(bool on) { g_allow_tf32 = on; }
void set_cudnn_benchmark(bool on) { g_benchmark = on; }
void set_cudnn_deterministic(bool on) { g_deterministic = on; }

namespace detail {

Tensor conv2d_cuda(const Tensor& x_in, const Tensor& w, const Conv2dGeometry& g_in, const Shape& y_shape) {
  const Tensor x = symmetric(g_in) ? x_in : pad_input(x_in, g_in);
  const Conv2dGeometry g = symmetric(g_in) ? g_in : unpadded(g_in);
  const int dev = x.device().index;
  cuda::DeviceGuard guard(dev);
  Tensor y = Tensor::empty(y_shape, x.dtype(), x.device());
  cudnnHandle_t h = handle(dev);
  const auto [plan, choices] = planned<cudnnConvolutionFwdAlgo_t, cudnnConvolutionFwdAlgoPerf_t>(
      dev, x.shape(), w.shape(), y_shape, g, x.dtype(), &ConvPlan::forward, "forward",
      [&](const ConvDescriptors& d, int n, int* r, cudnnConvolutionFwdAlgoPerf_t* perf) {
        measured_or_heuristic([&] { return cudnnFindConvolutionForwardAlgorithm(h, d.x, d.w, d.conv, d.y, n, r, perf); },
                              [&] { return cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.conv, d.y, n, r, perf); });
      },
      [&](const ConvDescriptors& d, cudnnConvolutionFwdAlgo_t a, size_t* bytes) {
        FGVC_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.conv, d.y, a, bytes));
      });
  const ConvDescriptors& d = plan->d;
  const Ready<cudnnConvolutionFwdAlgo_t> c = with_workspace(*choices, x.device());
  const Scalars s;
  FGVC_CUDNN_CHECK(cudnnConvolutionForward(h, s.one(x.dtype()), d.x, x.data_ptr(), d.w, w.data_ptr(), d.conv, c.algo,
                                           c.workspace.data_ptr(), c.bytes, s.zero(x.dtype()), d.y, y.data_ptr()));
  return y;
}

Tensor conv2d_backward_input_cuda(const Tensor& grad, const Tensor& w, const Shape& x_shape, const Conv2dGeometry& g_in) {
  const bool sym = symmetric(g_in);
  const Conv2dGeometry g = sym ? g_in : unpadded(g_in);
  const Shape xp_shape = sym ? x_shape
                             : Shape{x_shape[0], x_shape[1], x_shape[2] + g_in.pad_top + g_in.pad_bottom,
                                     x_shape[3] + g_in.pad_left + g_in.pad_right};
  const int dev = grad.device().index;
  cuda::DeviceGuard guard(dev);
  Tensor dx = Tensor::empty(xp_shape, grad.dtype(), grad.device());
  cudnnHandle_t h = handle(dev);
  const auto [plan, choices] = planned<cudnnConvolutionBwdDataAlgo_t, cudnnConvolutionBwdDataAlgoPerf_t>(
      dev, xp_shape, w.shape(), grad.shape(), g, grad.dtype(), &ConvPlan::backward_data, "backward-data",
      [&](const ConvDescriptors& d, int n, int* r, cudnnConvolutionBwdDataAlgoPerf_t* perf) {
        measured_or_heuristic(
            [&] { return cudnnFindConvolutionBackwardDataAlgorithm(h, d.w, d.y, d.conv, d.x, n, r, perf); },
            [&] { return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.conv, d.x, n, r, perf); });
      },
      [&](const ConvDescriptors& d, cudnnConvolutionBwdDataAlgo_t a, size_t* bytes) {
        FGVC_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.conv, d.x, a, bytes));
      });
  const ConvDescriptors& d = plan->d;
  const Ready<cudnnConvolutionBwdDataAlgo_t> c = with_workspace(*choices, grad.device());
  const Scalars s;
  FGVC_CUDNN_CHECK(cudnnConvolutionBackwardData(h, s.one(grad.dtype()), d.w, w.data_ptr(), d.y, grad.data_ptr(), d.conv,
                                                c.algo, c.workspace.data_ptr(), c.bytes, s.zero(grad.dtype()), d.x,
                                                dx.data_ptr()));
  if (sym) return dx;
  return dx.slice(2, g_in.pad_top, g_in.pad_top + x_shape[2]).slice(3, g_in.pad_left, g_in.pad_left + x_shape[3]).contiguous();
}

Tensor conv2d_backward_weight_cuda(const Tensor& grad, const Tensor& x_in, const Shape& w_shape, const Conv2dGeometry& g_in) {
  const Tensor x = symmetric(g_in) ? x_in : pad_input(x_in, g_in);
  const Conv2dGeometry g = symmetric(g_in) ? g_in : unpadded(g_in);
  const int dev = grad.device().index;
  cuda::DeviceGuard guard(dev);
  Tensor dw = Tensor::empty(w_shape, grad.dtype(), grad.device());
  cudnnHandle_t h = handle(dev);
  const auto [plan, choices] = planned<cudnnConvolutionBwdFilterAlgo_t, cudnnConvolutionBwdFilterAlgoPerf_t>(
      dev, x.shape(), w_shape, grad.shape(), g, grad.dtype(), &ConvPlan::backward_filter, "backward-filter",
      [&](const ConvDescriptors& d, int n, int* r, cudnnConvolutionBwdFilterAlgoPerf_t* perf) {
        measured_or_heuristic(
            [&] { return cudnnFindConvolutionBackwardFilterAlgorithm(h, d.x, d.y, d.conv, d.w, n, r, perf); },
            [&] { return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x, d.y, d.conv, d.w, n, r, perf); });
      },
      [&](const ConvDescriptors& d, cudnnConvolutionBwdFilterAlgo_t a, size_t* bytes) {
        FGVC_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x, d.y, d.conv, d.w, a, bytes));
      });
  const ConvDescriptors& d = plan->d;
  const Ready<cudnnConvolutionBwdFilterAlgo_t> c = with_workspace(*choices, grad.device());
  const Scalars s;
  FGVC_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, s.one(grad.dtype()), d.x, x.data_ptr(), d.y, grad.data_ptr(),
                                                  d.conv, c.algo, c.workspace.data_ptr(), c.bytes,
                                                  s.zero(grad.dtype()), d.w, dw.data_ptr()));
  return dw;
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
