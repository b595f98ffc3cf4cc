// CUDA side of kernels/pool2d.h, over the same windows as the CPU (pool2d_window.h): the
// forward passes one thread per output, the backward passes one thread per input pixel,
// gathering from the outputs whose windows hold it in output order. No atomics: the gradients
// are the CPU's bits, the same run after run (in float32 or float64: kernels/pool2d.cpp takes
// 16-bit gradients through float32).
#include <cmath>

#include "kernels/pool2d_window.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cast.h"
#include "tensor/dispatch.h"

namespace fgvc {
namespace kernels {
namespace detail {

namespace {

#define FGVC_EACH_INDEX(k, n) \
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < (n); k += int64_t(gridDim.x) * blockDim.x)

template <class T>
__global__ void max_kernel(const T* x, PoolDims d, Pool2dGeometry g, T* y, int64_t* arg) {
  FGVC_EACH_INDEX(k, d.planes * d.ho * d.wo) {
    const int64_t p = k / (d.ho * d.wo), oy = k / d.wo % d.ho, ox = k % d.wo;
    const PoolWindow win = pool_window(oy, ox, d, g);
    compute_t<T> best = -INFINITY;
    int64_t at = win.y0 * d.w + win.x0;
    for (int64_t iy = win.y0; iy < win.y1; ++iy)
      for (int64_t ix = win.x0; ix < win.x1; ++ix) {
        const compute_t<T> v = widen(x[p * d.h * d.w + iy * d.w + ix]);
        if (v > best || v != v) best = v, at = iy * d.w + ix;
      }
    y[k] = narrow<T>(best);
    arg[k] = at;
  }
}

template <class T>
__global__ void max_backward_kernel(const T* g_out, const int64_t* arg, PoolDims d, Pool2dGeometry g, T* dx) {
  FGVC_EACH_INDEX(k, d.planes * d.h * d.w) {
    const int64_t p = k / (d.h * d.w), iy = k / d.w % d.h, ix = k % d.w, here = iy * d.w + ix;
    const CoveringRange rows = covering_outputs(iy, g.kernel_h, g.stride_h, g.pad_h, d.ho);
    const CoveringRange cols = covering_outputs(ix, g.kernel_w, g.stride_w, g.pad_w, d.wo);
    const int64_t* ap = arg + p * d.ho * d.wo;
    const T* gp = g_out + p * d.ho * d.wo;
    // An index that is not in its output's window is never gathered (the CPU reference throws
    // on it; the autograd op never passes such indices).
    T sum = 0;
    for (int64_t oy = rows.first; oy < rows.end; ++oy)
      for (int64_t ox = cols.first; ox < cols.end; ++ox)
        if (ap[oy * d.wo + ox] == here) sum += gp[oy * d.wo + ox];
    dx[k] = sum;
  }
}

template <class T>
__global__ void avg_kernel(const T* x, PoolDims d, Pool2dGeometry g, T* y) {
  FGVC_EACH_INDEX(k, d.planes * d.ho * d.wo) {
    const int64_t p = k / (d.ho * d.wo), oy = k / d.wo % d.ho, ox = k % d.wo;
    const PoolWindow win = pool_window(oy, ox, d, g);
    double s = 0;
    for (int64_t iy = win.y0; iy < win.y1; ++iy)
      for (int64_t ix = win.x0; ix < win.x1; ++ix) s += to_double(x[p * d.h * d.w + iy * d.w + ix]);
    y[k] = from_double<T>(s / static_cast<double>(win.divisor));
  }
}

template <class T>
__global__ void avg_backward_kernel(const T* g_out, PoolDims d, Pool2dGeometry g, T* dx) {
  FGVC_EACH_INDEX(k, d.planes * d.h * d.w) {
    const int64_t p = k / (d.h * d.w), iy = k / d.w % d.h, ix = k % d.w;
    const CoveringRange rows = covering_outputs(iy, g.kernel_h, g.stride_h, g.pad_h, d.ho);
    const CoveringRange cols = covering_outputs(ix, g.kernel_w, g.stride_w, g.pad_w, d.wo);
    const T* gp = g_out + p * d.ho * d.wo;
    T sum = 0;
    for (int64_t oy = rows.first; oy < rows.end; ++oy)
      for (int64_t ox = cols.first; ox < cols.end; ++ox) sum += avg_pool_share(gp, oy, ox, d, g);
    dx[k] = sum;
  }
}

}  // namespace

void max_pool2d_cuda(const Tensor& x, const PoolDims& d, const Pool2dGeometry& g, const Tensor& y, const Tensor& argmax) {
  const int dev = x.device().index;
  cuda::DeviceGuard guard(dev);
  FGVC_DISPATCH_FLOATING(x.dtype(), "max_pool2d", T, {
    max_kernel<T><<<cuda::blocks_for(d.planes * d.ho * d.wo), 256, 0, cuda::stream(dev)>>>(
        x.data<T>(), d, g, y.data<T>(), argmax.data<int64_t>());
    FGVC_CHECK_LAUNCH();
  });
}

void max_pool2d_backward_cuda(const Tensor& grad, const Tensor& argmax, const PoolDims& d, const Pool2dGeometry& g,
                              const Tensor& dx) {
  const int dev = grad.device().index;
  cuda::DeviceGuard guard(dev);
  FGVC_DISPATCH_FLOAT(grad.dtype(), "max_pool2d_backward", T, {
    max_backward_kernel<T><<<cuda::blocks_for(d.planes * d.h * d.w), 256, 0, cuda::stream(dev)>>>(
        grad.data<T>(), argmax.data<int64_t>(), d, g, dx.data<T>());
    FGVC_CHECK_LAUNCH();
  });
}

void avg_pool2d_cuda(const Tensor& x, const PoolDims& d, const Pool2dGeometry& g, const Tensor& y) {
  const int dev = x.device().index;
  cuda::DeviceGuard guard(dev);
  FGVC_DISPATCH_FLOATING(x.dtype(), "avg_pool2d", T, {
    avg_kernel<T><<<cuda::blocks_for(d.planes * d.ho * d.wo), 256, 0, cuda::stream(dev)>>>(x.data<T>(), d, g,
                                                                                           y.data<T>());
    FGVC_CHECK_LAUNCH();
  });
}

void avg_pool2d_backward_cuda(const Tensor& grad, const PoolDims& d, const Pool2dGeometry& g, const Tensor& dx) {
  const int dev = grad.device().index;
  cuda::DeviceGuard guard(dev);
  FGVC_DISPATCH_FLOAT(grad.dtype(), "avg_pool2d_backward", T, {
    avg_backward_kernel<T><<<cuda::blocks_for(d.planes * d.h * d.w), 256, 0, cuda::stream(dev)>>>(
        grad.data<T>(), d, g, dx.data<T>());
    FGVC_CHECK_LAUNCH();
  });
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
