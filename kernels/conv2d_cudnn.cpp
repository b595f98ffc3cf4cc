// CUDA side of kernels/conv2d.h: cuDNN. The algorithm for each shape is chosen once (cuDNN's
// heuristics, the best that runs) and cached; workspaces come from the caching allocator.
// TF32 tensor-core math is allowed by default (cuDNN's default math) and can be switched off
// (set_cudnn_allow_tf32) for bit-for-bit-comparable FP32, as the parity tests do.
#include <cudnn.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <string>
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

bool g_allow_tf32 = true;

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
  std::string key;  // shape and geometry, for the algorithm caches

  ConvDescriptors(const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dGeometry& g, DType dtype) {
    // Data in the tensors' dtype; bfloat16/float16 (mixed precision) accumulate in float32.
    const bool half = dtype == DType::BFloat16 || dtype == DType::Float16;
    const cudnnDataType_t t = dtype == DType::Float64    ? CUDNN_DATA_DOUBLE
                              : dtype == DType::BFloat16 ? CUDNN_DATA_BFLOAT16
                              : dtype == DType::Float16  ? CUDNN_DATA_HALF
                                                         : CUDNN_DATA_FLOAT;
    const cudnnDataType_t compute = half ? CUDNN_DATA_FLOAT : t;
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
    key = fgvc::detail::concat(shape_str(xs), shape_str(ws), g.stride_h, g.stride_w, g.pad_top, g.pad_left, g.dilation_h,
                         g.dilation_w, dtype_name(dtype), tf32);
  }
  ~ConvDescriptors() {
    FGVC_CUDNN_CHECK_NOTHROW(cudnnDestroyTensorDescriptor(x));
    FGVC_CUDNN_CHECK_NOTHROW(cudnnDestroyTensorDescriptor(y));
    FGVC_CUDNN_CHECK_NOTHROW(cudnnDestroyFilterDescriptor(w));
    FGVC_CUDNN_CHECK_NOTHROW(cudnnDestroyConvolutionDescriptor(conv));
  }
  ConvDescriptors(const ConvDescriptors&) = delete;
  ConvDescriptors& operator=(const ConvDescriptors&) = delete;
};

// The first algorithm cuDNN's heuristics rank that reports success, per key.
template <class Algo, class Perf, class Query>
Algo cached_algorithm(const std::string& key, Query query) {
  static std::mutex mu;
  static std::map<std::string, Algo> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  std::vector<Perf> perf(16);
  int returned = 0;
  query(static_cast<int>(perf.size()), &returned, perf.data());
  for (int k = 0; k < returned; ++k)
    if (perf[k].status == CUDNN_STATUS_SUCCESS) return cache[key] = perf[k].algo;
  throw Error("conv2d: cuDNN offers no algorithm for " + key);
}

Tensor workspace(size_t bytes, Device device) {
  return Tensor::empty({static_cast<int64_t>(bytes ? bytes : 1)}, DType::UInt8, device);
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

namespace detail {

Tensor conv2d_cuda(const Tensor& x_in, const Tensor& w, const Conv2dGeometry& g_in, const Shape& y_shape) {
  const Tensor x = symmetric(g_in) ? x_in : pad_input(x_in, g_in);
  const Conv2dGeometry g = symmetric(g_in) ? g_in : unpadded(g_in);
  const int dev = x.device().index;
  cuda::DeviceGuard guard(dev);
  Tensor y = Tensor::empty(y_shape, x.dtype(), x.device());
  ConvDescriptors d(x.shape(), w.shape(), y_shape, g, x.dtype());
  cudnnHandle_t h = handle(dev);
  const auto algo = cached_algorithm<cudnnConvolutionFwdAlgo_t, cudnnConvolutionFwdAlgoPerf_t>(
      "fwd" + d.key, [&](int n, int* r, cudnnConvolutionFwdAlgoPerf_t* p) {
        FGVC_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.conv, d.y, n, r, p));
      });
  size_t bytes = 0;
  FGVC_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.conv, d.y, algo, &bytes));
  Tensor ws = workspace(bytes, x.device());
  const Scalars s;
  FGVC_CUDNN_CHECK(cudnnConvolutionForward(h, s.one(x.dtype()), d.x, x.data_ptr(), d.w, w.data_ptr(), d.conv, algo,
                                           ws.data_ptr(), bytes, s.zero(x.dtype()), d.y, y.data_ptr()));
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
  ConvDescriptors d(xp_shape, w.shape(), grad.shape(), g, grad.dtype());
  cudnnHandle_t h = handle(dev);
  const auto algo = cached_algorithm<cudnnConvolutionBwdDataAlgo_t, cudnnConvolutionBwdDataAlgoPerf_t>(
      "bwd_data" + d.key, [&](int n, int* r, cudnnConvolutionBwdDataAlgoPerf_t* p) {
        FGVC_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.conv, d.x, n, r, p));
      });
  size_t bytes = 0;
  FGVC_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w, d.y, d.conv, d.x, algo, &bytes));
  Tensor ws = workspace(bytes, grad.device());
  const Scalars s;
  FGVC_CUDNN_CHECK(cudnnConvolutionBackwardData(h, s.one(grad.dtype()), d.w, w.data_ptr(), d.y, grad.data_ptr(), d.conv,
                                                algo, ws.data_ptr(), bytes, s.zero(grad.dtype()), d.x, dx.data_ptr()));
  if (sym) return dx;
  return dx.slice(2, g_in.pad_top, g_in.pad_top + x_shape[2]).slice(3, g_in.pad_left, g_in.pad_left + x_shape[3]).contiguous();
}

Tensor conv2d_backward_weight_cuda(const Tensor& grad, const Tensor& x_in, const Shape& w_shape, const Conv2dGeometry& g_in) {
  const Tensor x = symmetric(g_in) ? x_in : pad_input(x_in, g_in);
  const Conv2dGeometry g = symmetric(g_in) ? g_in : unpadded(g_in);
  const int dev = grad.device().index;
  cuda::DeviceGuard guard(dev);
  Tensor dw = Tensor::empty(w_shape, grad.dtype(), grad.device());
  ConvDescriptors d(x.shape(), w_shape, grad.shape(), g, grad.dtype());
  cudnnHandle_t h = handle(dev);
  const auto algo = cached_algorithm<cudnnConvolutionBwdFilterAlgo_t, cudnnConvolutionBwdFilterAlgoPerf_t>(
      "bwd_filter" + d.key, [&](int n, int* r, cudnnConvolutionBwdFilterAlgoPerf_t* p) {
        FGVC_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x, d.y, d.conv, d.w, n, r, p));
      });
  size_t bytes = 0;
  FGVC_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.x, d.y, d.conv, d.w, algo, &bytes));
  Tensor ws = workspace(bytes, grad.device());
  const Scalars s;
  FGVC_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, s.one(grad.dtype()), d.x, x.data_ptr(), d.y, grad.data_ptr(), d.conv,
                                                  algo, ws.data_ptr(), bytes, s.zero(grad.dtype()), d.w, dw.data_ptr()));
  return dw;
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
