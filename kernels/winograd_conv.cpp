#include "kernels/winograd_conv.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "tensor/dispatch.h"
#include "tensor/region_errors.h"

namespace fgvc {
namespace kernels {
namespace detail {

namespace {

// Elements between two of a block's 16 matrices. Matrices a power of two apart put the 16
// values of a tile in one cache set; the transforms ran 2.5x slower on 64-channel blocks.
constexpr int64_t kMatrixGap = 48;

// The tiles of one convolution: `channels` input planes of h x w, read with padding `pad_top`
// and `pad_left`, into ho x wo outputs in tiles of 2 x 2, numbered (image, tile row, tile
// column) in one sequence that blocks cut anywhere.
struct Tiling {
  int64_t h, w, ho, wo, pad_top, pad_left;
  int64_t rows, cols;  // tiles per image, down and across
  int64_t padded() const { return 2 * cols + 2; }  // a padded input row's length
};

Tiling tiling(int64_t h, int64_t w, int64_t ho, int64_t wo, int64_t pad_top, int64_t pad_left) {
  return {h, w, ho, wo, pad_top, pad_left, (ho + 1) / 2, (wo + 1) / 2};
}

// The 16 matrices of a block of tiles: matrix e, row r (a channel), tile t at
// data[e * stride + r * ld + t].
template <class T>
struct Matrices {
  T* data;
  int64_t ld, stride;
};

int64_t matrix_buffer_size(int64_t rows, int64_t ld) { return 16 * (rows * ld + kMatrixGap); }

// A thread's scratch, kept from call to call (OpenMP's threads persist) and grown as needed:
// buffers of a few hundred KB allocated and zeroed afresh on each call took about 15% of a
// 64-channel convolution's time (page faults, memset, in a perf profile). Not cleared when
// reused: every element read is written first (the GEMMs write their outputs with beta 0,
// which OpenBLAS stores without reading). Each thread keeps its largest buffers, a few MB for
// the models' layers (up to tens of MB at in x out = 112,500), until it exits.
enum Scratch { kInputSide, kOutputSide, kRows, kFilters };
template <class T>
T* thread_scratch(Scratch which, int64_t size) {
  thread_local std::vector<T> buffers[4];
  std::vector<T>& b = buffers[which];
  if (static_cast<int64_t>(b.size()) < size) b.resize(static_cast<size_t>(size));
  return b.data();
}

// One thread's buffers for a block of tiles: the 16 matrices on the input side (in rows), the
// 16 on the output side (out rows), and the rows the transforms pad or assemble.
template <class T>
struct BlockBuffers {
  Matrices<T> v, m;
  T* rows;
  BlockBuffers(int64_t in, int64_t out, int64_t block, const Tiling& tl)
      : v{thread_scratch<T>(kInputSide, matrix_buffer_size(in, block)), block, in * block + kMatrixGap},
        m{thread_scratch<T>(kOutputSide, matrix_buffer_size(out, block)), block, out * block + kMatrixGap},
        rows(thread_scratch<T>(kRows, 4 * tl.padded())) {}
};

// Calls f(image, tile row, first tile column, end tile column, position of the first in the
// block) for each tile row that tiles [t0, t1) touch.
template <class F>
void for_each_tile_row(const Tiling& tl, int64_t t0, int64_t t1, F f) {
  for (int64_t row = t0 / tl.cols; row * tl.cols < t1; ++row) {
    const int64_t first = std::max<int64_t>(t0 - row * tl.cols, 0), end = std::min(t1 - row * tl.cols, tl.cols);
    f(row / tl.rows, row % tl.rows, first, end, row * tl.cols + first - t0);
  }
}

// Input row iy of a plane with the padding as zeros: out[j] = plane[iy][j - pad_left], for j
// in [0, padded).
template <class T>
void padded_row(const T* plane, const Tiling& tl, int64_t iy, T* out) {
  const int64_t n = tl.padded();
  std::fill(out, out + n, T(0));
  if (iy < 0 || iy >= tl.h) return;
  const int64_t lo = std::max<int64_t>(0, tl.pad_left), hi = std::min(n, tl.pad_left + tl.w);
  if (hi > lo) std::memcpy(out + lo, plane + iy * tl.w + (lo - tl.pad_left), sizeof(T) * (hi - lo));
}

// V = B^T d B for tiles [t0, t1) of the planes x [images, channels, h, w], into v (tile t0 at
// column 0). `rows` holds 4 padded rows.
template <class T>
void transform_input(const T* x, int64_t channels, const Tiling& tl, int64_t t0, int64_t t1, Matrices<T> v, T* rows) {
  const int64_t pw = tl.padded();
  for (int64_t c = 0; c < channels; ++c)
    for_each_tile_row(tl, t0, t1, [&](int64_t n, int64_t ty, int64_t first, int64_t end, int64_t at) {
      const T* plane = x + (n * channels + c) * tl.h * tl.w;
      for (int i = 0; i < 4; ++i) padded_row(plane, tl, 2 * ty - tl.pad_top + i, rows + i * pw);
      const T *r0 = rows, *r1 = rows + pw, *r2 = rows + 2 * pw, *r3 = rows + 3 * pw;
      T* out = v.data + c * v.ld + at;  // tile tx at out[... + tx - first]
      const int64_t s = v.stride;
#pragma omp simd
      for (int64_t tx = first; tx < end; ++tx) {
        const int64_t o = tx - first;
        T b[4][4];  // B^T d: the rows combined
        for (int j = 0; j < 4; ++j) {
          const T d0 = r0[2 * tx + j], d1 = r1[2 * tx + j], d2 = r2[2 * tx + j], d3 = r3[2 * tx + j];
          b[0][j] = d0 - d2, b[1][j] = d1 + d2, b[2][j] = d2 - d1, b[3][j] = d1 - d3;
        }
        for (int i = 0; i < 4; ++i) {  // (B^T d) B: the columns combined
          out[(4 * i + 0) * s + o] = b[i][0] - b[i][2];
          out[(4 * i + 1) * s + o] = b[i][1] + b[i][2];
          out[(4 * i + 2) * s + o] = b[i][2] - b[i][1];
          out[(4 * i + 3) * s + o] = b[i][1] - b[i][3];
        }
      }
    });
}

// Y = A^T M A for tiles [t0, t1), into y [images, channels, ho, wo]; `rows` holds 2 rows of
// 2 x cols outputs.
template <class T>
void transform_output(Matrices<T> m, int64_t channels, const Tiling& tl, int64_t t0, int64_t t1, T* y, T* rows) {
  for (int64_t k = 0; k < channels; ++k)
    for_each_tile_row(tl, t0, t1, [&](int64_t n, int64_t ty, int64_t first, int64_t end, int64_t at) {
      const T* in = m.data + k * m.ld + at;  // tile tx at in[... + tx - first]
      const int64_t s = m.stride;
      T *o0 = rows, *o1 = rows + 2 * tl.cols;
#pragma omp simd
      for (int64_t tx = first; tx < end; ++tx) {
        const int64_t i = tx - first;
        T a[2][4];  // A^T M: the rows combined
        for (int j = 0; j < 4; ++j) {
          a[0][j] = in[j * s + i] + in[(4 + j) * s + i] + in[(8 + j) * s + i];
          a[1][j] = in[(4 + j) * s + i] - in[(8 + j) * s + i] - in[(12 + j) * s + i];
        }
        o0[2 * tx] = a[0][0] + a[0][1] + a[0][2], o0[2 * tx + 1] = a[0][1] - a[0][2] - a[0][3];
        o1[2 * tx] = a[1][0] + a[1][1] + a[1][2], o1[2 * tx + 1] = a[1][1] - a[1][2] - a[1][3];
      }
      // The last tile of an odd size has an output row or column beyond it: not stored.
      T* plane = y + (n * channels + k) * tl.ho * tl.wo;
      const int64_t x0 = 2 * first, x1 = std::min(tl.wo, 2 * end);
      std::memcpy(plane + 2 * ty * tl.wo + x0, o0 + x0, sizeof(T) * (x1 - x0));
      if (2 * ty + 1 < tl.ho) std::memcpy(plane + (2 * ty + 1) * tl.wo + x0, o1 + x0, sizeof(T) * (x1 - x0));
    });
}

// dM = A dY A^T for tiles [t0, t1) of the output gradient dy [images, channels, ho, wo] (zeros
// beyond it), into dm.
template <class T>
void transform_output_gradient(const T* dy, int64_t channels, const Tiling& tl, int64_t t0, int64_t t1, Matrices<T> dm,
                               T* rows) {
  const int64_t width = 2 * tl.cols;
  for (int64_t k = 0; k < channels; ++k)
    for_each_tile_row(tl, t0, t1, [&](int64_t n, int64_t ty, int64_t first, int64_t end, int64_t at) {
      const T* plane = dy + (n * channels + k) * tl.ho * tl.wo;
      T *g0 = rows, *g1 = rows + width;
      std::fill(rows, rows + 2 * width, T(0));
      std::memcpy(g0, plane + 2 * ty * tl.wo, sizeof(T) * tl.wo);
      if (2 * ty + 1 < tl.ho) std::memcpy(g1, plane + (2 * ty + 1) * tl.wo, sizeof(T) * tl.wo);
      T* out = dm.data + k * dm.ld + at;  // tile tx at out[... + tx - first]
      const int64_t s = dm.stride;
#pragma omp simd
      for (int64_t tx = first; tx < end; ++tx) {
        const int64_t o = tx - first;
        // Per axis (y0, y1) -> (y0, y0 + y1, y0 - y1, -y1), A's rows.
        const T a00 = g0[2 * tx], a01 = g0[2 * tx + 1], a10 = g1[2 * tx], a11 = g1[2 * tx + 1];
        const T r[4][2] = {{a00, a01}, {a00 + a10, a01 + a11}, {a00 - a10, a01 - a11}, {-a10, -a11}};
        for (int i = 0; i < 4; ++i) {
          out[(4 * i + 0) * s + o] = r[i][0];
          out[(4 * i + 1) * s + o] = r[i][0] + r[i][1];
          out[(4 * i + 2) * s + o] = r[i][0] - r[i][1];
          out[(4 * i + 3) * s + o] = -r[i][1];
        }
      }
    });
}

// U = G g G^T for every filter of w [out, in, 3, 3] into u: matrix e, row o, column i. With
// `flip`, the input gradient's filters instead: w'[i][o] = w[o][i] rotated by 180 degrees, so
// row i, column o.
template <class T>
void transform_filters(const T* w, int64_t out, int64_t in, bool flip, T* u) {
  const int64_t rows = flip ? in : out, cols = flip ? out : in;
#pragma omp parallel for if (out * in > 4096) schedule(static)
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      const T* f = w + (o * in + i) * 9;
      T g[3][3];
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) g[a][b] = flip ? f[(2 - a) * 3 + (2 - b)] : f[a * 3 + b];
      T t[4][3];  // G g
      for (int b = 0; b < 3; ++b) {
        t[0][b] = g[0][b];
        t[1][b] = T(0.5) * (g[0][b] + g[1][b] + g[2][b]);
        t[2][b] = T(0.5) * (g[0][b] - g[1][b] + g[2][b]);
        t[3][b] = g[2][b];
      }
      const int64_t at = flip ? i * cols + o : o * cols + i;
      for (int a = 0; a < 4; ++a) {  // (G g) G^T
        const T row[4] = {t[a][0], T(0.5) * (t[a][0] + t[a][1] + t[a][2]), T(0.5) * (t[a][0] - t[a][1] + t[a][2]),
                          t[a][2]};
        for (int b = 0; b < 4; ++b) u[(4 * a + b) * rows * cols + at] = row[b];
      }
    }
}

// dg = G^T dU G: the adjoint of transform_filters (without flip), into dw [out, in, 3, 3].
template <class T>
void filter_gradients(const T* du, int64_t out, int64_t in, T* dw) {
#pragma omp parallel for if (out * in > 4096) schedule(static)
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      T d[4][4];
      for (int e = 0; e < 16; ++e) d[e / 4][e % 4] = du[e * out * in + o * in + i];
      // Per axis (u0, u1, u2, u3) -> (u0 + (u1 + u2) / 2, (u1 - u2) / 2, (u1 + u2) / 2 + u3), G's columns.
      T t[3][4];
      for (int b = 0; b < 4; ++b) {
        t[0][b] = d[0][b] + T(0.5) * (d[1][b] + d[2][b]);
        t[1][b] = T(0.5) * (d[1][b] - d[2][b]);
        t[2][b] = T(0.5) * (d[1][b] + d[2][b]) + d[3][b];
      }
      T* g = dw + (o * in + i) * 9;
      for (int a = 0; a < 3; ++a) {
        g[a * 3 + 0] = t[a][0] + T(0.5) * (t[a][1] + t[a][2]);
        g[a * 3 + 1] = T(0.5) * (t[a][1] - t[a][2]);
        g[a * 3 + 2] = T(0.5) * (t[a][1] + t[a][2]) + t[a][3];
      }
    }
}

// c = alpha a b + beta c, row-major, through OpenBLAS (serial inside an OpenMP parallel region).
void blas_gemm(bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
               float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, lda, b, ldb, beta, c,
              ldc);
}
void blas_gemm(bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
               int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0, a, lda, b, ldb, beta, c,
              ldc);
}

