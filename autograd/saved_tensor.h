// A tensor that a backward function keeps from the forward pass, with the version of its
// memory at that moment (Storage::version). Reading it back after an in-place write to that
// memory (copy_, fill_, an optimiser's step, a view's write: views share the count) throws
// instead of computing a gradient from the new values, as PyTorch's "one of the variables
// needed for gradient computation has been modified by an inplace operation" does.
#pragma once
#include <cstdint>

#include "tensor/error.h"
#include "tensor/tensor.h"

namespace fgvc {
namespace autograd {

// Thrown by SavedTensor::get(); the engine adds the name of the node whose backward read it.
class SavedTensorModified : public Error {
 public:
  using Error::Error;
};

class SavedTensor {
 public:
  SavedTensor() = default;
  // Keeps t detach()ed: the graph must not own the tensors that own it.
  explicit SavedTensor(const Tensor& t) : tensor_(t.defined() ? t.detach() : Tensor()),
                                          version_(t.defined() ? t.version() : 0) {}

  // The saved tensor, after checking that its memory was not written since it was saved.
  const Tensor& get() const {
    if (tensor_.defined() && tensor_.version() != version_) throw_modified();
    return tensor_;
  }

 private:
  [[noreturn]] void throw_modified() const;
  Tensor tensor_;
  uint64_t version_ = 0;
};

}  // namespace autograd
}  // namespace fgvc
