// CUDA side of kernels/elementwise.h: a contiguous fast path and a strided/broadcast path,
// both grid-stride loops over the shared formulas of elementwise_ops.h.
#include "kernels/elementwise.h"
#include "kernels/elementwise_ops.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/dispatch.h"
#include "tensor/indexing.h"

namespace fgvc {
namespace kernels {
namespace detail {

namespace {

#define FGVC_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

template <UnaryOp op, class T>
__global__ void unary_contiguous(T* out, const T* x, int64_t n) {
  FGVC_GRID_STRIDE(i, n) out[i] = unary_fn<op>(x[i]);
}

template <UnaryOp op, class T>
__global__ void unary_strided(T* out, const T* x, IndexMap<2> map, int64_t n) {
  FGVC_GRID_STRIDE(i, n) {
    int64_t off[2];
    map.offsets(i, off);
    out[off[0]] = unary_fn<op>(x[off[1]]);
  }
}

template <BinaryOp op, class T>
__global__ void binary_contiguous(T* out, const T* a, const T* b, int64_t n) {
  FGVC_GRID_STRIDE(i, n) out[i] = binary_fn<op>(a[i], b[i]);
}

template <BinaryOp op, class T>
__global__ void binary_strided(T* out, const T* a, const T* b, IndexMap<3> map, int64_t n) {
  FGVC_GRID_STRIDE(i, n) {
    int64_t off[3];
    map.offsets(i, off);
    out[off[0]] = binary_fn<op>(a[off[1]], b[off[2]]);
  }
}

template <BinaryOp op, class T>
__global__ void binary_scalar_contiguous(T* out, const T* a, T b, int64_t n) {
  FGVC_GRID_STRIDE(i, n) out[i] = binary_fn<op>(a[i], b);
}

template <BinaryOp op, class T>
__global__ void binary_scalar_strided(T* out, const T* a, T b, IndexMap<2> map, int64_t n) {
  FGVC_GRID_STRIDE(i, n) {
    int64_t off[2];
    map.offsets(i, off);
    out[off[0]] = binary_fn<op>(a[off[1]], b);
  }
}

template <class T>
void unary_typed(UnaryOp op, const Tensor& x, const Tensor& out, cudaStream_t s) {
  const int64_t n = out.numel();
  T* o = static_cast<T*>(out.data_ptr());
  const T* p = static_cast<const T*>(x.data_ptr());
  dispatch_unary(op, [&](auto c) {
    constexpr UnaryOp k = decltype(c)::value;
    if (x.is_contiguous()) {
      unary_contiguous<k, T><<<cuda::blocks_for(n), 256, 0, s>>>(o, p, n);
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
  T* o = static_cast<T*>(out.data_ptr());
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  dispatch_binary(op, [&](auto c) {
    constexpr BinaryOp k = decltype(c)::value;
    if (a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous()) {
      binary_contiguous<k, T><<<cuda::blocks_for(n), 256, 0, s>>>(o, pa, pb, n);
    } else {
      const Strides sa = broadcast_strides(a.shape(), a.strides(), out.shape());
      const Strides sb = broadcast_strides(b.shape(), b.strides(), out.shape());
      const auto map = make_index_map<3>(out.shape(), {&out.strides(), &sa, &sb});
      binary_strided<k, T><<<cuda::blocks_for(n), 256, 0, s>>>(o, pa, pb, map, n);
    }
    FGVC_CHECK_LAUNCH();
  });
}

template <class T>
void binary_scalar_typed(BinaryOp op, const Tensor& a, double b, const Tensor& out, cudaStream_t s) {
  const int64_t n = out.numel();
  T* o = static_cast<T*>(out.data_ptr());
  const T* pa = static_cast<const T*>(a.data_ptr());
  dispatch_binary(op, [&](auto c) {
    constexpr BinaryOp k = decltype(c)::value;
    if (a.is_contiguous()) {  // no index arithmetic per element
      binary_scalar_contiguous<k, T><<<cuda::blocks_for(n), 256, 0, s>>>(o, pa, static_cast<T>(b), n);
    } else {
      const auto map = make_index_map<2>(out.shape(), {&out.strides(), &a.strides()});
      binary_scalar_strided<k, T><<<cuda::blocks_for(n), 256, 0, s>>>(o, pa, static_cast<T>(b), map, n);
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
  FGVC_DISPATCH_FLOAT(x.dtype(), op_name(op), T, unary_typed<T>(op, x, out, cuda::stream(x.device().index)));
}

void binary_cuda(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  cuda::DeviceGuard guard(a.device().index);
  FGVC_DISPATCH_FLOAT(a.dtype(), op_name(op), T, binary_typed<T>(op, a, b, out, cuda::stream(a.device().index)));
}

void binary_scalar_cuda(BinaryOp op, const Tensor& a, double b, const Tensor& out) {
  cuda::DeviceGuard guard(a.device().index);
  FGVC_DISPATCH_FLOAT(a.dtype(), op_name(op), T,
                      binary_scalar_typed<T>(op, a, b, out, cuda::stream(a.device().index)));
}

}  // namespace detail
}  // namespace kernels
}  // namespace fgvc