// y [images, out, ho, wo] = the convolution of x [images, in, h, w] with the transformed
// filters u (16 matrices [out, in]). Blocks of tiles run in parallel, each through its 16
// GEMMs on one thread; each output comes from one block's GEMM, so the result does not
// depend on the number of threads. The parallel region is entered even for one block: outside
// one, OpenBLAS would split a GEMM over its own threads, and how it splits changes the bits on
// some CPUs (200 x 200 x 72 on an AVX-512 EPYC).
template <class T>
void convolve(const T* x, int64_t images, int64_t in, const Tiling& tl, const T* u, int64_t out, T* y) {
  const int64_t block = winograd_tile_block(in, out), tiles = images * tl.rows * tl.cols;
  const int64_t blocks = (tiles + block - 1) / block;
  RegionErrors errors;  // a thread's buffers may fail to grow
#pragma omp parallel
  {
    std::optional<BlockBuffers<T>> buf;
    errors.run([&] { buf.emplace(in, out, block, tl); });
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      if (!buf) continue;  // every thread still takes its part in the loop; the error follows it
      const Matrices<T>& v = buf->v;
      const Matrices<T>& m = buf->m;
      const int64_t t0 = b * block, t1 = std::min(tiles, t0 + block);
      transform_input(x, in, tl, t0, t1, v, buf->rows);
      for (int e = 0; e < 16; ++e)
        blas_gemm(false, out, t1 - t0, in, u + e * out * in, in, v.data + e * v.stride, v.ld, T(0), m.data + e * m.stride,
                  m.ld);
      transform_output(m, out, tl, t0, t1, y, buf->rows);
    }
  }
  errors.rethrow();
}

