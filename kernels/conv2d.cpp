#include "kernels/conv2d.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "fgvc/config.h"
#include "kernels/elementwise.h"
#include "kernels/matmul.h"
#include "kernels/winograd_conv.h"
#include "tensor/dispatch.h"
#include "tensor/region_errors.h"

namespace fgvc {
namespace kernels {

namespace {

std::atomic<bool> cpu_winograd{true};

struct Dims {
  int64_t n, c, h, w, o, kh, kw, ho, wo;
};

Dims check(const Shape& x_shape, const Shape& w_shape, const Conv2dGeometry& g, const char* op) {
  FGVC_CHECK(x_shape.size() == 4 && w_shape.size() == 4, op, "needs x [N, C, H, W] and w [O, C, kh, kw], got ",
             shape_str(x_shape), " and ", shape_str(w_shape));
  FGVC_CHECK(x_shape[1] == w_shape[1], op, "input has ", x_shape[1], " channels, the weight ", shape_str(w_shape),
             " expects ", w_shape[1]);
  FGVC_CHECK(g.stride_h > 0 && g.stride_w > 0 && g.dilation_h > 0 && g.dilation_w > 0 && g.pad_top >= 0 &&
                 g.pad_bottom >= 0 && g.pad_left >= 0 && g.pad_right >= 0,
             op, "bad stride, dilation or padding");
  Dims d{x_shape[0], x_shape[1], x_shape[2], x_shape[3], w_shape[0], w_shape[2], w_shape[3], 0, 0};
  d.ho = g.out_size(d.h, d.kh, true);
  d.wo = g.out_size(d.w, d.kw, false);
  FGVC_CHECK(d.ho > 0 && d.wo > 0, op, "input ", shape_str(x_shape), " is smaller than the kernel ",
             shape_str(w_shape), " with this padding");
  return d;
}

bool is_pointwise(const Dims& d, const Conv2dGeometry& g) {
  return d.kh == 1 && d.kw == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_top == 0 && g.pad_bottom == 0 &&
         g.pad_left == 0 && g.pad_right == 0;
}

// The output columns ox in [lo, hi) whose input column ox * stride + offset lies in [0, w).
std::pair<int64_t, int64_t> inside(int64_t wo, int64_t w, int64_t stride, int64_t offset) {
  const int64_t lo = offset >= 0 ? 0 : std::min(wo, (-offset + stride - 1) / stride);
  const int64_t hi = w - offset <= 0 ? lo : std::max(lo, std::min(wo, (w - offset + stride - 1) / stride));
  return {lo, hi};
}

// Output rows [oy0, oy1) of one image [C, H, W] -> columns [C kh kw, (oy1 - oy0) Wo] (zeros
// where the window is in the padding); row r starts at cols + r * ld (ld >= the row's length:
// several images side by side in one buffer).
template <class T>
void im2col(const T* x, const Dims& d, const Conv2dGeometry& g, T* cols, int64_t ld, int64_t oy0, int64_t oy1) {
#pragma omp parallel for if (d.c * d.kh * d.kw * (oy1 - oy0) * d.wo > (1 << 16)) schedule(static)
  for (int64_t r = 0; r < d.c * d.kh * d.kw; ++r) {
    const int64_t c = r / (d.kh * d.kw), ki = r / d.kw % d.kh, kj = r % d.kw;
    T* out = cols + r * ld;
    for (int64_t oy = oy0; oy < oy1; ++oy) {
      const int64_t iy = oy * g.stride_h - g.pad_top + ki * g.dilation_h;
      T* o = out + (oy - oy0) * d.wo;
      if (iy < 0 || iy >= d.h) {
        std::memset(o, 0, sizeof(T) * d.wo);
        continue;
      }
      // Columns ox in [lo, hi) read inside the row; the rest are padding. No test per element:
      // a stride-1 row is one copy.
      const T* in = x + (c * d.h + iy) * d.w;
      const int64_t offset = kj * g.dilation_w - g.pad_left;  // input column of ox = ox * stride + offset
      const auto [lo, hi] = inside(d.wo, d.w, g.stride_w, offset);
      std::fill(o, o + lo, T(0));
      if (g.stride_w == 1) {
        std::memcpy(o + lo, in + lo + offset, sizeof(T) * (hi - lo));
      } else {
        for (int64_t ox = lo; ox < hi; ++ox) o[ox] = in[ox * g.stride_w + offset];
      }
      std::fill(o + hi, o + d.wo, T(0));
    }
  }
}

// The adjoint of im2col: the columns of output rows [oy0, oy1) (row r at cols + r * ld) are
// added back into the image they came from.
template <class T>
void col2im(const T* cols, const Dims& d, const Conv2dGeometry& g, T* x, int64_t ld, int64_t oy0, int64_t oy1) {
#pragma omp parallel for if (d.c * d.kh * d.kw * (oy1 - oy0) * d.wo > (1 << 16)) schedule(static)
  for (int64_t c = 0; c < d.c; ++c) {  // channels own disjoint output planes: no races
    for (int64_t ki = 0; ki < d.kh; ++ki)
      for (int64_t kj = 0; kj < d.kw; ++kj) {
        const T* in = cols + ((c * d.kh + ki) * d.kw + kj) * ld;
        for (int64_t oy = oy0; oy < oy1; ++oy) {
          const int64_t iy = oy * g.stride_h - g.pad_top + ki * g.dilation_h;
          if (iy < 0 || iy >= d.h) continue;
          T* o = x + (c * d.h + iy) * d.w;
          const T* row = in + (oy - oy0) * d.wo;
          const int64_t offset = kj * g.dilation_w - g.pad_left;
          const auto [lo, hi] = inside(d.wo, d.w, g.stride_w, offset);
          for (int64_t ox = lo; ox < hi; ++ox) o[ox * g.stride_w + offset] += row[ox];
        }
      }
  }
}

// A [rows, cols] view of one image's plane block, for gemm.
Tensor image_matrix(const Tensor& t, int64_t n, int64_t rows, int64_t cols) {
  return t.select(0, n).view({rows, cols});
}

// Images run in parallel, one thread each with its own column buffer and a single-threaded
// GEMM (OpenBLAS's OpenMP build runs serially inside a parallel region), when there are
// enough of them; otherwise one at a time with the GEMM using every thread. OpenBLAS's
// threaded GEMM may round otherwise than its serial one, so an image's last bits can depend
// on the batch it comes in (fewer images than threads or not); a given batch size and thread
// count always give the same bits.
template <class F>
void for_each_image(int64_t n, F f) {
  if (n >= omp_get_max_threads() && n > 1) {
    RegionErrors errors;  // f allocates its column buffer
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) errors.run([&] { f(i); });
    errors.rethrow();
  } else {
    for (int64_t i = 0; i < n; ++i) f(i);
  }
}

// Output rows per column tile. An image's whole column matrix can be tens of MB (Inception's
// 3x3 convolutions on 147 x 147: 25 MB), so the GEMM would stream it from memory after im2col
// wrote it there; tiles of about 2^17 elements (512 KB in float32) are written and read in
// the cache. Tiles stay at least 512 columns wide, so that each GEMM is still a large one.
int64_t tile_rows(const Dims& d) {
  const int64_t k = d.c * d.kh * d.kw;
  const int64_t by_cache = (int64_t(1) << 17) / std::max<int64_t>(1, k * d.wo);
  const int64_t by_width = (512 + d.wo - 1) / d.wo;
  return std::clamp<int64_t>(std::max(by_cache, by_width), 1, d.ho);
}

// Whether a 3x3 stride-1 convolution takes the Winograd path (winograd_conv.h), in each pass.
bool use_winograd(const Dims& d, const Conv2dGeometry& g, DType dtype) {
  return cpu_winograd.load(std::memory_order_relaxed) &&
         detail::winograd_applies({d.n, d.c, d.h, d.w}, {d.o, d.c, d.kh, d.kw}, g, dtype);
}

template <class T>
void im2col_conv2d(const Tensor& x, const Tensor& w, const Dims& d, const Conv2dGeometry& g, Tensor& out) {
  const Tensor w2 = w.view({d.o, d.c * d.kh * d.kw});
  const bool pointwise = is_pointwise(d, g);
  const int64_t rows = tile_rows(d);
  for_each_image(d.n, [&](int64_t n) {
    const Tensor out_n = image_matrix(out, n, d.o, d.ho * d.wo);
    if (pointwise) {
      gemm(w2, false, image_matrix(x, n, d.c, d.h * d.w), false, 1.0, 0.0, out_n);
      return;
    }
    const T* x_n = static_cast<const T*>(x.select(0, n).data_ptr());
    const Tensor cols = Tensor::empty({d.c * d.kh * d.kw, rows * d.wo}, x.dtype(), x.device());
    for (int64_t oy0 = 0; oy0 < d.ho; oy0 += rows) {
      const int64_t oy1 = std::min(d.ho, oy0 + rows), width = (oy1 - oy0) * d.wo;
      im2col(x_n, d, g, static_cast<T*>(cols.data_ptr()), rows * d.wo, oy0, oy1);
      gemm(w2, false, cols.slice(1, 0, width), false, 1.0, 0.0, out_n.slice(1, oy0 * d.wo, oy0 * d.wo + width));
    }
  });
}

template <class T>
Tensor conv2d_typed(const Tensor& x, const Tensor& w, const Tensor& bias, const Dims& d, const Conv2dGeometry& g) {
  Tensor out;
  if (use_winograd(d, g, x.dtype())) {
    out = detail::winograd_conv2d(x, w, g);
  } else {
    out = Tensor::empty({d.n, d.o, d.ho, d.wo}, x.dtype(), x.device());
    im2col_conv2d<T>(x, w, d, g, out);
  }
  if (bias.defined()) {
    T* o = static_cast<T*>(out.data_ptr());
    const T* b = static_cast<const T*>(bias.data_ptr());
#pragma omp parallel for if (out.numel() > (1 << 16)) schedule(static)
    for (int64_t p = 0; p < d.n * d.o; ++p)
      for (int64_t i = 0; i < d.ho * d.wo; ++i) o[p * d.ho * d.wo + i] += b[p % d.o];
  }
  return out;
}

template <class T>
Tensor backward_input_typed(const Tensor& grad, const Tensor& w, const Dims& d, const Conv2dGeometry& g) {
  if (use_winograd(d, g, grad.dtype())) return detail::winograd_backward_input(grad, w, {d.n, d.c, d.h, d.w}, g);
  Tensor dx = Tensor::zeros({d.n, d.c, d.h, d.w}, grad.dtype(), grad.device());
  const Tensor w2 = w.view({d.o, d.c * d.kh * d.kw});
  const bool pointwise = is_pointwise(d, g);
  const int64_t rows = tile_rows(d);
  for_each_image(d.n, [&](int64_t n) {
    const Tensor gn = image_matrix(grad, n, d.o, d.ho * d.wo);
    if (pointwise) {
      gemm(w2, true, gn, false, 1.0, 0.0, image_matrix(dx, n, d.c, d.h * d.w));
      return;
    }
    // Tile by tile as in the forward pass: columns [C kh kw, tile] = W^T g, back into dx.
    T* dx_n = static_cast<T*>(dx.select(0, n).data_ptr());
    const Tensor cols = Tensor::empty({d.c * d.kh * d.kw, rows * d.wo}, grad.dtype(), grad.device());
    for (int64_t oy0 = 0; oy0 < d.ho; oy0 += rows) {
      const int64_t oy1 = std::min(d.ho, oy0 + rows), width = (oy1 - oy0) * d.wo;
      gemm(w2, true, gn.slice(1, oy0 * d.wo, oy0 * d.wo + width), false, 1.0, 0.0, cols.slice(1, 0, width));
      col2im(static_cast<const T*>(cols.data_ptr()), d, g, dx_n, rows * d.wo, oy0, oy1);
    }
  });
  return dx;
}

// dW = sum over images of g_n cols_n^T. Small planes: one GEMM per chunk of images, the
// chunk's columns side by side [C kh kw, nb Ho Wo] and its gradients [O, nb Ho Wo]. Chunks (at
// most 16 M elements of columns) depend on the shapes only, so our summation order does too.
// OpenBLAS may take another kernel for another thread count (OpenBLAS 0.3.21: 32x880 @ 880x144
// differs in the last bits between 1 and 2 threads), so the bits are the same run to run at
// one thread count, not across thread counts; Winograd's weight gradient is (its GEMMs run
// one per thread).
template <class T>
Tensor backward_weight_typed(const Tensor& grad, const Tensor& x, const Dims& d, const Conv2dGeometry& g) {
  if (use_winograd(d, g, x.dtype())) return detail::winograd_backward_weight(grad, x, {d.o, d.c, d.kh, d.kw}, g);
  Tensor dw = Tensor::zeros({d.o, d.c, d.kh, d.kw}, grad.dtype(), grad.device());
  const Tensor dw2 = dw.view({d.o, d.c * d.kh * d.kw});
  const int64_t rows = d.c * d.kh * d.kw, plane = d.ho * d.wo;
  if (rows == 0 || plane == 0) return dw;  // no weight or no output: nothing to sum
  if (is_pointwise(d, g) && plane >= 512) {  // the input is its own column matrix: no copies
    for (int64_t n = 0; n < d.n; ++n)
      gemm(image_matrix(grad, n, d.o, plane), false, image_matrix(x, n, d.c, plane), true, 1.0, 1.0, dw2);
    return dw;
  }
  const int64_t tile = tile_rows(d);
  if (tile < d.ho) {
    // Large planes: image by image, tile by tile, dW += g[:, tile] cols_tile^T with the
    // columns in the cache (the GEMM uses every thread; our order depends on the shapes only).
    const Tensor cols = Tensor::empty({rows, tile * d.wo}, grad.dtype(), grad.device());
    for (int64_t n = 0; n < d.n; ++n) {
      const T* x_n = static_cast<const T*>(x.select(0, n).data_ptr());
      const Tensor gn = image_matrix(grad, n, d.o, plane);
      for (int64_t oy0 = 0; oy0 < d.ho; oy0 += tile) {
        const int64_t oy1 = std::min(d.ho, oy0 + tile), width = (oy1 - oy0) * d.wo;
        im2col(x_n, d, g, static_cast<T*>(cols.data_ptr()), tile * d.wo, oy0, oy1);
        gemm(gn.slice(1, oy0 * d.wo, oy0 * d.wo + width), false, cols.slice(1, 0, width), true, 1.0, 1.0, dw2);
      }
    }
    return dw;
  }
  const int64_t per_chunk = std::max<int64_t>(1, (int64_t(16) << 20) / (rows * plane));
  const T* pg = static_cast<const T*>(grad.data_ptr());
  const T* px = static_cast<const T*>(x.data_ptr());
  for (int64_t n0 = 0; n0 < d.n; n0 += per_chunk) {
    const int64_t nb = std::min(per_chunk, d.n - n0), ld = nb * plane;
    Tensor cols = Tensor::empty({rows, ld}, grad.dtype(), grad.device());
    Tensor gt = Tensor::empty({d.o, ld}, grad.dtype(), grad.device());
    T* pc = static_cast<T*>(cols.data_ptr());
    T* pt = static_cast<T*>(gt.data_ptr());
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < nb; ++i) {
      im2col(px + (n0 + i) * d.c * d.h * d.w, d, g, pc + i * plane, ld, 0, d.ho);  // nothing here throws
      for (int64_t o = 0; o < d.o; ++o)
        std::memcpy(pt + o * ld + i * plane, pg + ((n0 + i) * d.o + o) * plane, sizeof(T) * plane);
    }
    gemm(gt, false, cols, true, 1.0, 1.0, dw2);
  }
  return dw;
}

}  // namespace

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor& bias, const Conv2dGeometry& g) {
  FGVC_CHECK(x_in.defined() && w_in.defined(), "conv2d", "undefined tensor");
  const Dims d = check(x_in.shape(), w_in.shape(), g, "conv2d");
  FGVC_CHECK(x_in.dtype() == w_in.dtype() && x_in.device() == w_in.device(), "conv2d", "input ", describe(x_in),
             " and weight ", describe(w_in), " differ in dtype or device");
  FGVC_CHECK(!bias.defined() || (bias.shape() == Shape{d.o} && bias.dtype() == x_in.dtype()), "conv2d", "bias ",
             describe(bias), " should be [", d.o, "] ", dtype_name(x_in.dtype()));
  FGVC_CHECK(!bias.defined() || bias.device() == x_in.device(), "conv2d", "bias ", describe(bias), " is not on ",
             x_in.device().str());
  const Tensor x = x_in.contiguous(), w = w_in.contiguous(), b = bias.defined() ? bias.contiguous() : bias;
  if (x.device().is_cuda()) {
    FGVC_CHECK(x.dtype() == DType::Float32 || x.dtype() == DType::Float64 || x.dtype() == DType::BFloat16 ||
                   x.dtype() == DType::Float16,
               "conv2d", "needs float32, float64, bfloat16 or float16 on CUDA, got ", describe(x));
    FGVC_CHECK(!b.defined() || x.dtype() == DType::Float32 || x.dtype() == DType::Float64, "conv2d",
               "a bias with 16-bit data is not supported (add it in float32)");
    // cuDNN refuses dimensions of 0; with nothing to add up, the sums are 0 (the CPU's answer).
    const Tensor y = x.numel() == 0 || w.numel() == 0
                         ? Tensor::zeros({d.n, d.o, d.ho, d.wo}, x.dtype(), x.device())
                         : detail::conv2d_cuda(x, w, g, {d.n, d.o, d.ho, d.wo});
    return b.defined() ? add(y, b.view({1, d.o, 1, 1})) : y;
  }
  if (compute_dtype(x.dtype()) != x.dtype()) {
    // As cuDNN does it: 16-bit operands, float32 products and sums, the output rounded once.
    FGVC_CHECK(!b.defined(), "conv2d", "a bias with 16-bit data is not supported (add it in float32)");
    return conv2d(x.to(DType::Float32), w.to(DType::Float32), Tensor(), g).to(x.dtype());
  }
  Tensor out;
  FGVC_DISPATCH_FLOAT(x.dtype(), "conv2d", T, out = conv2d_typed<T>(x, w, b, d, g));
  return out;
}

