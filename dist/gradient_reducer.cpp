#include "dist/gradient_reducer.h"

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "kernels/elementwise.h"
#include "tensor/error.h"

namespace fgvc {
namespace dist {

GradientReducer::GradientReducer(Communicator& comm, optim::NamedTensors params, size_t bucket_bytes)
    : comm_(comm), params_(std::move(params)) {
  // Reverse registration order: the last layers' gradients are ready first.
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& w = params_[k].second;
    FGVC_CHECK(w.is_contiguous(), "GradientReducer", "parameter ", params_[k].first, " is not contiguous");
    if (buckets_.empty() || (buckets_.back().numel * int64_t(dtype_size(w.dtype())) >= int64_t(bucket_bytes)) ||
        params_[buckets_.back().params.front()].second.dtype() != w.dtype() ||
        params_[buckets_.back().params.front()].second.device() != w.device())
      buckets_.emplace_back();
    Bucket& b = buckets_.back();
    where_[w.impl_ptr().get()] = {buckets_.size() - 1, b.params.size()};
    b.params.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += w.numel();
  }
}



GradientReducer::~GradientReducer() {
  if (in_backward_) autograd::set_grad_ready_hook(nullptr);
}

void GradientReducer::prepare() {
  for (Bucket& b : buckets_) b.ready = 0, b.pending.reset();
  next_to_launch_ = 0;
  started_early_ = 0;
  in_backward_ = true;
  autograd::set_grad_ready_hook([this](const Tensor& leaf) { grad_ready(leaf); });
}

void GradientReducer::grad_ready(const Tensor& leaf) {
  const auto it = where_.find(leaf.impl_ptr().get());
  if (it == where_.end()) return;  // not one of ours
  Bucket& b = buckets_[it->second.first];
  FGVC_CHECK(!b.pending, "GradientReducer", "a gradient of ", params_[b.params[it->second.second]].first,
             " arrived after its bucket was sent");
  if (++b.ready == b.params.size()) launch_ready_in_order();
}

void GradientReducer::launch_ready_in_order() {
  while (next_to_launch_ < buckets_.size() && buckets_[next_to_launch_].ready == buckets_[next_to_launch_].params.size()) {
    launch(buckets_[next_to_launch_++]);
    if (in_backward_) started_early_++;
  }
}

void GradientReducer::launch(Bucket& b) {
  NoGradGuard no_grad;
  const Tensor& first = params_[b.params.front()].second;
  const int64_t P = static_cast<int64_t>(b.params.size());
  if (!b.buffer.defined()) b.buffer = Tensor::empty({b.numel + P}, first.dtype(), first.device());
  // After the gradients, one flag per parameter: 1 where this rank has its gradient. Written
  // where the buffer is (on a GPU, by kernels on its stream): a copy from the host would wait
  // for the stream, and so for the previous bucket's all-reduce on every rank.
  Tensor flags = b.buffer.slice(0, b.numel, b.numel + P);
  flags.fill_(1.0);
  for (size_t i = 0; i < b.params.size(); ++i) {
    const Tensor& w = params_[b.params[i]].second;
    Tensor slot = b.buffer.slice(0, b.offsets[i], b.offsets[i] + w.numel());
    if (w.grad().defined()) {
      slot.copy_(w.grad().contiguous().reshape({w.numel()}));
    } else {
      slot.zero_();
      flags.slice(0, static_cast<int64_t>(i), static_cast<int64_t>(i) + 1).zero_();
    }
  }
  b.pending = comm_.all_reduce_sum_async(b.buffer);
}

void GradientReducer::finish() {
  autograd::set_grad_ready_hook(nullptr);
  in_backward_ = false;
  // Buckets with a parameter that got no gradient go now, still in order.
  for (; next_to_launch_ < buckets_.size(); ++next_to_launch_) launch(buckets_[next_to_launch_]);
  NoGradGuard no_grad;
  // Every all-reduce is waited for (each wait has the collective deadline) before any flag is
  // read: on a GPU that read is a copy that waits for the whole stream, all later buckets'
  // all-reduces included, with no deadline, so a peer that stalled after bucket 0 would hang it.
  for (Bucket& b : buckets_) {
    b.pending->wait();
    b.pending.reset();
  }
  const double scale = 1.0 / comm_.size();
  for (Bucket& b : buckets_) {
    const Tensor mean = kernels::binary(kernels::BinaryOp::Mul, b.buffer, scale);
    const int64_t P = static_cast<int64_t>(b.params.size());
    const std::vector<double> ranks_with_grad = b.buffer.slice(0, b.numel, b.numel + P).to(DType::Float64).to_vector<double>();
    for (size_t i = 0; i < b.params.size(); ++i) {
      Tensor w = params_[b.params[i]].second;
      if (ranks_with_grad[i] == 0) {  // unused on every rank
        w.set_grad(Tensor());
        continue;
      }
      w.set_grad(mean.slice(0, b.offsets[i], b.offsets[i] + w.numel()).reshape(w.shape()).contiguous().clone());
    }
  }
}

}  // namespace dist
}  // namespace fgvc
