#include "tensor/copy.h"

#include <cstring>
#include <utility>

#include "fgvc/config.h"
#include "tensor/cast.h"
#include "tensor/indexing.h"

namespace fgvc {

namespace detail {

namespace {
template <class D, class S>
void copy_cpu_typed(const Tensor& dst, const Tensor& src) {
  const auto map = make_index_map<2>(dst.shape(), {&dst.strides(), &src.strides()});
  D* d = static_cast<D*>(dst.data_ptr());
  const S* s = static_cast<const S*>(src.data_ptr());
  const int64_t inner = map.inner_size(), ds = map.inner_stride(0), ss = map.inner_stride(1);
  const int64_t rows = dst.numel() / inner;
#pragma omp parallel for if (dst.numel() > (1 << 16)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off[2];
    map.offsets(r * inner, off);
    D* dp = d + off[0];
    const S* sp = s + off[1];
    for (int64_t i = 0; i < inner; ++i) dp[i * ds] = cast_value<D>(sp[i * ss]);
  }
}
}  // namespace

void copy_same_device_cpu(const Tensor& dst, const Tensor& src) {
  if (dst.numel() == 0) return;
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    std::memcpy(dst.data_ptr(), src.data_ptr(), dst.nbytes());
    return;
  }
  FGVC_DISPATCH_ALL(dst.dtype(), "copy", D,
                    FGVC_DISPATCH_ALL(src.dtype(), "copy", S, copy_cpu_typed<D, S>(dst, src)));
}

namespace {
template <class T>
void fill_cpu_typed(const Tensor& dst, double value) {
  const T v = from_double<T>(value);
  T* p = static_cast<T*>(dst.data_ptr());
  if (dst.is_contiguous()) {
    const int64_t n = dst.numel();
#pragma omp parallel for if (n > (1 << 16)) schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = v;
    return;
  }
  const auto map = make_index_map<1>(dst.shape(), {&dst.strides()});
  for (int64_t i = 0; i < dst.numel(); ++i) {
    int64_t off;
    map.offsets(i, &off);
    p[off] = v;
  }
}
}  // namespace

void fill_cpu(const Tensor& dst, double value) {
  FGVC_DISPATCH_ALL(dst.dtype(), "fill", T, fill_cpu_typed<T>(dst, value));
}

}  // namespace detail

namespace {

// The bytes [first, last) of its storage that a non-empty view can reach.
std::pair<int64_t, int64_t> byte_span(const Tensor& t) {
  int64_t low = t.offset(), high = t.offset();
  for (int64_t d = 0; d < t.dim(); ++d) (t.stride(d) < 0 ? low : high) += (t.size(d) - 1) * t.stride(d);
  const int64_t size = static_cast<int64_t>(dtype_size(t.dtype()));
  return {low * size, (high + 1) * size};
}

}  // namespace

void copy_tensor(const Tensor& dst, const Tensor& src_in, bool non_blocking) {
  FGVC_CHECK(dst.defined() && src_in.defined(), "copy", "undefined tensor");
  FGVC_CHECK(dst.shape() == src_in.shape(), "copy", "shape mismatch: destination ", describe(dst),
             ", source ", describe(src_in));
  if (dst.numel() == 0) return;
  // An expanded destination (a stride-0 axis longer than 1) names one element several times:
  // which write lands would be up to the threads (PyTorch refuses it too).
  for (int64_t a = 0; a < dst.dim(); ++a)
    FGVC_CHECK(dst.strides()[a] != 0 || dst.size(a) <= 1, "copy", "the destination ", describe(dst),
               " is expanded along axis ", a, " (several elements share memory); copy into a contiguous tensor");
  Tensor src = src_in;
  if (dst.storage() == src.storage()) {
    // One memory: the same view copies onto itself (nothing to do); views that overlap
    // otherwise (x[1:] from x[:-1]) copy through a snapshot of the source, or the copy would
    // read elements it has already overwritten.
    if (dst.offset() == src.offset() && dst.strides() == src.strides() && dst.dtype() == src.dtype()) return;
    const auto [d0, d1] = byte_span(dst);
    const auto [s0, s1] = byte_span(src);
    if (d0 < s1 && s0 < d1) src = src.clone();
  }
  if (dst.device() == src.device()) {
    if (dst.device().is_cpu()) return detail::copy_same_device_cpu(dst, src);
#if FGVC_WITH_CUDA
    return detail::copy_same_device_cuda(dst, src);
#endif
  }
#if FGVC_WITH_CUDA
  // Across devices: move contiguous bytes of the source dtype, then lay out and convert on
  // the destination device.
  Tensor s = src.contiguous();
  const bool direct = dst.is_contiguous() && dst.dtype() == src.dtype();
  Tensor staging = direct ? dst : Tensor::empty(src.shape(), src.dtype(), dst.device());
  Storage& host_side = s.device().is_cpu() ? *s.storage() : *staging.storage();
  const bool async = non_blocking && host_side.device().is_cpu() && host_side.pinned();
  detail::copy_bytes(staging.data_ptr(), staging.device(), s.data_ptr(), s.device(), s.nbytes(), async);
  // The pinned host memory must outlive the copy, whoever drops the last tensor of it first.
  if (async) host_side.record_async_copy(s.device().is_cuda() ? s.device().index : staging.device().index);
  if (!direct) copy_tensor(dst, staging);
#else
  (void)non_blocking;
  throw Error(detail::concat("copy: ", describe(src), " to ", describe(dst),
                             ": fgvc was built without CUDA"));
#endif
}

void fill_tensor(const Tensor& dst, double value) {
  FGVC_CHECK(dst.defined(), "fill", "undefined tensor");
  if (dst.numel() == 0) return;
  if (dst.device().is_cpu()) return detail::fill_cpu(dst, value);
#if FGVC_WITH_CUDA
  detail::fill_cuda(dst, value);
#endif
}

}  // namespace fgvc
