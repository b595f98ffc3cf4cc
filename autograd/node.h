// The recorded graph. Every differentiable op that runs while GradMode is on and that has an
// input requiring a gradient creates a Node holding its backward function and the tensors
// that function needs; each output tensor points at the node (grad_fn) and each node points
// at the nodes that produced its inputs (edges). Leaves that require a gradient get an
// accumulator node that adds into their .grad.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace fgvc {
namespace autograd {

class Node;

struct Edge {
  std::shared_ptr<Node> node;  // null: this input needs no gradient
  int input_nr = 0;            // which output of `node` the input was
};

// What a gradient arriving at an output must look like.
struct OutputMeta {
  Shape shape;
  DType dtype;
  Device device;
};

// Gradients w.r.t. the outputs in, gradients w.r.t. the inputs out (undefined where
// `needs[i]` is false). Gradient writes are always out of place: a backward function returns
// new tensors and never modifies its arguments; the engine sums them.
using BackwardFn =
    std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs, const std::vector<bool>& needs)>;

class Node {
 public:
  Node(std::string name, BackwardFn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  virtual ~Node();

  const std::string& name() const { return name_; }
  virtual std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs);
  // Frees what the backward function saved (called after it ran unless retain_graph).
  virtual void release();
  bool released() const { return released_; }

  std::vector<Edge> next;           // one per input
  std::vector<OutputMeta> outputs;  // one per output
  uint64_t sequence = 0;            // creation order (autograd::nodes_created() when made)

 protected:
  std::string name_;
  BackwardFn fn_;
  bool released_ = false;
};

// The node behind a leaf that requires a gradient: adds what arrives into leaf.grad.
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(const Tensor& leaf);
  std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) override;
  void release() override {}  // nothing saved; a leaf can be reached by any number of graphs

 private:
  std::weak_ptr<TensorImpl> leaf_;  // weak: the leaf owns the accumulator, not the reverse
};

}  // namespace autograd
}  // namespace fgvc