Tensor conv2d_backward_input(const Tensor& grad, const Tensor& w, const Shape& x_shape, const Conv2dGeometry& g) {
  const Dims d = check(x_shape, w.shape(), g, "conv2d_backward_input");
  FGVC_CHECK(grad.shape() == (Shape{d.n, d.o, d.ho, d.wo}), "conv2d_backward_input", "gradient ", describe(grad),
             " does not match the output [", d.n, ", ", d.o, ", ", d.ho, ", ", d.wo, "]");
  FGVC_CHECK(grad.device() == w.device() && grad.dtype() == w.dtype(), "conv2d_backward_input", "gradient ",
             describe(grad), " and weight ", describe(w), " differ in device or dtype");
  if (grad.device().is_cuda()) {
    if (grad.numel() == 0 || w.numel() == 0 || numel(x_shape) == 0)  // as in conv2d
      return Tensor::zeros(x_shape, grad.dtype(), grad.device());
    return detail::conv2d_backward_input_cuda(grad.contiguous(), w.contiguous(), x_shape, g);
  }
  if (compute_dtype(grad.dtype()) != grad.dtype())  // a 16-bit type: through float32, as in conv2d
    return conv2d_backward_input(grad.to(DType::Float32), w.to(DType::Float32), x_shape, g).to(grad.dtype());
  Tensor out;
  FGVC_DISPATCH_FLOAT(grad.dtype(), "conv2d_backward_input", T,
                      out = backward_input_typed<T>(grad.contiguous(), w.contiguous(), d, g));
  return out;
}

