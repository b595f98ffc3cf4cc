#include "tensor/tensor.h"

#include <algorithm>
#include <limits>
#include <cstring>
#include <numeric>

#include "tensor/cast.h"
#include "tensor/copy.h"

namespace fgvc {

namespace {

std::shared_ptr<TensorImpl> make_impl(std::shared_ptr<Storage> storage, int64_t offset, Shape shape,
                                      Strides strides, DType dtype, Device device) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->offset = offset;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->dtype = dtype;
  impl->device = device;
  return impl;
}

void check_shape(const Shape& shape, const char* op) {
  for (int64_t s : shape) FGVC_CHECK(s >= 0, op, "negative dimension in shape ", shape_str(shape));
}

template <class T>
Tensor from_host(const std::vector<T>& v, const Shape& shape, Device device) {
  FGVC_CHECK(static_cast<int64_t>(v.size()) == numel(shape), "Tensor::from_vector", v.size(),
             " values do not fill shape ", shape_str(shape));
  Tensor t = Tensor::empty(shape, DTypeOf<T>::value, Device::cpu());
  if (!v.empty()) std::memcpy(t.data_ptr(), v.data(), v.size() * sizeof(T));
  return device.is_cpu() ? t : t.to(device);
}

}  // namespace

std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  return detail::concat(shape_str(t.shape()), " ", dtype_name(t.dtype()), " ", t.device().str());
}

const TensorImpl& Tensor::checked() const {
  FGVC_CHECK(impl_ != nullptr, "Tensor", "use of an undefined tensor");
  return *impl_;
}

// ---- factories --------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device, bool pinned) {
  check_shape(shape, "Tensor::empty");
  const int64_t n = fgvc::numel(shape);
  FGVC_CHECK(n <= std::numeric_limits<int64_t>::max() / static_cast<int64_t>(dtype_size(dtype)), "Tensor::empty",
             shape_str(shape), " ", dtype_name(dtype), " is more than 2^63 bytes");
  auto storage = std::make_shared<Storage>(static_cast<size_t>(n) * dtype_size(dtype), device, pinned);
  return Tensor(make_impl(std::move(storage), 0, shape, contiguous_strides(shape), dtype, device));
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  fill_tensor(t, value);
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor Tensor::scalar(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape, Device device) {
  return from_host(v, shape, device);
}
Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& shape, Device device) {
  return from_host(v, shape, device);
}
Tensor Tensor::from_vector(const std::vector<int64_t>& v, const Shape& shape, Device device) {
  return from_host(v, shape, device);
}

Tensor Tensor::arange(int64_t n, DType dtype, Device device) {
  FGVC_CHECK(n >= 0, "Tensor::arange", "a negative length ", n);
  std::vector<double> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0.0);
  return from_vector(v, {n}).to(dtype).to(device);
}

// ---- metadata ----------------------------------------------------------------------------

const Shape& Tensor::shape() const { return checked().shape; }
const Strides& Tensor::strides() const { return checked().strides; }
int64_t Tensor::size(int64_t axis) const { return shape()[normalize_axis(axis, dim(), "Tensor::size")]; }
int64_t Tensor::stride(int64_t axis) const { return strides()[normalize_axis(axis, dim(), "Tensor::stride")]; }
int64_t Tensor::numel() const { return fgvc::numel(shape()); }
DType Tensor::dtype() const { return checked().dtype; }
Device Tensor::device() const { return checked().device; }
int64_t Tensor::offset() const { return checked().offset; }
const std::shared_ptr<Storage>& Tensor::storage() const { return checked().storage; }
std::string Tensor::str() const { return "Tensor" + describe(*this); }

bool Tensor::is_contiguous() const {
  const TensorImpl& t = checked();
  if (fgvc::numel(t.shape) == 0) return true;  // no element to be out of place (as PyTorch)
  int64_t expected = 1;
  for (int d = static_cast<int>(t.shape.size()) - 1; d >= 0; --d) {
    if (t.shape[d] == 1) continue;
    if (t.strides[d] != expected) return false;
    expected *= t.shape[d];
  }
  return true;
}

void* Tensor::data_ptr() const {
  const TensorImpl& t = checked();
  return static_cast<char*>(t.storage->data()) + t.offset * static_cast<int64_t>(dtype_size(t.dtype));
}

