// Max and average pooling over H, W of NCHW tensors, with stride, symmetric padding, ceil
// mode and (average) count_include_pad as PyTorch defines them; the layouts of the
// reference models depend on these details. CPU loops in pool2d.cpp, CUDA kernels in
// pool2d.cu, over the same windows (pool2d_window.h).
#pragma once
#include "tensor/tensor.h"

namespace fgvc {

// In namespace fgvc for the same reason as Conv2dGeometry (kernels/conv2d.h).
struct Pool2dGeometry {
  int kernel_h = 2, kernel_w = 2, stride_h = 2, stride_w = 2, pad_h = 0, pad_w = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;  // average pooling: padding counts in the divisor

  static Pool2dGeometry square(int kernel, int stride, int padding = 0, bool ceil_mode = false,
                               bool count_include_pad = true) {
    return {kernel, kernel, stride, stride, padding, padding, ceil_mode, count_include_pad};
  }
  int64_t out_size(int64_t in, bool height) const;
};

namespace kernels {
using fgvc::Pool2dGeometry;

struct MaxPoolOutput {
  Tensor y;
  Tensor argmax;  // int64, index of the maximum within its input plane (H W)
};

MaxPoolOutput max_pool2d(const Tensor& x, const Pool2dGeometry& g);
Tensor max_pool2d_backward(const Tensor& grad, const Tensor& argmax, const Shape& x_shape, const Pool2dGeometry& g);
Tensor avg_pool2d(const Tensor& x, const Pool2dGeometry& g);
Tensor avg_pool2d_backward(const Tensor& grad, const Shape& x_shape, const Pool2dGeometry& g);

}  // namespace kernels
}  // namespace fgvc
