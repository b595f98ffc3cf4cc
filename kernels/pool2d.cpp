#include "kernels/pool2d.h"

#include <algorithm>
#include <limits>

#include "tensor/dispatch.h"

namespace fgvc {

int64_t Pool2dGeometry::out_size(int64_t in, bool height) const {
  const int64_t k = height ? kernel_h : kernel_w, s = height ? stride_h : stride_w, p = height ? pad_h : pad_w;
  const int64_t span = in + 2 * p - k;
  int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;  // the last window must start inside the input or left padding
  return out;
}

namespace kernels {
namespace {

struct PoolDims {
  int64_t planes, h, w, ho, wo;
};

PoolDims check(const Tensor& x_like, const Shape& x_shape, const Pool2dGeometry& g, const char* op) {
  FGVC_CHECK(x_shape.size() == 4, op, "needs [N, C, H, W], got ", shape_str(x_shape));
  FGVC_CHECK(x_like.device().is_cpu(), op, "the CUDA pooling (cuDNN) is not built yet; got ", describe(x_like));
  FGVC_CHECK(g.kernel_h > 0 && g.kernel_w > 0 && g.stride_h > 0 && g.stride_w > 0 && g.pad_h >= 0 && g.pad_w >= 0 &&
                 2 * g.pad_h <= g.kernel_h && 2 * g.pad_w <= g.kernel_w,
             op, "bad kernel, stride or padding (padding may be at most half the kernel)");
  PoolDims d{x_shape[0] * x_shape[1], x_shape[2], x_shape[3], g.out_size(x_shape[2], true), g.out_size(x_shape[3], false)};
  FGVC_CHECK(d.ho > 0 && d.wo > 0, op, "input ", shape_str(x_shape), " is smaller than the pooling window");
  return d;
}

// The window of output (oy, ox), clipped to the input, and PyTorch's average divisor.
struct Window {
  int64_t y0, y1, x0, x1, divisor;
};
Window window(int64_t oy, int64_t ox, const PoolDims& d, const Pool2dGeometry& g) {
  int64_t y0 = oy * g.stride_h - g.pad_h, x0 = ox * g.stride_w - g.pad_w;
  int64_t y1 = std::min(y0 + g.kernel_h, d.h + g.pad_h), x1 = std::min(x0 + g.kernel_w, d.w + g.pad_w);
  const int64_t padded = (y1 - y0) * (x1 - x0);
  y0 = std::max<int64_t>(y0, 0), x0 = std::max<int64_t>(x0, 0);
  y1 = std::min(y1, d.h), x1 = std::min(x1, d.w);
  return {y0, y1, x0, x1, g.count_include_pad ? padded : (y1 - y0) * (x1 - x0)};
}

template <class T>
void max_typed(const T* x, const PoolDims& d, const Pool2dGeometry& g, T* y, int64_t* arg) {
#pragma omp parallel for if (d.planes * d.ho * d.wo > (1 << 14)) schedule(static)
  for (int64_t p = 0; p < d.planes; ++p)
    for (int64_t oy = 0; oy < d.ho; ++oy)
      for (int64_t ox = 0; ox < d.wo; ++ox) {
        const Window win = window(oy, ox, d, g);
        T best = -std::numeric_limits<T>::infinity();
        int64_t at = win.y0 * d.w + win.x0;
        for (int64_t iy = win.y0; iy < win.y1; ++iy)
          for (int64_t ix = win.x0; ix < win.x1; ++ix) {
            const T v = x[p * d.h * d.w + iy * d.w + ix];
            if (v > best || v != v) best = v, at = iy * d.w + ix;  // NaN wins, as in PyTorch
          }
        y[(p * d.ho + oy) * d.wo + ox] = best;
        arg[(p * d.ho + oy) * d.wo + ox] = at;
      }
}

template <class T>
void avg_typed(const T* x, const PoolDims& d, const Pool2dGeometry& g, T* y) {
#pragma omp parallel for if (d.planes * d.ho * d.wo > (1 << 14)) schedule(static)
  for (int64_t p = 0; p < d.planes; ++p)
    for (int64_t oy = 0; oy < d.ho; ++oy)
      for (int64_t ox = 0; ox < d.wo; ++ox) {
        const Window win = window(oy, ox, d, g);
        double s = 0;
        for (int64_t iy = win.y0; iy < win.y1; ++iy)
          for (int64_t ix = win.x0; ix < win.x1; ++ix) s += x[p * d.h * d.w + iy * d.w + ix];
        y[(p * d.ho + oy) * d.wo + ox] = static_cast<T>(s / static_cast<double>(win.divisor));
      }
}

template <class T>
void avg_backward_typed(const T* g_out, const PoolDims& d, const Pool2dGeometry& g, T* dx) {
#pragma omp parallel for if (d.planes * d.ho * d.wo > (1 << 14)) schedule(static)
  for (int64_t p = 0; p < d.planes; ++p)  // planes are disjoint: no races
    for (int64_t oy = 0; oy < d.ho; ++oy)
      for (int64_t ox = 0; ox < d.wo; ++ox) {
        const Window win = window(oy, ox, d, g);
        const T share = g_out[(p * d.ho + oy) * d.wo + ox] / static_cast<T>(win.divisor);
        for (int64_t iy = win.y0; iy < win.y1; ++iy)
          for (int64_t ix = win.x0; ix < win.x1; ++ix) dx[p * d.h * d.w + iy * d.w + ix] += share;
      }
}

}  // namespace

MaxPoolOutput max_pool2d(const Tensor& x_in, const Pool2dGeometry& g) {
  FGVC_CHECK(x_in.defined(), "max_pool2d", "undefined tensor");
  const PoolDims d = check(x_in, x_in.shape(), g, "max_pool2d");
  const Tensor x = x_in.contiguous();
  MaxPoolOutput out{Tensor::empty({x.size(0), x.size(1), d.ho, d.wo}, x.dtype()),
                    Tensor::empty({x.size(0), x.size(1), d.ho, d.wo}, DType::Int64)};
  FGVC_DISPATCH_FLOAT(x.dtype(), "max_pool2d", T,
                      max_typed(x.data<T>(), d, g, out.y.data<T>(), out.argmax.data<int64_t>()));
  return out;
}

Tensor max_pool2d_backward(const Tensor& grad_in, const Tensor& argmax, const Shape& x_shape) {
  FGVC_CHECK(grad_in.shape() == argmax.shape() && x_shape.size() == 4, "max_pool2d_backward", "gradient ",
             describe(grad_in), " does not match the pooling indices ", describe(argmax));
  const Tensor grad = grad_in.contiguous();
  Tensor dx = Tensor::zeros(x_shape, grad.dtype());
  const int64_t planes = x_shape[0] * x_shape[1], in_plane = x_shape[2] * x_shape[3];
  const int64_t out_plane = grad.size(2) * grad.size(3);
  FGVC_DISPATCH_FLOAT(grad.dtype(), "max_pool2d_backward", T, {
    const T* g = grad.data<T>();
    const int64_t* a = argmax.data<int64_t>();
    T* o = dx.data<T>();
    for (int64_t p = 0; p < planes; ++p)
      for (int64_t i = 0; i < out_plane; ++i) o[p * in_plane + a[p * out_plane + i]] += g[p * out_plane + i];
  });
  return dx;
}

Tensor avg_pool2d(const Tensor& x_in, const Pool2dGeometry& g) {
  FGVC_CHECK(x_in.defined(), "avg_pool2d", "undefined tensor");
  const PoolDims d = check(x_in, x_in.shape(), g, "avg_pool2d");
  const Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty({x.size(0), x.size(1), d.ho, d.wo}, x.dtype());
  FGVC_DISPATCH_FLOAT(x.dtype(), "avg_pool2d", T, avg_typed(x.data<T>(), d, g, y.data<T>()));
  return y;
}

Tensor avg_pool2d_backward(const Tensor& grad_in, const Shape& x_shape, const Pool2dGeometry& g) {
  const PoolDims d = check(grad_in, x_shape, g, "avg_pool2d_backward");
  FGVC_CHECK(grad_in.shape() == (Shape{x_shape[0], x_shape[1], d.ho, d.wo}), "avg_pool2d_backward", "gradient ",
             describe(grad_in), " does not match the pooled shape");
  const Tensor grad = grad_in.contiguous();
  Tensor dx = Tensor::zeros(x_shape, grad.dtype());
  FGVC_DISPATCH_FLOAT(grad.dtype(), "avg_pool2d_backward", T, avg_backward_typed(grad.data<T>(), d, g, dx.data<T>()));
  return dx;
}

}  // namespace kernels
}  // namespace fgvc