template <class T> T* Tensor::data() const {
  FGVC_CHECK(dtype() == DTypeOf<T>::value, "Tensor::data", "tensor is ", dtype_name(dtype()),
             ", asked for ", dtype_name(DTypeOf<T>::value));
  return static_cast<T*>(data_ptr());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template BF16* Tensor::data<BF16>() const;
template FP16* Tensor::data<FP16>() const;
template int64_t* Tensor::data<int64_t>() const;
template uint8_t* Tensor::data<uint8_t>() const;

// ---- views -------------------------------------------------------------------------------

Tensor Tensor::as_strided(const Shape& shape, const Strides& strides, int64_t offset) const {
  const TensorImpl& t = checked();
  FGVC_CHECK(shape.size() == strides.size(), "Tensor::as_strided", "shape ", shape_str(shape),
             " and strides ", shape_str(strides), " differ in rank");
  // Every element the view can reach must lie in the storage: the lowest and the highest
  // (sums and products checked, so that a huge stride cannot wrap around into range).
  bool empty = false;
  for (int64_t n : shape) {
    FGVC_CHECK(n >= 0, "Tensor::as_strided", "a negative size in ", shape_str(shape));
    empty = empty || n == 0;
  }
  int64_t low = offset, high = offset;
  bool wraps = false;
  for (size_t d = 0; d < shape.size() && !empty && !wraps; ++d) {
    int64_t reach = 0;
    int64_t& end = strides[d] < 0 ? low : high;
    wraps = __builtin_mul_overflow(shape[d] - 1, strides[d], &reach) || __builtin_add_overflow(end, reach, &end);
  }
  FGVC_CHECK(!wraps, "Tensor::as_strided", "a view of ", shape_str(shape), " with strides ", shape_str(strides),
             " at offset ", offset, " reaches beyond any storage");
  const int64_t capacity =
      t.storage ? static_cast<int64_t>(t.storage->bytes() / dtype_size(t.dtype)) : 0;
  FGVC_CHECK(offset >= 0 && (empty || (low >= 0 && high < capacity)), "Tensor::as_strided", "a view of ",
             shape_str(shape), " with strides ", shape_str(strides), " at offset ", offset,
             " reaches outside the storage of ", capacity, " elements");
  return Tensor(make_impl(t.storage, offset, shape, strides, t.dtype, t.device));
}

Tensor Tensor::detach() const { return as_strided(shape(), strides(), offset()); }

static Shape infer_shape(const Shape& requested, int64_t n, const char* op, const Tensor& t) {
  Shape s = requested;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      FGVC_CHECK(infer < 0, op, "only one -1 allowed in ", shape_str(requested));
      infer = static_cast<int>(i);
    } else {
      FGVC_CHECK(s[i] >= 0, op, "bad shape ", shape_str(requested));
      // (saturated: a side of 0 elsewhere still makes an empty shape, checked below)
      if (__builtin_mul_overflow(known, s[i], &known)) known = INT64_MAX;
    }
  }
  if (infer >= 0) {
    FGVC_CHECK(known > 0 && n % known == 0, op, "cannot reshape ", describe(t), " to ", shape_str(requested));
    s[infer] = n / known;
  }
  FGVC_CHECK(numel(s) == n, op, "cannot reshape ", describe(t), " to ", shape_str(requested));
  return s;
}

Tensor Tensor::view(const Shape& shape) const {
  FGVC_CHECK(is_contiguous(), "Tensor::view", "needs a contiguous tensor, got ", describe(*this),
             " with strides ", shape_str(strides()), " (use reshape)");
  const Shape s = infer_shape(shape, numel(), "Tensor::view", *this);
  return as_strided(s, contiguous_strides(s), offset());
}

Tensor Tensor::reshape(const Shape& shape) const {
  infer_shape(shape, numel(), "Tensor::reshape", *this);  // its errors under its own name
  return is_contiguous() ? view(shape) : contiguous().view(shape);
}