template <class T>
void forward_typed(const Tensor& x, const Tensor& w, const Conv2dGeometry& g, Tensor& y) {
  const int64_t n = x.size(0), in = x.size(1), out = w.size(0);
  T* u = thread_scratch<T>(kFilters, 16 * out * in);  // read by the parallel region's threads
  transform_filters(static_cast<const T*>(w.data_ptr()), out, in, false, u);
  const Tiling tl = tiling(x.size(2), x.size(3), y.size(2), y.size(3), g.pad_top, g.pad_left);
  convolve(static_cast<const T*>(x.data_ptr()), n, in, tl, u, out, static_cast<T*>(y.data_ptr()));
}

template <class T>
void backward_input_typed(const Tensor& grad, const Tensor& w, const Conv2dGeometry& g, Tensor& dx) {
  const int64_t n = grad.size(0), out = w.size(0), in = w.size(1);
  T* u = thread_scratch<T>(kFilters, 16 * out * in);
  transform_filters(static_cast<const T*>(w.data_ptr()), out, in, true, u);
  // The gradient [n, out, ho, wo] padded by 2 - p, convolved into dx [n, in, h, w].
  const Tiling tl = tiling(grad.size(2), grad.size(3), dx.size(2), dx.size(3), 2 - g.pad_top, 2 - g.pad_left);
  convolve(static_cast<const T*>(grad.data_ptr()), n, out, tl, u, in, static_cast<T*>(dx.data_ptr()));
}

