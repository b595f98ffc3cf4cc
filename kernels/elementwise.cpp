#include "kernels/elementwise.h"

#include "fgvc/config.h"
#include "kernels/elementwise_ops.h"
#include "tensor/dispatch.h"
#include "tensor/indexing.h"

namespace fgvc {
namespace kernels {

const char* op_name(UnaryOp op) {
  static const char* names[] = {"neg", "exp", "log", "sqrt", "rsqrt", "abs", "relu",
                                "sigmoid", "tanh", "square", "reciprocal", "sign"};
  return names[static_cast<int>(op)];
}

const char* op_name(BinaryOp op) {
  static const char* names[] = {"add", "sub", "mul", "div", "maximum", "minimum", "pow", "eq",
                                "gt", "relu_backward", "sigmoid_backward", "tanh_backward"};
  return names[static_cast<int>(op)];
}

namespace {
constexpr int64_t kGrain = 1 << 15;  // below this many elements one thread is faster

void check_float(const Tensor& t, const char* op) {
  FGVC_CHECK(t.defined(), op, "undefined tensor");
  FGVC_CHECK(is_floating(t.dtype()), op, "needs a floating dtype, got ", describe(t));
}
}  // namespace

// ---- CPU implementations --------------------------------------------------------------------

namespace detail {

namespace {

template <class T>
void unary_cpu_typed(UnaryOp op, const Tensor& x, const Tensor& out) {
  dispatch_unary(op, [&](auto c) {
    constexpr UnaryOp k = decltype(c)::value;
    T* o = static_cast<T*>(out.data_ptr());
    const T* p = static_cast<const T*>(x.data_ptr());
    const int64_t n = out.numel();
    if (x.is_contiguous()) {
#pragma omp parallel for simd if (n > kGrain) schedule(static)
      for (int64_t i = 0; i < n; ++i) o[i] = narrow<T>(unary_fn<k>(widen(p[i])));
      return;
    }
    const auto map = make_index_map<2>(out.shape(), {&out.strides(), &x.strides()});
    const int64_t inner = map.inner_size(), xs = map.inner_stride(1);
#pragma omp parallel for if (n > kGrain) schedule(static)
    for (int64_t r = 0; r < n / inner; ++r) {
      int64_t off[2];
      map.offsets(r * inner, off);
      for (int64_t i = 0; i < inner; ++i) o[off[0] + i] = narrow<T>(unary_fn<k>(widen(p[off[1] + i * xs])));
    }
  });
}

template <class T>
void binary_cpu_typed(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  dispatch_binary(op, [&](auto c) {
    constexpr BinaryOp k = decltype(c)::value;
    T* o = static_cast<T*>(out.data_ptr());
    const T* pa = static_cast<const T*>(a.data_ptr());
    const T* pb = static_cast<const T*>(b.data_ptr());
    const int64_t n = out.numel();
    if (a.shape() == b.shape() && a.is_contiguous() && b.is_contiguous()) {
#pragma omp parallel for simd if (n > kGrain) schedule(static)
      for (int64_t i = 0; i < n; ++i) o[i] = narrow<T>(binary_fn<k>(widen(pa[i]), widen(pb[i])));
      return;
    }
    const Strides sa = broadcast_strides(a.shape(), a.strides(), out.shape());
    const Strides sb = broadcast_strides(b.shape(), b.strides(), out.shape());
    const auto map = make_index_map<3>(out.shape(), {&out.strides(), &sa, &sb});
    const int64_t inner = map.inner_size(), as = map.inner_stride(1), bs = map.inner_stride(2);
#pragma omp parallel for if (n > kGrain) schedule(static)
    for (int64_t r = 0; r < n / inner; ++r) {
      int64_t off[3];
      map.offsets(r * inner, off);
      T* orow = o + off[0];
      const T* ar = pa + off[1];
      const T* br = pb + off[2];
      if (as == 1 && bs == 0) {
        const auto bv = widen(br[0]);
        for (int64_t i = 0; i < inner; ++i) orow[i] = narrow<T>(binary_fn<k>(widen(ar[i]), bv));
      } else if (as == 0 && bs == 1) {
        const auto av = widen(ar[0]);
        for (int64_t i = 0; i < inner; ++i) orow[i] = narrow<T>(binary_fn<k>(av, widen(br[i])));
      } else {
        for (int64_t i = 0; i < inner; ++i) orow[i] = narrow<T>(binary_fn<k>(widen(ar[i * as]), widen(br[i * bs])));
      }
    }
  });
}

template <class T>
void binary_scalar_cpu_typed(BinaryOp op, const Tensor& a, double b, const Tensor& out) {
  dispatch_binary(op, [&](auto c) {
    constexpr BinaryOp k = decltype(c)::value;
    T* o = static_cast<T*>(out.data_ptr());
    const T* pa = static_cast<const T*>(a.data_ptr());
    const auto bv = static_cast<compute_t<T>>(b);
    const int64_t n = out.numel();
    if (a.is_contiguous()) {
#pragma omp parallel for simd if (n > kGrain) schedule(static)
      for (int64_t i = 0; i < n; ++i) o[i] = narrow<T>(binary_fn<k>(widen(pa[i]), bv));
      return;
    }
    const auto map = make_index_map<2>(out.shape(), {&out.strides(), &a.strides()});
#pragma omp parallel for if (n > kGrain) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      int64_t off[2];
      map.offsets(i, off);
      o[off[0]] = narrow<T>(binary_fn<k>(widen(pa[off[1]]), bv));
    }
  });
}

}  // namespace

void unary_cpu(UnaryOp op, const Tensor& x, const Tensor& out) {
  FGVC_DISPATCH_FLOATING(x.dtype(), op_name(op), T, unary_cpu_typed<T>(op, x, out));
}
void binary_cpu(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  FGVC_DISPATCH_FLOATING(a.dtype(), op_name(op), T, binary_cpu_typed<T>(op, a, b, out));
}
void binary_scalar_cpu(BinaryOp op, const Tensor& a, double b, const Tensor& out) {
  FGVC_DISPATCH_FLOATING(a.dtype(), op_name(op), T, binary_scalar_cpu_typed<T>(op, a, b, out));
}

#if !FGVC_WITH_CUDA
void unary_cuda(UnaryOp, const Tensor&, const Tensor&) { throw Error("elementwise: built without CUDA"); }
void binary_cuda(BinaryOp, const Tensor&, const Tensor&, const Tensor&) { throw Error("elementwise: built without CUDA"); }
void binary_scalar_cuda(BinaryOp, const Tensor&, double, const Tensor&) { throw Error("elementwise: built without CUDA"); }
void increment_cuda(const Tensor&) { throw Error("increment: built without CUDA"); }
#endif

}  // namespace detail

// ---- checked entry points -------------------------------------------------------------------

Tensor unary(UnaryOp op, const Tensor& x) {
  check_float(x, op_name(op));
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (out.numel() == 0) return out;
  if (x.device().is_cpu()) detail::unary_cpu(op, x, out);
  else detail::unary_cuda(op, x, out);
  return out;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = op_name(op);
  check_float(a, name);
  check_float(b, name);
  FGVC_CHECK(a.dtype() == b.dtype(), name, "dtype mismatch: ", describe(a), " and ", describe(b));
  FGVC_CHECK(a.device() == b.device(), name, "device mismatch: ", describe(a), " and ", describe(b));
  Tensor out = Tensor::empty(broadcast_shapes(a.shape(), b.shape(), name), a.dtype(), a.device());
  if (out.numel() == 0) return out;
  if (a.device().is_cpu()) detail::binary_cpu(op, a, b, out);
  else detail::binary_cuda(op, a, b, out);
  return out;
}

Tensor binary(BinaryOp op, const Tensor& a, double b) {
  check_float(a, op_name(op));
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (out.numel() == 0) return out;
  if (a.device().is_cpu()) detail::binary_scalar_cpu(op, a, b, out);
  else detail::binary_scalar_cuda(op, a, b, out);
  return out;
}

void increment(const Tensor& counter) {
  FGVC_CHECK(counter.defined() && counter.dtype() == DType::Int64 && counter.numel() == 1, "increment",
             "needs one int64 value, got ", counter.defined() ? describe(counter) : std::string("an undefined tensor"));
  if (counter.device().is_cpu()) ++*counter.data<int64_t>();
  else detail::increment_cuda(counter);
}

}  // namespace kernels
}  // namespace fgvc