Tensor conv2d_backward_weight(const Tensor& grad, const Tensor& x, const Shape& w_shape, const Conv2dGeometry& g) {
  const Dims d = check(x.shape(), w_shape, g, "conv2d_backward_weight");
  FGVC_CHECK(grad.shape() == (Shape{d.n, d.o, d.ho, d.wo}), "conv2d_backward_weight", "gradient ", describe(grad),
             " does not match the output [", d.n, ", ", d.o, ", ", d.ho, ", ", d.wo, "]");
  FGVC_CHECK(grad.device() == x.device() && grad.dtype() == x.dtype(), "conv2d_backward_weight", "gradient ",
             describe(grad), " and input ", describe(x), " differ in device or dtype");
  if (grad.device().is_cuda()) {
    if (grad.numel() == 0 || x.numel() == 0 || numel(w_shape) == 0)  // as in conv2d
      return Tensor::zeros(w_shape, grad.dtype(), grad.device());
    return detail::conv2d_backward_weight_cuda(grad.contiguous(), x.contiguous(), w_shape, g);
  }
  if (compute_dtype(grad.dtype()) != grad.dtype())  // a 16-bit type: through float32, as in conv2d
    return conv2d_backward_weight(grad.to(DType::Float32), x.to(DType::Float32), w_shape, g).to(grad.dtype());
  Tensor out;
  FGVC_DISPATCH_FLOAT(grad.dtype(), "conv2d_backward_weight", T,
                      out = backward_weight_typed<T>(grad.contiguous(), x.contiguous(), d, g));
  return out;
}

