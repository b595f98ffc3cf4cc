// Data movement every tensor needs: strided copy with dtype conversion on one device, copies
// between host and device, and fill. Tensor::contiguous/clone/to/copy_/fill_ call these.
// CPU version in copy.cpp, CUDA version in copy.cu, side by side.
#pragma once
#include "fgvc/config.h"
#include "tensor/tensor.h"

namespace fgvc {

// dst and src have the same shape; any strides, dtypes and devices. A host<->device copy is
// asynchronous only when non_blocking and the host side is pinned; otherwise it returns
// once the data has arrived.
void copy_tensor(const Tensor& dst, const Tensor& src, bool non_blocking = false);
void fill_tensor(const Tensor& dst, double value);

namespace detail {
void copy_same_device_cpu(const Tensor& dst, const Tensor& src);
void fill_cpu(const Tensor& dst, double value);
#if FGVC_WITH_CUDA
void copy_same_device_cuda(const Tensor& dst, const Tensor& src);
void fill_cuda(const Tensor& dst, double value);
// Contiguous bytes between any two devices (host, device, device to device).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes,
                bool async);
#endif
}  // namespace detail

}  // namespace fgvc