// dU[e] = sum over tiles of dM[e] V[e]^T. The blocks are split into a fixed number of runs
// (from the shapes: at most 16, and at most 32 MB of partial sums), each run's sum computed
// on one thread, block after block (small GEMMs, as the forward pass's), and the runs' sums
// added in order: the same bits whatever the number of threads (a parallel region even for one
// run, as in convolve).
template <class T>
void backward_weight_typed(const Tensor& grad, const Tensor& x, const Conv2dGeometry& g, Tensor& dw) {
  const int64_t n = x.size(0), in = x.size(1), out = grad.size(1);
  const Tiling tl = tiling(x.size(2), x.size(3), grad.size(2), grad.size(3), g.pad_top, g.pad_left);
  // Here the tiles are the GEMMs' inner dimension, and each block's GEMMs add into all of dU:
  // blocks of 64 to 512 tiles (about 2 MB of float32 transforms) keep that traffic small
  // (the fastest of 8192 to 65536 / (in + out) on resnet50 and inception_v3 shapes, bench_conv).
  const int64_t tiles = n * tl.rows * tl.cols, block = std::clamp<int64_t>(32768 / (in + out), 64, 512);
  const int64_t blocks = (tiles + block - 1) / block, sums_size = 16 * out * in;
  if (tiles == 0) {  // an empty batch
    std::fill_n(static_cast<T*>(dw.data_ptr()), dw.numel(), T(0));
    return;
  }
  const int64_t by_memory = (int64_t(32) << 20) / (sums_size * static_cast<int64_t>(sizeof(T)));
  const int64_t runs = std::clamp<int64_t>(std::min<int64_t>(16, by_memory), 1, blocks);
  std::vector<T> sums(static_cast<size_t>(runs * sums_size), T(0));
  const T* px = static_cast<const T*>(x.data_ptr());
  const T* pg = static_cast<const T*>(grad.data_ptr());
  RegionErrors errors;  // as in convolve
#pragma omp parallel
  {
    std::optional<BlockBuffers<T>> buf;
    errors.run([&] { buf.emplace(in, out, block, tl); });
#pragma omp for schedule(static)
    for (int64_t r = 0; r < runs; ++r) {
      if (!buf) continue;
      const Matrices<T>& v = buf->v;
      const Matrices<T>& dm = buf->m;
      T* du = sums.data() + r * sums_size;
      for (int64_t b = r * blocks / runs; b < (r + 1) * blocks / runs; ++b) {
        const int64_t t0 = b * block, t1 = std::min(tiles, t0 + block);
        transform_input(px, in, tl, t0, t1, v, buf->rows);
        transform_output_gradient(pg, out, tl, t0, t1, dm, buf->rows);
        for (int e = 0; e < 16; ++e)
          blas_gemm(true, out, in, t1 - t0, dm.data + e * dm.stride, dm.ld, v.data + e * v.stride, v.ld, T(1),
                    du + e * out * in, in);
      }
    }
  }
  errors.rethrow();
  T* du = sums.data();
#pragma omp parallel for if (sums_size > 65536) schedule(static)
  for (int64_t i = 0; i < sums_size; ++i)
    for (int64_t r = 1; r < runs; ++r) du[i] += sums[r * sums_size + i];
  filter_gradients(du, out, in, static_cast<T*>(dw.data_ptr()));
}

}  // namespace