void set_cpu_winograd(bool on) { cpu_winograd.store(on, std::memory_order_relaxed); }
bool cpu_winograd_enabled() { return cpu_winograd.load(std::memory_order_relaxed); }

namespace detail {
int64_t conv2d_tile_rows(const Shape& x_shape, const Shape& w_shape, const Conv2dGeometry& g) {
  return tile_rows(check(x_shape, w_shape, g, "conv2d_tile_rows"));
}
}  // namespace detail

#if !FGVC_WITH_CUDA
void set_cudnn_allow_tf32(bool) {}
void set_cudnn_benchmark(bool) {}
void set_cudnn_deterministic(bool) {}
namespace detail {
Tensor conv2d_cuda(const Tensor&, const Tensor&, const Conv2dGeometry&, const Shape&) {
  throw Error("conv2d: built without CUDA");
}
Tensor conv2d_backward_input_cuda(const Tensor&, const Tensor&, const Shape&, const Conv2dGeometry&) {
  throw Error("conv2d_backward_input: built without CUDA");
}
Tensor conv2d_backward_weight_cuda(const Tensor&, const Tensor&, const Shape&, const Conv2dGeometry&) {
  throw Error("conv2d_backward_weight: built without CUDA");
}
}  // namespace detail
#endif

}  // namespace kernels
}  // namespace fgvc
