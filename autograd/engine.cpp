// The backward pass: count, for every node reachable from the root, how many edges lead to
// it; then run nodes in an order where each runs only after all of its gradient has
// arrived (Kahn's algorithm), summing gradients that meet at the same output.
#include "autograd/engine.h"
#include "autograd/saved_tensor.h"

#include <chrono>
#include <unordered_map>

#include "kernels/elementwise.h"
#include "tensor/cuda_runtime.h"

namespace fgvc {
namespace autograd {

// Nodes this one alone keeps alive are freed here, one after another, instead of each
// destructor calling the next: a graph dropped without a backward (backward unlinks the
// graph as it goes) may be a chain of 100,000 nodes, deeper than the stack.
Node::~Node() {
  std::vector<std::shared_ptr<Node>> orphans;
  for (Edge& e : next)
    if (e.node) orphans.push_back(std::move(e.node));
  while (!orphans.empty()) {
    std::shared_ptr<Node> n = std::move(orphans.back());
    orphans.pop_back();
    if (n.use_count() == 1)  // the last owner: take its inputs before it goes
      for (Edge& e : n->next)
        if (e.node) orphans.push_back(std::move(e.node));
  }
}

std::vector<Tensor> Node::apply(const std::vector<Tensor>& grad_outputs) {
  FGVC_CHECK(!released_, "backward", "the graph through '", name_,
             "' was already freed by an earlier backward; pass retain_graph = true to the first backward "
             "to run backward on the same graph twice");
  std::vector<bool> needs(next.size());
  for (size_t i = 0; i < next.size(); ++i) needs[i] = next[i].node != nullptr;
  try {
    return fn_(grad_outputs, needs);
  } catch (const SavedTensorModified& e) {
    throw Error(detail::concat("backward: '", name_, "': ", e.what()));
  }
}

void SavedTensor::throw_modified() const {
  throw SavedTensorModified(detail::concat(
      "a tensor saved for its gradient, ", describe(tensor_), ", was modified in place after the forward pass ",
      "(its memory's version was ", version_, ", now ", tensor_.version(), "); clone() it before writing to it, ",
      "or write to it after backward"));
}

void Node::release() {
  fn_ = nullptr;  // drops every tensor the backward function captured
  next.clear();   // and the upstream graph
  released_ = true;
}

AccumulateGrad::AccumulateGrad(const Tensor& leaf) : Node("AccumulateGrad", nullptr), leaf_(leaf.impl_ptr()) {
  outputs.push_back({leaf.shape(), leaf.dtype(), leaf.device()});
}

std::vector<Tensor> AccumulateGrad::apply(const std::vector<Tensor>& grad_outputs) {
  auto impl = leaf_.lock();
  if (!impl) return {};  // the leaf is gone; nobody can read its gradient
  Tensor leaf(impl);
  const Tensor& g = grad_outputs.at(0);
  // A graph recorded before the leaf was cast or moved (cast_, move_to_, Module::to) still
  // sends gradients of the old kind; PyTorch refuses them too.
  FGVC_CHECK(g.dtype() == leaf.dtype() && g.device() == leaf.device(), "backward", "a gradient ", describe(g),
             " reached a leaf that is now ", describe(leaf),
             ": the graph was recorded before the tensor was cast or moved (record it again)");
  if (!leaf.grad().defined()) {
    // Keep the incoming tensor when nothing else refers to it or to its memory (a view, as
    // reshape's backward returns, shares the memory under a new handle), else a private copy,
    // so that a later in-place change of either cannot reach the other. A gradient is always
    // contiguous, as its parameter is: a transpose's backward hands on a strided view, whose
    // data<>() would read the elements out of order.
    const bool own = g.impl_ptr().use_count() == 1 && g.storage().use_count() == 1;
    leaf.set_grad(!g.is_contiguous() ? g.contiguous() : own ? g : g.clone());
  } else {
    leaf.set_grad(kernels::add(leaf.grad(), g));
  }
  autograd::notify_grad_ready(leaf);
  return {};
}

bool should_record(const std::vector<Tensor>& inputs) {
  if (!GradMode::enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

namespace {
thread_local uint64_t g_nodes_created = 0;
thread_local BackwardTimer g_backward_timer;
thread_local GradReadyHook g_grad_ready_hook;

Edge edge_to(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  if (t.grad_fn()) return {t.grad_fn(), t.impl()->output_nr};
  TensorImpl* impl = t.impl();
  std::shared_ptr<Node> acc = impl->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t);
    impl->grad_accumulator = acc;
  }
  return {acc, 0};
}
}  // namespace

void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, BackwardFn fn) {
  if (!should_record(inputs)) return;
  auto node = std::make_shared<Node>(name, std::move(fn));
  node->sequence = g_nodes_created++;
  for (const Tensor& t : inputs) node->next.push_back(edge_to(t));
  for (size_t i = 0; i < outputs.size(); ++i) {
    TensorImpl* impl = outputs[i].impl();
    node->outputs.push_back({impl->shape, impl->dtype, impl->device});
    impl->requires_grad = true;
    impl->grad_fn = node;
    impl->output_nr = static_cast<int>(i);
  }
}

uint64_t nodes_created() { return g_nodes_created; }
void set_backward_timer(BackwardTimer timer) { g_backward_timer = std::move(timer); }
void set_grad_ready_hook(GradReadyHook hook) { g_grad_ready_hook = std::move(hook); }
void notify_grad_ready(const Tensor& leaf) {
  if (g_grad_ready_hook) g_grad_ready_hook(leaf);
}

}  // namespace autograd

void backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  using autograd::Node;
  FGVC_CHECK(root.defined(), "backward", "undefined tensor");
  FGVC_CHECK(root.requires_grad(), "backward", "the tensor ", describe(root),
             " does not require a gradient (no input of the ops that made it requires one)");
  Tensor seed = grad;
  if (!seed.defined()) {
    FGVC_CHECK(root.numel() == 1, "backward", "without an explicit gradient the root must have one element, got ",
               describe(root));
    seed = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  FGVC_CHECK(seed.shape() == root.shape() && seed.dtype() == root.dtype() && seed.device() == root.device(),
             "backward", "gradient ", describe(seed), " does not match the root ", describe(root));

  NoGradGuard no_grad;
  const autograd::Edge start = root.grad_fn() ? autograd::Edge{root.grad_fn(), root.impl()->output_nr}
                                              : autograd::Edge{std::make_shared<autograd::AccumulateGrad>(root), 0};

  // Dependencies: the number of edges into each node from nodes reachable from the root.
  std::unordered_map<Node*, int> deps;
  std::vector<Node*> stack{start.node.get()};
  deps[start.node.get()] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    FGVC_CHECK(!n->released(), "backward", "the graph through '", n->name(),
               "' was already freed by an earlier backward; pass retain_graph = true to the first backward "
               "to run backward on the same graph twice");
    for (const autograd::Edge& e : n->next) {
      if (!e.node) continue;
      auto [it, inserted] = deps.emplace(e.node.get(), 0);
      ++it->second;
      if (inserted) stack.push_back(e.node.get());
    }
  }

  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  std::vector<std::shared_ptr<Node>> ready{start.node};
  buffers[start.node.get()].resize(start.node->outputs.size());
  buffers[start.node.get()][start.input_nr] = seed;
  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.back();
    ready.pop_back();
    std::vector<Tensor> grads = std::move(buffers[node.get()]);
    buffers.erase(node.get());
    grads.resize(node->outputs.size());
    for (size_t i = 0; i < grads.size(); ++i)  // an output nobody used contributes zero
      if (!grads[i].defined())
        grads[i] = Tensor::zeros(node->outputs[i].shape, node->outputs[i].dtype, node->outputs[i].device);

    const bool timed = static_cast<bool>(autograd::g_backward_timer);
    if (timed) cuda_synchronize();  // device work of earlier nodes is not this node's
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Tensor> input_grads = node->apply(grads);
    if (timed) {
      cuda_synchronize();
      autograd::g_backward_timer(*node, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const std::vector<autograd::Edge> next = node->next;
    if (!retain_graph) node->release();
    FGVC_CHECK(input_grads.size() == next.size() || next.empty(), "backward", "'", node->name(), "' returned ",
               input_grads.size(), " gradients for ", next.size(), " inputs");
    for (size_t i = 0; i < next.size(); ++i) {
      const autograd::Edge& e = next[i];
      if (!e.node) continue;
      const Tensor& g = input_grads[i];
      if (g.defined()) {
        const autograd::OutputMeta& want = e.node->outputs.at(e.input_nr);
        FGVC_CHECK(g.shape() == want.shape && g.dtype() == want.dtype && g.device() == want.device, "backward",
                   "'", node->name(), "' returned a gradient ", describe(g), " for input ", i, ", expected ",
                   shape_str(want.shape), " ", dtype_name(want.dtype), " ", want.device.str());
        std::vector<Tensor>& slot = buffers[e.node.get()];
        slot.resize(e.node->outputs.size());
        slot[e.input_nr] = slot[e.input_nr].defined() ? kernels::add(slot[e.input_nr], g) : g;
      }
      if (--deps[e.node.get()] == 0) ready.push_back(e.node);
    }
  }
}

}  // namespace fgvc
