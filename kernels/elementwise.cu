// CUDA side of kernels/elementwise.h, over the shared formulas of elementwise_ops.h:
// contiguous operands in 16-byte packs (tensor/packed.cuh); a bias-like operand repeated over
// a contiguous one (index (i / inner) % mid, by multiplication: kernels/fast_divmod.h); and
// the general strided/broadcast path, which pays a 64-bit division per dimension per element.
#include <limits>

#include "kernels/elementwise.h"
#include "kernels/elementwise_ops.h"
#include "kernels/fast_divmod.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/dispatch.h"
#include "tensor/indexing.h"
#include "tensor/packed.cuh"

namespace fgvc {
namespace kernels {
namespace detail {

namespace {

using fgvc::detail::map1_packed;
using fgvc::detail::map2_packed;
using fgvc::detail::packable;
using fgvc::detail::packed_blocks;

#define FGVC_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

template <UnaryOp op>
struct Unary {
  template <class T>
  __device__ T operator()(int64_t, T x) const { return narrow<T>(unary_fn<op>(widen(x))); }
};

template <BinaryOp op>
struct Binary {
  template <class T>
  __device__ T operator()(T a, T b) const { return narrow<T>(binary_fn<op>(widen(a), widen(b))); }
};

template <BinaryOp op, class T>
struct BinaryScalar {
  compute_t<T> b;
  __device__ T operator()(int64_t, T a) const { return narrow<T>(binary_fn<op>(widen(a), b)); }
};

// The other operand of a bias-like broadcast: element (i / inner) % mid of `values`, on the
// left of the op or on its right.
template <BinaryOp op, class T, bool kRepeatedFirst>
struct BinaryRepeated {
  const T* values;
  FastDivmod inner, mid;
  __device__ T operator()(int64_t i, T full) const {
    const auto r = widen(values[mid.mod(inner.div(static_cast<uint32_t>(i)))]), f = widen(full);
    return narrow<T>(kRepeatedFirst ? binary_fn<op>(r, f) : binary_fn<op>(f, r));
  }
};

template <UnaryOp op, class T>
__global__ void unary_strided(T* out, const T* x, IndexMap<2> map, int64_t n) {
  FGVC_GRID_STRIDE(i, n) {
    int64_t off[2];
    map.offsets(i, off);
    out[off[0]] = narrow<T>(unary_fn<op>(widen(x[off[1]])));
  }
}

template <BinaryOp op, class T>
__global__ void binary_strided(T* out, const T* a, const T* b, IndexMap<3> map, int64_t n) {
  FGVC_GRID_STRIDE(i, n) {
    int64_t off[3];
    map.offsets(i, off);
    out[off[0]] = narrow<T>(binary_fn<op>(widen(a[off[1]]), widen(b[off[2]])));
  }
}

template <BinaryOp op, class T>
__global__ void binary_scalar_strided(T* out, const T* a, compute_t<T> b, IndexMap<2> map, int64_t n) {
  FGVC_GRID_STRIDE(i, n) {
    int64_t off[2];
    map.offsets(i, off);
    out[off[0]] = narrow<T>(binary_fn<op>(widen(a[off[1]]), b));
  }
}

// Whether `s` (an operand's strides, broadcast to `out`) reads one contiguous block of out's
// dimensions [d0, d1) and repeats it over the others (a bias [C] over [N, C], a per-channel
// [C, 1, 1] over [N, C, H, W]): then the operand's index is (i / inner) % mid, with inner the
// elements after the block and mid the block's. Indices must fit 32 bits (FastDivmod).
bool repeated_block(const Shape& out, const Strides& s, uint32_t* mid, uint32_t* inner) {
  if (numel(out) > std::numeric_limits<uint32_t>::max()) return false;
  int d = static_cast<int>(out.size()) - 1;
  int64_t in = 1, block = 1;
  for (; d >= 0 && (out[d] == 1 || s[d] == 0); --d) in *= out[d];
  for (; d >= 0 && (out[d] == 1 || s[d] == block); --d) block *= out[d];
  for (; d >= 0; --d)
    if (out[d] != 1 && s[d] != 0) return false;
  *mid = static_cast<uint32_t>(block);
  *inner = static_cast<uint32_t>(in);
  return true;
}

template <class T>
void unary_typed(UnaryOp op, const Tensor& x, const Tensor& out, cudaStream_t s) {
  const int64_t n = out.numel();
  if (n == 0) return;
  T* o = static_cast<T*>(out.data_ptr());
  const T* p = static_cast<const T*>(x.data_ptr());
  dispatch_unary(op, [&](auto c) {
    constexpr UnaryOp k = decltype(c)::value;
    if (x.is_contiguous() && out.is_contiguous() && packable(o) && packable(p)) {
      map1_packed<<<packed_blocks<T>(n), 256, 0, s>>>(o, p, n, Unary<k>{});
    } else {
      const auto map = make_index_map<2>(out.shape(), {&out.strides(), &x.strides()});
      unary_strided<k, T><<<cuda::blocks_for(n), 256, 0, s>>>(o, p, map, n);
    }
    FGVC_CHECK_LAUNCH();
  });
}

template <class T>
void binary_typed(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, cudaStream_t s) {
  const int64_t n = out.numel();
  if (n == 0) return;
  T* o = static_cast<T*>(out.data_ptr());
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  dispatch_binary(op, [&](auto c) {
    constexpr BinaryOp k = decltype(c)::value;
    const bool dense = out.is_contiguous() && packable(o);
    const Strides sa = broadcast_strides(a.shape(), a.strides(), out.shape());
    const Strides sb = broadcast_strides(b.shape(), b.strides(), out.shape());
    uint32_t mid = 0, inner = 0;
    if (dense && a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous() && packable(pa) && packable(pb)) {
      map2_packed<<<packed_blocks<T>(n), 256, 0, s>>>(o, pa, pb, n, Binary<k>{});
    } else if (dense && a.shape() == out.shape() && a.is_contiguous() && packable(pa) &&
               repeated_block(out.shape(), sb, &mid, &inner)) {
      map1_packed<<<packed_blocks<T>(n), 256, 0, s>>>(o, pa, n,
                                                      BinaryRepeated<k, T, false>{pb, FastDivmod(inner), FastDivmod(mid)});
    } else if (dense && b.shape() == out.shape() && b.is_contiguous() && packable(pb) &&
               repeated_block(out.shape(), sa, &mid, &inner)) {
      map1_packed<<<packed_blocks<T>(n), 256, 0, s>>>(o, pb, n,
                                                      BinaryRepeated<k, T, true>{pa, FastDivmod(inner), FastDivmod(mid)});
    } else {
      const auto map = make_index_map<3>(out.shape(), {&out.strides(), &sa, &sb});
      binary_strided<k, T><<<cuda::blocks_for(n), 256, 0, s>>>(o, pa, pb, map, n);
    }
    FGVC_CHECK_LAUNCH();
  });
}

template <class T>
void binary_scalar_typed(BinaryOp op, const Tensor& a, double b, const Tensor& out, cudaStream_t s) {
  const int64_t n = out.numel();
  if (n == 0) return;
  T* o = static_cast<T*>(out.data_ptr());
  const T* pa = static_cast<const T*>(a.data_ptr());
  dispatch_binary(op, [&](auto c) {
    constexpr BinaryOp k = decltype(c)::value;
    if (a.is_contiguous() && out.is_contiguous() && packable(o) && packable(pa)) {  // no index arithmetic
      map1_packed<<<packed_blocks<T>(n), 256, 0, s>>>(o, pa, n, BinaryScalar<k, T>{static_cast<compute_t<T>>(b)});
    } else {
      const auto map = make_index_map<2>(out.shape(), {&out.strides(), &a.strides()});
      binary_scalar_strided<k, T><<<cuda::blocks_for(n), 256, 0, s>>>(o, pa, static_cast<compute_t<T>>(b), map, n);
    }
    FGVC_CHECK_LAUNCH();
  });
}

__global__ void increment_kernel(int64_t* counter) { ++*counter; }

}  // namespace

void increment_cuda(const Tensor& counter) {
  cuda::DeviceGuard guard(counter.device().index);
  increment_kernel<<<1, 1, 0, cuda::stream(counter.device().index)>>>(counter.data<int64_t>());
  FGVC_CHECK_LAUNCH();
}

void unary_cuda(UnaryOp op, const Tensor& x, const Tensor& out) {
  cuda::DeviceGuard guard(x.device().index);
  FGVC_DISPATCH_FLOATING(x.dtype(), op_name(op), T, unary_typed<T>(op, x, out, cuda::stream(x.device().index)));
}

void binary_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  cuda::DeviceGuard guard(a.device().index);
  FGVC_DISPATCH_FLOATING(a.dtype(), op_name(op), T, binary_typed<T>(op, a, b, out, cuda::stream(a.device().index)));
}

void binary_scalar_cuda(BinaryOp op, const Tensor& a, double b, const Tensor& out) {
  cuda::DeviceGuard guard(a.device().index);
  FGVC_DISPATCH_FLOATING(a.dtype(), op_name(op), T,
                      binary_scalar_typed<T>(op, a, b, out, cuda::stream(a.device().index)));
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
