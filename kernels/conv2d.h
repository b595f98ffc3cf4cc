// 2-D convolution (cross-correlation, as every framework defines it), NCHW, groups = 1, with
// stride, dilation and per-side padding (TensorFlow's asymmetric SAME is padding that differs
// between top/bottom or left/right). CPU: im2col + OpenBLAS GEMM per image, a tile of output
// rows at a time (a 1x1 stride-1 convolution is a GEMM on the input as it is), in conv2d.cpp,
// and Winograd's F(2x2, 3x3) for 3x3 stride-1 ones, in winograd_conv.cpp. CUDA: cuDNN, in
// conv2d_cudnn.cpp (asymmetric padding is applied to the input first).
#pragma once
#include "tensor/tensor.h"

namespace fgvc {

// In namespace fgvc (not kernels) so that argument-dependent lookup of an unqualified
// conv2d(x, w, b, geometry) finds the differentiable fgvc::conv2d only.
struct Conv2dGeometry {
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int dilation_h = 1, dilation_w = 1;

  static Conv2dGeometry symmetric(int stride, int padding, int dilation = 1) {
    return {stride, stride, padding, padding, padding, padding, dilation, dilation};
  }
  int64_t out_size(int64_t in, int64_t kernel, bool height) const {
    const int s = height ? stride_h : stride_w, d = height ? dilation_h : dilation_w;
    const int p = height ? pad_top + pad_bottom : pad_left + pad_right;
    const int64_t span = in + p - d * (kernel - 1) - 1;  // negative: the window is wider than the padded input
    return span < 0 ? 0 : span / s + 1;                  // (C++'s division truncates: -1 / 2 + 1 would be 1)
  }
};

namespace kernels {
using fgvc::Conv2dGeometry;

// x [N, C, H, W], w [O, C, kh, kw], bias [O] or undefined -> [N, O, Ho, Wo].
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dGeometry& g);
// Gradients of conv2d: w.r.t. the input (shape of x), the weight (shape of w) and the bias.
Tensor conv2d_backward_input(const Tensor& grad, const Tensor& w, const Shape& x_shape, const Conv2dGeometry& g);
Tensor conv2d_backward_weight(const Tensor& grad, const Tensor& x, const Shape& w_shape, const Conv2dGeometry& g);

// On (the default): the CPU's 3x3 stride-1 convolutions run by Winograd's F(2x2, 3x3)
// (winograd_conv.h; where it is faster); off: every CPU convolution by im2col + GEMM (for
// comparisons: bench_conv --im2col, the tests).
void set_cpu_winograd(bool on);
bool cpu_winograd_enabled();

// cuDNN may use TF32 tensor cores for float32 (its default math; on by default). Off: exact
// FP32 products, comparable with the CPU to float rounding.
void set_cudnn_allow_tf32(bool on);
// Off (the default): each shape's algorithm is cuDNN's heuristic pick. On: cuDNN times every
// algorithm on the shape's first call and the fastest is kept (PyTorch's cudnn.benchmark);
// the first step of a run is slower, the rest may be faster.
void set_cudnn_benchmark(bool on);
// On (the default): only algorithms cuDNN reports deterministic are taken (some backward
// algorithms add with atomics, so their bits change run to run), as PyTorch's
// cudnn.deterministic; with the pooling gathers and the fixed-order reductions this makes a
// GPU run repeat its bits. Off: any algorithm, ranked as above.
void set_cudnn_deterministic(bool on);

namespace detail {
// CPU: output rows per im2col tile of one image (the GEMM runs tile by tile, in the cache).
int64_t conv2d_tile_rows(const Shape& x_shape, const Shape& w_shape, const Conv2dGeometry& g);
// CUDA implementations (contiguous inputs, checked shapes; no bias).
Tensor conv2d_cuda(const Tensor& x, const Tensor& w, const Conv2dGeometry& g, const Shape& y_shape);
Tensor conv2d_backward_input_cuda(const Tensor& grad, const Tensor& w, const Shape& x_shape, const Conv2dGeometry& g);
Tensor conv2d_backward_weight_cuda(const Tensor& grad, const Tensor& x, const Shape& w_shape, const Conv2dGeometry& g);
}  // namespace detail

}  // namespace kernels
}  // namespace fgvc
