#include "nn/module.h"

#include <functional>

#include "autograd/grad_mode.h"

namespace fgvc {
namespace nn {

namespace {
thread_local ForwardObserver* g_observer = nullptr;

void collect(const Module& m, const std::string& prefix, bool params,
             std::vector<std::pair<std::string, Tensor>>& out,
             const std::function<std::vector<std::pair<std::string, Tensor>>(const Module&)>& own) {
  for (auto& [name, t] : own(m)) out.emplace_back(prefix + name, t);
  for (auto& [name, child] : m.named_children()) collect(*child, prefix + name + ".", params, out, own);
}
}  // namespace

void Module::set_observer(ForwardObserver* observer) { g_observer = observer; }

Tensor Module::forward(const Tensor& x) {
  if (!g_observer) return forward_impl(x);
  g_observer->before(*this, x);
  Tensor y = forward_impl(x);
  g_observer->after(*this, x, y);
  return y;
}

// A name is one entry of the state dict: a second parameter, buffer or child of the same name
// would merge into it silently (one of the two never saved or loaded).
void Module::check_new_name(const std::string& name) const {
  const auto taken = [&](const auto& list) {
    for (const auto& entry : list)
      if (entry.first == name) return true;
    return false;
  };
  FGVC_CHECK(!name.empty(), "Module", "an empty name for a parameter, buffer or submodule");
  FGVC_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_), "Module", "'", name, "' is registered twice");
}

Tensor& Module::register_parameter(const std::string& name, Tensor t) {
  check_new_name(name);
  if (t.defined() && !t.requires_grad()) t.set_requires_grad(true);
  params_.emplace_back(name, t);
  return params_.back().second;
}

Tensor& Module::register_buffer(const std::string& name, Tensor t) {
  check_new_name(name);
  buffers_.emplace_back(name, t);
  return buffers_.back().second;
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect(*this, "", true, out, [](const Module& m) { return m.params_; });
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect(*this, "", false, out, [](const Module& m) { return m.buffers_; });
  return out;
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& [n, t] : named_parameters()) out.emplace(n, t);
  for (auto& [n, t] : named_buffers()) out.emplace(n, t);
  return out;
}

std::string Module::LoadReport::str() const {
  std::string s;
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    s += std::string(s.empty() ? "" : "; ") + what + " (" + std::to_string(v.size()) + "):";
    for (size_t i = 0; i < v.size() && i < 20; ++i) s += " " + v[i];
    if (v.size() > 20) s += " ...";
  };
  // Most of the names not matching: weights of another network, which the lists below,
  // cut at 20 names each, would leave the reader to infer.
  if (missing.size() * 2 > expected)
    s = "not weights of this network (" + std::to_string(missing.size()) + " of its " + std::to_string(expected) +
        " tensors are not in the file)";
  list("missing", missing);
  list("unexpected", unexpected);
  list("mis-shaped or mistyped", mismatched);
  return s.empty() ? "all keys matched" : s;
}

Module::LoadReport Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  LoadReport r;
  std::map<std::string, Tensor> mine = state_dict();
  r.expected = mine.size();
  for (auto& [name, t] : mine) {
    auto it = state.find(name);
    if (it == state.end()) r.missing.push_back(name);
    else if (it->second.shape() != t.shape())
      r.mismatched.push_back(name + ": " + shape_str(it->second.shape()) + " vs " + shape_str(t.shape()));
    // Integers are not weights: a copy would convert them silently (a file's int8 bias
    // loaded as the numbers -3..6).
    else if (is_floating(t.dtype()) && !is_floating(it->second.dtype()))
      r.mismatched.push_back(name + ": " + dtype_name(it->second.dtype()) + " values for a " + dtype_name(t.dtype()) +
                             " tensor");
  }
  for (auto& [name, t] : state)
    if (!mine.count(name)) r.unexpected.push_back(name);
  FGVC_CHECK(!strict || r.ok(), "load_state_dict", r.str());
  NoGradGuard no_grad;
  for (auto& [name, t] : mine) {
    auto it = state.find(name);
    if (it != state.end() && it->second.shape() == t.shape() &&
        (!is_floating(t.dtype()) || is_floating(it->second.dtype())))
      Tensor(t).copy_(it->second);
  }
  return r;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::to(Device device) {
  for (auto& [name, t] : params_) t.move_to_(device);
  for (auto& [name, t] : buffers_) t.move_to_(device);
  for (auto& [name, child] : children_) child->to(device);
}

void Module::to(DType dtype) {
  FGVC_CHECK(is_floating(dtype), "Module::to: ", dtype_name(dtype), " is not a floating-point type");
  for (auto& [name, t] : params_) t.cast_(dtype);
  for (auto& [name, t] : buffers_)
    if (is_floating(t.dtype())) t.cast_(dtype);
  for (auto& [name, child] : children_) child->to(dtype);
}

}  // namespace nn
}  // namespace fgvc
