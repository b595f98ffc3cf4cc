// The pooling window of one output and PyTorch's average divisor, shared by pool2d.cpp and
// pool2d.cu so that both devices pool exactly the same pixels.
#pragma once
#include <cstdint>

#include "kernels/pool2d.h"
#include "tensor/macros.h"

namespace fgvc {
namespace kernels {

struct PoolDims {
  int64_t planes, h, w, ho, wo;
};

struct PoolWindow {
  int64_t y0, y1, x0, x1, divisor;
};

FGVC_HD inline PoolWindow pool_window(int64_t oy, int64_t ox, const PoolDims& d, const Pool2dGeometry& g) {
  int64_t y0 = oy * g.stride_h - g.pad_h, x0 = ox * g.stride_w - g.pad_w;
  int64_t y1 = y0 + g.kernel_h < d.h + g.pad_h ? y0 + g.kernel_h : d.h + g.pad_h;
  int64_t x1 = x0 + g.kernel_w < d.w + g.pad_w ? x0 + g.kernel_w : d.w + g.pad_w;
  const int64_t padded = (y1 - y0) * (x1 - x0);
  y0 = y0 > 0 ? y0 : 0, x0 = x0 > 0 ? x0 : 0;
  y1 = y1 < d.h ? y1 : d.h, x1 = x1 < d.w ? x1 : d.w;
  return {y0, y1, x0, x1, g.count_include_pad ? padded : (y1 - y0) * (x1 - x0)};
}

// The outputs whose windows hold input pixel i along one axis: [first, end). A window is
// clipped only where it meets the padding, so it holds every input pixel in its span.
struct CoveringRange {
  int64_t first, end;
};
FGVC_HD inline CoveringRange covering_outputs(int64_t i, int64_t kernel, int64_t stride, int64_t pad, int64_t outputs) {
  const int64_t lowest = i + pad - kernel + 1;  // the first output starts at or after this
  const int64_t first = lowest <= 0 ? 0 : (lowest + stride - 1) / stride;
  const int64_t end = (i + pad) / stride + 1;
  return {first, end < outputs ? end : outputs};
}

// The backward passes gather: each input pixel adds up what the outputs whose windows hold it
// send it, in output order (row by row), which is the order a scatter over the outputs would
// add them in. CPU and CUDA give the same bits, run after run, without atomics.
template <class T>
FGVC_HD inline T avg_pool_share(const T* g_plane, int64_t oy, int64_t ox, const PoolDims& d, const Pool2dGeometry& g) {
  return g_plane[oy * d.wo + ox] / static_cast<T>(pool_window(oy, ox, d, g).divisor);
}

namespace detail {
// CUDA implementations (pool2d.cu); x and grad contiguous.
void max_pool2d_cuda(const Tensor& x, const PoolDims& d, const Pool2dGeometry& g, const Tensor& y, const Tensor& argmax);
void max_pool2d_backward_cuda(const Tensor& grad, const Tensor& argmax, const PoolDims& d, const Pool2dGeometry& g,
                              const Tensor& dx);
void avg_pool2d_cuda(const Tensor& x, const PoolDims& d, const Pool2dGeometry& g, const Tensor& y);
void avg_pool2d_backward_cuda(const Tensor& grad, const PoolDims& d, const Pool2dGeometry& g, const Tensor& dx);
}  // namespace detail

}  // namespace kernels
}  // namespace fgvc
