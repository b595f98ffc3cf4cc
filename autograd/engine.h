// Recording ops and running the backward pass.
#pragma once
#include <functional>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/node.h"

namespace fgvc {

// Backpropagates from `root`, accumulating into the .grad of every leaf that requires a
// gradient. Without `grad`, root must have one element (a loss) and its gradient is 1.
// The graph's saved tensors are freed afterwards unless retain_graph; a second backward
// through a freed graph throws.
void backward(const Tensor& root, const Tensor& grad = Tensor(), bool retain_graph = false);

namespace autograd {

// True when GradMode is on and some input requires a gradient.
bool should_record(const std::vector<Tensor>& inputs);
// Attaches a node named `name` with backward `fn` to `outputs` when should_record(inputs).
// Tensors that `fn` keeps go in an autograd::SavedTensor (autograd/saved_tensor.h): detached,
// or the graph would own itself, and checked for in-place writes when read back.
void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, BackwardFn fn);

// How many nodes this thread has recorded: a layer's nodes are those numbered between the
// counts before and after its forward (fgvc-model-info --time attributes backward time so).
uint64_t nodes_created();
// Called after each node's backward on this thread with the seconds it took; nullptr stops.
using BackwardTimer = std::function<void(const Node& node, double seconds)>;
void set_backward_timer(BackwardTimer timer);

// Called on this thread when a leaf's gradient for the running backward is complete (every
// contribution summed): data-parallel training starts all-reducing it then, so communication
// overlaps the rest of backward (dist/gradient_reducer.h). nullptr stops.
using GradReadyHook = std::function<void(const Tensor& leaf)>;
void set_grad_ready_hook(GradReadyHook hook);
void notify_grad_ready(const Tensor& leaf);  // by AccumulateGrad

}  // namespace autograd
}  // namespace fgvc
