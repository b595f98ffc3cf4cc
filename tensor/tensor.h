// fgvc::Tensor: a handle to a strided view of reference-counted storage.
//
// Copying a Tensor copies the handle (like torch.Tensor): both refer to the same
// TensorImpl, so a gradient accumulated through one is visible through the other. View
// methods (reshape, slice, transpose, permute, expand, ...) make a new TensorImpl over the
// same Storage and never copy data unless they must (reshape of a non-contiguous view).
//
// These methods are the raw layer: they do not record anything for autograd. The
// differentiable versions are free functions in autograd/ops.h (fgvc::reshape, ...).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor/device.h"
#include "tensor/dtype.h"
#include "tensor/error.h"
#include "tensor/shape.h"
#include "tensor/storage.h"

namespace fgvc {

namespace autograd {
class Node;
}
struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories ----------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu(),
                      bool pinned = false);
  static Tensor zeros(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::Float32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::Float32,
                     Device device = Device::cpu());
  static Tensor scalar(double value, DType dtype = DType::Float32, Device device = Device::cpu());
  // Copies host values into a new tensor of the given shape (numel must match).
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape, Device device = Device::cpu());
  static Tensor from_vector(const std::vector<double>& v, const Shape& shape, Device device = Device::cpu());
  static Tensor from_vector(const std::vector<int64_t>& v, const Shape& shape, Device device = Device::cpu());
  static Tensor arange(int64_t n, DType dtype = DType::Float32, Device device = Device::cpu());

  // ---- metadata ------------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  const Strides& strides() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t axis) const;    // negative axes count from the end
  int64_t stride(int64_t axis) const;
  int64_t numel() const;
  DType dtype() const;
  Device device() const;
  int64_t offset() const;  // in elements, into storage
  bool is_contiguous() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const;
  std::string str() const;  // "Tensor[2, 3] float32 cpu"

  // Pointer to the first element of this view. data<T>() checks that T matches dtype().
  void* data_ptr() const;
  template <class T> T* data() const;

  // ---- views (raw, no autograd) -------------------------------------------------------
  Tensor view(const Shape& shape) const;      // contiguous only; one -1 allowed
  Tensor reshape(const Shape& shape) const;   // view if possible, else a contiguous copy
  Tensor slice(int64_t axis, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int64_t axis, int64_t index) const;  // drops the axis
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor expand(const Shape& shape) const;    // broadcast with stride 0
  Tensor unsqueeze(int64_t axis) const;
  Tensor squeeze(int64_t axis) const;
  Tensor as_strided(const Shape& shape, const Strides& strides, int64_t offset) const;
  Tensor detach() const;  // same data, no autograd history

  // ---- copies (tensor/copy.cpp) -------------------------------------------------------
  Tensor contiguous() const;  // itself if already contiguous
  Tensor clone() const;
  Tensor to(Device device, bool non_blocking = false) const;
  Tensor to(DType dtype) const;
  Tensor cpu() const { return to(Device::cpu()); }
  Tensor cuda(int index = 0) const { return to(Device::cuda(index)); }
  Tensor& copy_(const Tensor& src, bool non_blocking = false);  // shapes must match
  Tensor& fill_(double value);
  // Moves this tensor's data to `device` in place: every handle to it sees the move (how a
  // module's parameters change device without breaking the layers that hold them).
  Tensor& move_to_(Device device);
  // Converts this tensor's data to `dtype` in place, the same way (a model in float64 for
  // reference gradients).
  Tensor& cast_(DType dtype);
  Tensor& zero_() { return fill_(0.0); }
  // The in-place write count of this tensor's storage (shared by every view of it). The
  // methods above that write in place, the random fills and the optimisers' updates bump it;
  // code that writes through data<T>() into a tensor autograd may have saved calls
  // bump_version() itself, as PyTorch's does for its version counter.
  uint64_t version() const;
  void bump_version() const;

  // Host read-back (copies from the device if needed), converted to T.
  template <class T> std::vector<T> to_vector() const;
  template <class T> T item() const;

  // ---- autograd state (the engine is in autograd/) -----------------------------------
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on = true);  // leaves only
  Tensor grad() const;                        // undefined until a backward reaches it
  void set_grad(const Tensor& g);
  void zero_grad();                           // drops the gradient
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  bool is_leaf() const { return grad_fn() == nullptr; }

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  const TensorImpl& checked() const;
  // Points this tensor at t's data (same shape): every handle to it sees the change.
  void adopt_data_(const Tensor& t);
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;
  Shape shape;
  Strides strides;
  DType dtype = DType::Float32;
  Device device;

  // Autograd: set by the ops in autograd/ only.
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<autograd::Node> grad_fn;  // the op that produced this tensor (non-leaf)
  int output_nr = 0;                        // which output of grad_fn this is
  std::weak_ptr<autograd::Node> grad_accumulator;  // leaf: the node that accumulates .grad
};

std::string describe(const Tensor& t);  // shape, dtype and device, for error messages

}  // namespace fgvc
