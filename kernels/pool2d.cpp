#include "kernels/pool2d.h"

#include "fgvc/config.h"
#include "kernels/pool2d_window.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "tensor/cast.h"
#include "tensor/dispatch.h"
#include "tensor/region_errors.h"

namespace fgvc {

int64_t Pool2dGeometry::out_size(int64_t in, bool height) const {
  const int64_t k = height ? kernel_h : kernel_w, s = height ? stride_h : stride_w, p = height ? pad_h : pad_w;
  // PyTorch's rule, with division rounding down (C++'s truncates: -1 / 2 would be 0, and a
  // window wider than the padded input would make one output): ceil mode rounds up, so a
  // window overhanging the input's end still makes an output.
  const int64_t span = in + 2 * p - k + (ceil_mode ? s - 1 : 0);
  if (span < 0) return 0;
  int64_t out = span / s + 1;
  if (ceil_mode && (out - 1) * s >= in + p) --out;  // the last window must start inside the input or left padding
  return out;
}

namespace kernels {
namespace {

PoolDims check(const Shape& x_shape, const Pool2dGeometry& g, const char* op) {
  FGVC_CHECK(x_shape.size() == 4, op, "needs [N, C, H, W], got ", shape_str(x_shape));
  FGVC_CHECK(g.kernel_h > 0 && g.kernel_w > 0 && g.stride_h > 0 && g.stride_w > 0 && g.pad_h >= 0 && g.pad_w >= 0 &&
                 2 * g.pad_h <= g.kernel_h && 2 * g.pad_w <= g.kernel_w,
             op, "bad kernel, stride or padding (padding may be at most half the kernel)");
  // A plane without pixels has empty windows (no maximum to point at), padding or not, as PyTorch refuses it.
  FGVC_CHECK(x_shape[2] > 0 && x_shape[3] > 0, op, "input ", shape_str(x_shape), " has planes without pixels");
  PoolDims d{x_shape[0] * x_shape[1], x_shape[2], x_shape[3], g.out_size(x_shape[2], true), g.out_size(x_shape[3], false)};
  FGVC_CHECK(d.ho > 0 && d.wo > 0, op, "input ", shape_str(x_shape), " is smaller than the pooling window");
  return d;
}

// Columns of outputs whose windows lie inside the input across: [lo, hi). In a row they
// differ only by a shift, so they are pooled together, one window position at a time across
// the row: independent outputs (no chain of compares through one accumulator, and loops the
// compiler vectorises), each visiting its window in the same order as the one-output loop,
// so the results are the same bits. The other columns (padding, a ceil-mode overhang) take
// the one-output loop.
struct InteriorColumns {
  int64_t lo, hi;
};
InteriorColumns interior_columns(const PoolDims& d, const Pool2dGeometry& g) {
  const int64_t lo = std::min<int64_t>(d.wo, (g.pad_w + g.stride_w - 1) / g.stride_w);  // x0 >= 0
  const int64_t room = d.w + g.pad_w - g.kernel_w;                                       // x0 + kernel <= w
  const int64_t hi = room < 0 ? 0 : std::min<int64_t>(d.wo, room / g.stride_w + 1);
  return {lo, std::max(lo, hi)};
}

// take ? a : b in bit operations: which value wins a max is random on real data, and a branch
// (what the compiler makes of ?: here) would be mispredicted half the time.
template <class V>
inline V pick(bool take, V a, V b) {
  using Bits = std::conditional_t<sizeof(V) == 8, uint64_t, uint32_t>;
  static_assert(sizeof(V) == sizeof(Bits), "pick: 4- or 8-byte values");
  Bits x, y;
  std::memcpy(&x, &a, sizeof x);
  std::memcpy(&y, &b, sizeof y);
  const Bits all = Bits(0) - Bits(take);
  const Bits r = (x & all) | (y & ~all);
  V out;
  std::memcpy(&out, &r, sizeof out);
  return out;
}

// Runs `one(ox)` for every column outside [lo, hi).
template <class F>
void edge_columns(const InteriorColumns& in, int64_t wo, F one) {
  for (int64_t ox = 0; ox < in.lo; ++ox) one(ox);
  for (int64_t ox = in.hi; ox < wo; ++ox) one(ox);
}

// What the pooling of a row of outputs keeps while each window's pixels arrive in order
// (index = the pixel's place in its plane): per output, the maximum and where it was, or the
// sum. One array per field, so that the loop across a row vectorises.
template <class T>
struct MaxRow {
  using C = compute_t<T>;
  std::vector<C> best;
  std::vector<int64_t> at;
  explicit MaxRow(int64_t outputs) : best(static_cast<size_t>(outputs)), at(static_cast<size_t>(outputs)) {}
  void start(int64_t ox, int64_t first) { best[ox] = -std::numeric_limits<C>::infinity(), at[ox] = first; }
  void add(int64_t ox, T pixel, int64_t index) {
    const C v = widen(pixel);
    const bool take = (v > best[ox]) | (v != v);  // NaN wins, as in PyTorch
    best[ox] = pick(take, v, best[ox]);
    at[ox] = pick<int64_t>(take, index, at[ox]);
  }
};
template <class T>
struct SumRow {
  std::vector<double> sum;
  explicit SumRow(int64_t outputs) : sum(static_cast<size_t>(outputs)) {}
  void start(int64_t ox, int64_t) { sum[ox] = 0; }
  void add(int64_t ox, T pixel, int64_t) { sum[ox] += to_double(pixel); }
};

// Pools every output: each window's pixels row by row into a Row's slot, then emit(output
// index, row, ox, window). The interior columns of a row go together, a window position at a
// time.
template <class Row, class T, class Emit>
void pool_rows(const T* x, const PoolDims& d, const Pool2dGeometry& g, Emit emit) {
  const InteriorColumns in = interior_columns(d, g);
  const int64_t sw = g.stride_w;
#pragma omp parallel if (d.planes * d.ho * d.wo > (1 << 14))
  {
    Row row(d.wo);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < d.planes; ++p) {
      const T* xp = x + p * d.h * d.w;
      for (int64_t oy = 0; oy < d.ho; ++oy) {
        const int64_t first_out = (p * d.ho + oy) * d.wo;
        edge_columns(in, d.wo, [&](int64_t ox) {
          const PoolWindow win = pool_window(oy, ox, d, g);
          row.start(ox, win.y0 * d.w + win.x0);
          for (int64_t iy = win.y0; iy < win.y1; ++iy)
            for (int64_t ix = win.x0; ix < win.x1; ++ix) row.add(ox, xp[iy * d.w + ix], iy * d.w + ix);
          emit(first_out + ox, row, ox, win);
        });
        if (in.hi == in.lo) continue;
        // Every interior window spans these rows, has kernel_w columns and this divisor.
        const PoolWindow win = pool_window(oy, in.lo, d, g);
        for (int64_t ox = in.lo; ox < in.hi; ++ox) row.start(ox, win.y0 * d.w + ox * sw - g.pad_w);
        for (int64_t iy = win.y0; iy < win.y1; ++iy)
          for (int64_t kx = 0; kx < g.kernel_w; ++kx) {
            const int64_t base = iy * d.w + kx - g.pad_w;  // output ox reads base + ox * sw
            for (int64_t ox = in.lo; ox < in.hi; ++ox) row.add(ox, xp[base + ox * sw], base + ox * sw);
          }
        for (int64_t ox = in.lo; ox < in.hi; ++ox) emit(first_out + ox, row, ox, win);
      }
    }
  }
}

template <class T>
void max_typed(const T* x, const PoolDims& d, const Pool2dGeometry& g, T* y, int64_t* arg) {
  pool_rows<MaxRow<T>>(x, d, g, [&](int64_t o, const MaxRow<T>& row, int64_t ox, const PoolWindow&) {
    y[o] = narrow<T>(row.best[ox]);
    arg[o] = row.at[ox];
  });
}

template <class T>
void avg_typed(const T* x, const PoolDims& d, const Pool2dGeometry& g, T* y) {
  pool_rows<SumRow<T>>(x, d, g, [&](int64_t o, const SumRow<T>& row, int64_t ox, const PoolWindow& win) {
    y[o] = from_double<T>(row.sum[ox] / static_cast<double>(win.divisor));
  });
}

// The gradient of an average pooling. Each output's share of its gradient is computed once per
// plane; every input pixel then gets the shares of the outputs holding it, added in output
// order, the order of the CUDA gather (pool2d_window.h). With stride 1 across (the models'
// pools), the CPU gathers too, a row at a time for the columns whose outputs all exist (away
// from the padding); with larger strides a pixel has few outputs in irregular ranges, and a
// scatter over the outputs, in order, adds the same values in the same order faster.
template <class T>
void avg_backward_typed(const T* g_out, const PoolDims& d, const Pool2dGeometry& g, T* dx) {
  const bool gather = g.stride_w == 1;
  int64_t lo = 0, hi = 0;  // those columns: outputs ix + pad_w - kernel_w + 1 ... ix + pad_w
  if (gather) {
    lo = std::min<int64_t>(d.w, std::max<int64_t>(0, g.kernel_w - 1 - g.pad_w));
    hi = std::max(lo, std::min<int64_t>(d.w, d.wo - g.pad_w));
  }
  RegionErrors errors;  // a thread's `share` may fail to allocate
#pragma omp parallel if (d.planes * d.h * d.w > (1 << 14))
  {
    std::vector<T> share;  // the scatter divides as it goes
    const bool ready = errors.run([&] { share.resize(gather ? static_cast<size_t>(d.ho * d.wo) : 0); });
#pragma omp for schedule(static)
    for (int64_t p = 0; p < d.planes; ++p) {
      if (!ready) continue;  // every thread still takes its part in the loop; the error follows it
      const T* gp = g_out + p * d.ho * d.wo;
      T* dp = dx + p * d.h * d.w;
      if (!gather) {
        std::fill(dp, dp + d.h * d.w, T(0));
        for (int64_t oy = 0; oy < d.ho; ++oy)
          for (int64_t ox = 0; ox < d.wo; ++ox) {
            const PoolWindow win = pool_window(oy, ox, d, g);
            const T s = gp[oy * d.wo + ox] / static_cast<T>(win.divisor);  // avg_pool_share's
            for (int64_t iy = win.y0; iy < win.y1; ++iy)
              for (int64_t ix = win.x0; ix < win.x1; ++ix) dp[iy * d.w + ix] += s;
          }
        continue;
      }
      for (int64_t oy = 0; oy < d.ho; ++oy)
        for (int64_t ox = 0; ox < d.wo; ++ox) share[oy * d.wo + ox] = avg_pool_share(gp, oy, ox, d, g);
      for (int64_t iy = 0; iy < d.h; ++iy) {
        const CoveringRange rows = covering_outputs(iy, g.kernel_h, g.stride_h, g.pad_h, d.ho);
        T* out = dp + iy * d.w;
        const auto one = [&](int64_t ix) {
          const CoveringRange cols = covering_outputs(ix, g.kernel_w, 1, g.pad_w, d.wo);
          T sum = 0;
          for (int64_t oy = rows.first; oy < rows.end; ++oy)
            for (int64_t ox = cols.first; ox < cols.end; ++ox) sum += share[oy * d.wo + ox];
          out[ix] = sum;
        };
        for (int64_t ix = 0; ix < lo; ++ix) one(ix);
        for (int64_t ix = hi; ix < d.w; ++ix) one(ix);
        if (hi == lo) continue;
        for (int64_t ix = lo; ix < hi; ++ix) out[ix] = 0;
        for (int64_t oy = rows.first; oy < rows.end; ++oy)
          for (int64_t j = 0; j < g.kernel_w; ++j) {
            // Column lo's output j; column ix's is ix - lo further on.
            const T* srow = share.data() + oy * d.wo + (lo + g.pad_w - g.kernel_w + 1) + j;
            for (int64_t ix = lo; ix < hi; ++ix) out[ix] += srow[ix - lo];
          }
      }
    }
  }
  errors.rethrow();
}

// The gradient of a max pooling, scattered to where each maximum was, outputs in order (the
// order the CUDA gather adds them in). An index that is not in its output's window (pooling
// indices of another geometry) is an error; the planes are disjoint, so they go in parallel.
template <class T>
void max_backward_typed(const T* g_out, const int64_t* arg, const PoolDims& d, const Pool2dGeometry& g, T* dx,
                        const Shape& x_shape) {
  std::vector<int64_t> bad(static_cast<size_t>(d.planes), -1);  // per plane, the first output whose index is not
#pragma omp parallel for if (d.planes * d.ho * d.wo > (1 << 14)) schedule(static)
  for (int64_t p = 0; p < d.planes; ++p) {
    const int64_t* ap = arg + p * d.ho * d.wo;
    const T* gp = g_out + p * d.ho * d.wo;
    T* dp = dx + p * d.h * d.w;
    for (int64_t oy = 0; oy < d.ho && bad[p] < 0; ++oy)
      for (int64_t ox = 0; ox < d.wo; ++ox) {
        const int64_t at = ap[oy * d.wo + ox];
        const PoolWindow win = pool_window(oy, ox, d, g);
        const bool in_plane = at >= 0 && at < d.h * d.w;
        const int64_t iy = in_plane ? at / d.w : -1, ix = in_plane ? at % d.w : -1;
        if (!(iy >= win.y0 && iy < win.y1 && ix >= win.x0 && ix < win.x1)) {
          bad[p] = oy * d.wo + ox;
          break;
        }
        dp[at] += gp[oy * d.wo + ox];
      }
  }
  for (int64_t p = 0; p < d.planes; ++p)
    FGVC_CHECK(bad[p] < 0, "max_pool2d_backward", "pooling index ", arg[p * d.ho * d.wo + bad[p]],
               " (output ", bad[p] % d.wo, ", ", bad[p] / d.wo, " of plane ", p, ") is outside its window of the ",
               shape_str(x_shape), " input");
}

}  // namespace

MaxPoolOutput max_pool2d(const Tensor& x_in, const Pool2dGeometry& g) {
  FGVC_CHECK(x_in.defined(), "max_pool2d", "undefined tensor");
  const PoolDims d = check(x_in.shape(), g, "max_pool2d");
  const Tensor x = x_in.contiguous();
  MaxPoolOutput out{Tensor::empty({x.size(0), x.size(1), d.ho, d.wo}, x.dtype(), x.device()),
                    Tensor::empty({x.size(0), x.size(1), d.ho, d.wo}, DType::Int64, x.device())};
  if (x.device().is_cuda()) {
    detail::max_pool2d_cuda(x, d, g, out.y, out.argmax);
    return out;
  }
  FGVC_DISPATCH_FLOATING(x.dtype(), "max_pool2d", T,
                      max_typed(x.data<T>(), d, g, out.y.data<T>(), out.argmax.data<int64_t>()));
  return out;
}

Tensor max_pool2d_backward(const Tensor& grad_in, const Tensor& argmax, const Shape& x_shape, const Pool2dGeometry& g) {
  FGVC_CHECK(grad_in.shape() == argmax.shape() && argmax.dtype() == DType::Int64 && argmax.device() == grad_in.device(),
             "max_pool2d_backward", "gradient ", describe(grad_in), " does not match the pooling indices ",
             describe(argmax));
  const PoolDims d = check(x_shape, g, "max_pool2d_backward");
  FGVC_CHECK(grad_in.shape() == (Shape{x_shape[0], x_shape[1], d.ho, d.wo}), "max_pool2d_backward", "gradient ",
             describe(grad_in), " does not match the input ", shape_str(x_shape), " pooled");
  // 16-bit gradients are added up in float32 and rounded once.
  if (compute_dtype(grad_in.dtype()) != grad_in.dtype())
    return max_pool2d_backward(grad_in.to(compute_dtype(grad_in.dtype())), argmax, x_shape, g).to(grad_in.dtype());
  const Tensor grad = grad_in.contiguous(), arg = argmax.contiguous();
  if (grad.device().is_cuda()) {
    Tensor dx = Tensor::empty(x_shape, grad.dtype(), grad.device());  // the gather writes every pixel
    detail::max_pool2d_backward_cuda(grad, arg, d, g, dx);
    return dx;
  }
  Tensor dx = Tensor::zeros(x_shape, grad.dtype(), grad.device());
  FGVC_DISPATCH_FLOAT(grad.dtype(), "max_pool2d_backward", T,
                      max_backward_typed(grad.data<T>(), arg.data<int64_t>(), d, g, dx.data<T>(), x_shape));
  return dx;
}

Tensor avg_pool2d(const Tensor& x_in, const Pool2dGeometry& g) {
  FGVC_CHECK(x_in.defined(), "avg_pool2d", "undefined tensor");
  const PoolDims d = check(x_in.shape(), g, "avg_pool2d");
  const Tensor x = x_in.contiguous();
  Tensor y = Tensor::empty({x.size(0), x.size(1), d.ho, d.wo}, x.dtype(), x.device());
  if (x.device().is_cuda()) {
    detail::avg_pool2d_cuda(x, d, g, y);
    return y;
  }
  FGVC_DISPATCH_FLOATING(x.dtype(), "avg_pool2d", T, avg_typed(x.data<T>(), d, g, y.data<T>()));
  return y;
}

Tensor avg_pool2d_backward(const Tensor& grad_in, const Shape& x_shape, const Pool2dGeometry& g) {
  const PoolDims d = check(x_shape, g, "avg_pool2d_backward");
  FGVC_CHECK(grad_in.shape() == (Shape{x_shape[0], x_shape[1], d.ho, d.wo}), "avg_pool2d_backward", "gradient ",
             describe(grad_in), " does not match the pooled shape");
  if (compute_dtype(grad_in.dtype()) != grad_in.dtype())  // as in max_pool2d_backward
    return avg_pool2d_backward(grad_in.to(compute_dtype(grad_in.dtype())), x_shape, g).to(grad_in.dtype());
  const Tensor grad = grad_in.contiguous();
  Tensor dx = Tensor::empty(x_shape, grad.dtype(), grad.device());  // the gather writes every pixel
  if (grad.device().is_cuda()) {
    detail::avg_pool2d_backward_cuda(grad, d, g, dx);
    return dx;
  }
  FGVC_DISPATCH_FLOAT(grad.dtype(), "avg_pool2d_backward", T, avg_backward_typed(grad.data<T>(), d, g, dx.data<T>()));
  return dx;
}

#if !FGVC_WITH_CUDA
namespace detail {
void max_pool2d_cuda(const Tensor&, const PoolDims&, const Pool2dGeometry&, const Tensor&, const Tensor&) {
  throw Error("max_pool2d: built without CUDA");
}
void max_pool2d_backward_cuda(const Tensor&, const Tensor&, const PoolDims&, const Pool2dGeometry&, const Tensor&) {
  throw Error("max_pool2d_backward: built without CUDA");
}
void avg_pool2d_cuda(const Tensor&, const PoolDims&, const Pool2dGeometry&, const Tensor&) {
  throw Error("avg_pool2d: built without CUDA");
}
void avg_pool2d_backward_cuda(const Tensor&, const PoolDims&, const Pool2dGeometry&, const Tensor&) {
  throw Error("avg_pool2d_backward: built without CUDA");
}
}  // namespace detail
#endif

}  // namespace kernels
}  // namespace fgvc
