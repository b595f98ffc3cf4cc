// CUDA side of tensor/copy.h: the strided converting copy, fill, and byte copies between
// devices on the device's stream.
#include "tensor/cast.h"
#include "tensor/copy.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/indexing.h"
#include "tensor/packed.cuh"

namespace fgvc {
namespace detail {

namespace {

template <class D, class S>
__global__ void copy_kernel(D* dst, const S* src, IndexMap<2> map, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    map.offsets(i, off);
    dst[off[0]] = cast_value<D>(src[off[1]]);
  }
}

// A converting copy of contiguous tensors (the casts of mixed precision): no index arithmetic.
template <class D, class S>
__global__ void convert_contiguous_kernel(D* dst, const S* src, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = cast_value<D>(src[i]);
}

template <class T>
__global__ void fill_kernel(T* dst, T value, IndexMap<1> map, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off;
    map.offsets(i, &off);
    dst[off] = value;
  }
}

}  // namespace

void copy_same_device_cuda(const Tensor& dst, const Tensor& src) {
  const int dev = dst.device().index;
  cuda::DeviceGuard guard(dev);
  cudaStream_t stream = cuda::stream(dev);
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    FGVC_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), dst.nbytes(), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  const int64_t n = dst.numel();
  if (n == 0) return;
  if (dst.is_contiguous() && src.is_contiguous()) {
    FGVC_DISPATCH_ALL(dst.dtype(), "copy", D, FGVC_DISPATCH_ALL(src.dtype(), "copy", S, {
      convert_contiguous_kernel<D, S><<<cuda::blocks_for(n), 256, 0, stream>>>(static_cast<D*>(dst.data_ptr()),
                                                                               static_cast<const S*>(src.data_ptr()), n);
      FGVC_CHECK_LAUNCH();
    }));
    return;
  }
  const auto map = make_index_map<2>(dst.shape(), {&dst.strides(), &src.strides()});
  FGVC_DISPATCH_ALL(dst.dtype(), "copy", D, FGVC_DISPATCH_ALL(src.dtype(), "copy", S, {
    copy_kernel<D, S><<<cuda::blocks_for(n), 256, 0, stream>>>(static_cast<D*>(dst.data_ptr()),
                                                               static_cast<const S*>(src.data_ptr()), map, n);
    FGVC_CHECK_LAUNCH();
  }));
}

void fill_cuda(const Tensor& dst, double value) {
  const int dev = dst.device().index;
  cuda::DeviceGuard guard(dev);
  const int64_t n = dst.numel();
  if (n == 0) return;
  const auto map = make_index_map<1>(dst.shape(), {&dst.strides()});
  FGVC_DISPATCH_ALL(dst.dtype(), "fill", T, {
    T* p = static_cast<T*>(dst.data_ptr());
    if (dst.is_contiguous() && packable(p)) {
      fill_packed<T><<<packed_blocks<T>(n), 256, 0, cuda::stream(dev)>>>(p, from_double<T>(value), n);
    } else {
      fill_kernel<T><<<cuda::blocks_for(n), 256, 0, cuda::stream(dev)>>>(p, from_double<T>(value), map, n);
    }
    FGVC_CHECK_LAUNCH();
  });
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes, bool async) {
  if (bytes == 0) return;
  const int dev = dst_device.is_cuda() ? dst_device.index : src_device.index;
  cuda::DeviceGuard guard(dev);
  cudaStream_t stream = cuda::stream(dev);
  if (dst_device.is_cuda() && src_device.is_cuda() && dst_device.index != src_device.index) {
    // Order after pending work on the source device, then copy peer to peer.
    FGVC_CUDA_CHECK(cudaStreamSynchronize(cuda::stream(src_device.index)));
    FGVC_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, bytes, stream));
  } else {
    FGVC_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
  }
  if (!async) FGVC_CUDA_CHECK(cudaStreamSynchronize(stream));
}

}  // namespace detail
}  // namespace fgvc
