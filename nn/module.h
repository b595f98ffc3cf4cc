// nn::Module: a layer or a network. It owns named parameters (trained), named buffers
// (state that is not trained, such as batch-norm running statistics) and named
// sub-modules; names join with dots ("layer1.0.conv1.weight"), following timm/torchvision so
// that their weights load by name.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace fgvc {
namespace nn {

class Module;

// Observes every module's forward: fgvc-model-info builds its per-layer table with one.
class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  virtual void before(const Module& m, const Tensor& x) = 0;
  virtual void after(const Module& m, const Tensor& x, const Tensor& y) = 0;
};

class Module {
 public:
  virtual ~Module() = default;
  // Runs forward_impl, telling the observer (if one is set on this thread) before and after.
  Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }
  virtual std::string type_name() const = 0;
  // Multiply-accumulates of one forward with input x and output y (convolutions and linear
  // layers; 0 for the rest).
  virtual int64_t macs(const Shape& x, const Shape& y) const {
    (void)x, (void)y;
    return 0;
  }
  static void set_observer(ForwardObserver* observer);  // per thread; nullptr to stop

  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_buffers() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const { return children_; }
  // Parameters and buffers, as saved in a weights file.
  std::map<std::string, Tensor> state_dict() const;

  struct LoadReport {
    std::vector<std::string> missing, unexpected, mismatched;  // mismatched: "name: [file shape] vs [model]"
    size_t expected = 0;                                       // the module's tensors
    bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
    std::string str() const;
  };
  // Copies tensors by name (converting dtype, onto the module's device). With strict, any
  // missing, unexpected, mis-shaped or mistyped key is an error listing them all; otherwise the
  // matching ones load and the report says what did not.
  LoadReport load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }
  int64_t num_parameters() const;
  void to(Device device);  // moves parameters and buffers
  void to(DType dtype);    // converts floating-point parameters and buffers (counters stay)

 protected:
  virtual Tensor forward_impl(const Tensor& x) = 0;
  Tensor& register_parameter(const std::string& name, Tensor t);
  Tensor& register_buffer(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    check_new_name(name);
    children_.emplace_back(name, m);
    return m;
  }

 private:
  void check_new_name(const std::string& name) const;
  std::vector<std::pair<std::string, Tensor>> params_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace nn
}  // namespace fgvc