int64_t winograd_tile_block(int64_t in, int64_t out) {
  const int64_t block = std::min<int64_t>(64, 900000 / std::max<int64_t>(1, in * out));
  return block >= 8 ? block : 0;
}

bool winograd_applies(const Shape& x_shape, const Shape& w_shape, const Conv2dGeometry& g, DType dtype) {
  if (dtype != DType::Float32 && dtype != DType::Float64) return false;
  if (x_shape.size() != 4 || w_shape.size() != 4 || w_shape[2] != 3 || w_shape[3] != 3) return false;
  if (w_shape[0] <= 0 || w_shape[1] <= 0) return false;  // no channels: nothing to transform
  if (g.stride_h != 1 || g.stride_w != 1 || g.dilation_h != 1 || g.dilation_w != 1) return false;
  for (const int p : {g.pad_top, g.pad_bottom, g.pad_left, g.pad_right})
    if (p < 0 || p > 2) return false;
  return winograd_tile_block(w_shape[1], w_shape[0]) > 0;
}

Tensor winograd_conv2d(const Tensor& x, const Tensor& w, const Conv2dGeometry& g) {
  const Shape& s = x.shape();
  Tensor y = Tensor::empty({s[0], w.size(0), g.out_size(s[2], 3, true), g.out_size(s[3], 3, false)}, x.dtype(),
                           x.device());
  FGVC_DISPATCH_FLOAT(x.dtype(), "winograd_conv2d", T, forward_typed<T>(x, w, g, y));
  return y;
}

Tensor winograd_backward_input(const Tensor& grad, const Tensor& w, const Shape& x_shape, const Conv2dGeometry& g) {
  Tensor dx = Tensor::empty(x_shape, grad.dtype(), grad.device());
  FGVC_DISPATCH_FLOAT(grad.dtype(), "winograd_backward_input", T, backward_input_typed<T>(grad, w, g, dx));
  return dx;
}

Tensor winograd_backward_weight(const Tensor& grad, const Tensor& x, const Shape& w_shape, const Conv2dGeometry& g) {
  Tensor dw = Tensor::empty(w_shape, grad.dtype(), grad.device());
  FGVC_DISPATCH_FLOAT(grad.dtype(), "winograd_backward_weight", T, backward_weight_typed<T>(grad, x, g, dw));
  return dw;
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