Tensor Tensor::slice(int64_t axis, int64_t start, int64_t end, int64_t step) const {
  const int a = normalize_axis(axis, dim(), "Tensor::slice");
  const int64_t n = shape()[a];
  FGVC_CHECK(step > 0, "Tensor::slice", "step must be positive, got ", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape s = shape();
  Strides st = strides();
  s[a] = end == start ? 0 : (end - start - 1) / step + 1;  // (end - start + step - 1) / step could wrap
  // A step past the end leaves one element (or none), whose stride is never used: kept as it
  // was, since stride x step could overflow. With two or more, step x stride is at most the
  // axis's own reach, which fits.
  const bool empty = numel() == 0;  // (an empty tensor's strides can be anything, and are not scaled)
  if (s[a] > 1 && !empty) st[a] *= step;
  return as_strided(s, st, empty ? offset() : offset() + start * strides()[a]);
}

Tensor Tensor::select(int64_t axis, int64_t index) const {
  const int a = normalize_axis(axis, dim(), "Tensor::select");
  FGVC_CHECK(index >= -shape()[a] && index < shape()[a], "Tensor::select", "index ", index,
             " out of range for axis ", a, " of ", describe(*this));
  if (index < 0) index += shape()[a];
  Shape s = shape();
  Strides st = strides();
  const int64_t off = offset() + index * st[a];
  s.erase(s.begin() + a);
  st.erase(st.begin() + a);
  return as_strided(s, st, off);
}

Tensor Tensor::transpose(int64_t a, int64_t b) const {
  std::vector<int64_t> dims(static_cast<size_t>(dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[normalize_axis(a, dim(), "Tensor::transpose")], dims[normalize_axis(b, dim(), "Tensor::transpose")]);
  return permute(dims);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  FGVC_CHECK(static_cast<int64_t>(dims.size()) == dim(), "Tensor::permute", "permutation ",
             shape_str(dims), " does not match ", describe(*this));
  std::vector<bool> seen(dims.size(), false);
  Shape s(dims.size());
  Strides st(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    const int d = normalize_axis(dims[i], dim(), "Tensor::permute");
    FGVC_CHECK(!seen[d], "Tensor::permute", "repeated axis in ", shape_str(dims));
    seen[d] = true;
    s[i] = shape()[d];
    st[i] = strides()[d];
  }
  return as_strided(s, st, offset());
}

Tensor Tensor::expand(const Shape& shape) const {
  FGVC_CHECK(shape.size() >= static_cast<size_t>(dim()), "Tensor::expand", "cannot expand ",
             describe(*this), " to ", shape_str(shape));
  const size_t lead = shape.size() - static_cast<size_t>(dim());
  Strides st(shape.size(), 0);
  for (size_t i = 0; i < static_cast<size_t>(dim()); ++i) {
    const int64_t have = this->shape()[i], want = shape[lead + i];
    FGVC_CHECK(have == want || have == 1, "Tensor::expand", "cannot expand ", describe(*this), " to ",
               shape_str(shape));
    st[lead + i] = have == want ? strides()[i] : 0;
  }
  return as_strided(shape, st, offset());
}

Tensor Tensor::unsqueeze(int64_t axis) const {
  const int a = normalize_axis(axis, dim() + 1, "Tensor::unsqueeze");
  Shape s = shape();
  Strides st = strides();
  const int64_t inner = a < dim() ? st[a] * s[a] : 1;
  s.insert(s.begin() + a, 1);
  st.insert(st.begin() + a, inner);
  return as_strided(s, st, offset());
}

Tensor Tensor::squeeze(int64_t axis) const {
  const int a = normalize_axis(axis, dim(), "Tensor::squeeze");
  FGVC_CHECK(shape()[a] == 1, "Tensor::squeeze", "axis ", axis, " of ", describe(*this), " is not 1");
  return select(a, 0);
}

// ---- copies ------------------------------------------------------------------------------

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  copy_tensor(out, *this);
  return out;
}

Tensor Tensor::to(Device device, bool non_blocking) const {
  if (device == this->device()) return *this;
  Tensor out = empty(shape(), dtype(), device);
  copy_tensor(out, *this, non_blocking);
  return out;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == this->dtype()) return *this;
  Tensor out = empty(shape(), dtype, device());
  copy_tensor(out, *this);
  return out;
}

Tensor& Tensor::copy_(const Tensor& src, bool non_blocking) {
  copy_tensor(*this, src, non_blocking);
  bump_version();
  return *this;
}

uint64_t Tensor::version() const { return checked().storage->version(); }
void Tensor::bump_version() const { checked().storage->bump_version(); }

void Tensor::adopt_data_(const Tensor& t) {
  impl_->storage = t.storage();
  impl_->offset = t.offset();
  impl_->strides = t.strides();
  impl_->dtype = t.dtype();
  impl_->device = t.device();
}

// Both move the gradient along, and drop the leaf's gradient accumulator: it expects
// gradients of the old device and dtype (a graph recorded before keeps the old one alive).
Tensor& Tensor::move_to_(Device device) {
  if (device == this->device()) return *this;
  adopt_data_(contiguous().to(device));
  if (impl_->grad.defined()) impl_->grad = impl_->grad.to(device);
  impl_->grad_accumulator.reset();
  return *this;
}

Tensor& Tensor::cast_(DType dtype) {
  if (dtype == this->dtype()) return *this;
  adopt_data_(contiguous().to(dtype));
  if (impl_->grad.defined()) impl_->grad = impl_->grad.to(dtype);
  impl_->grad_accumulator.reset();
  return *this;
}

Tensor& Tensor::fill_(double value) {
  fill_tensor(*this, value);
  bump_version();
  return *this;
}

template <class T> std::vector<T> Tensor::to_vector() const {
  Tensor host = to(DTypeOf<T>::value).to(Device::cpu()).contiguous();
  const T* p = static_cast<const T*>(host.data_ptr());
  return std::vector<T>(p, p + host.numel());
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

template <class T> T Tensor::item() const {
  FGVC_CHECK(numel() == 1, "Tensor::item", "needs one element, got ", describe(*this));
  return to_vector<T>()[0];
}
template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template int64_t Tensor::item<int64_t>() const;

// ---- autograd state ----------------------------------------------------------------------

bool Tensor::requires_grad() const { return checked().requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  FGVC_CHECK(is_leaf(), "Tensor::set_requires_grad", "only leaf tensors can change requires_grad");
  FGVC_CHECK(!on || is_floating(dtype()), "Tensor::set_requires_grad", "a ", dtype_name(dtype()),
             " tensor cannot require a gradient");
  impl_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return checked().grad; }

void Tensor::set_grad(const Tensor& g) {
  FGVC_CHECK(!g.defined() || (g.shape() == shape() && g.dtype() == dtype() && g.device() == device()),
             "Tensor::set_grad", "gradient ", describe(g), " does not match ", describe(*this));
  impl_->grad = g;
}

void Tensor::zero_grad() { checked(), impl_->grad = Tensor(); }

const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const { return checked().grad_fn; }

}  // namespace fgvc
