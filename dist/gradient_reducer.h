// Averaging gradients across data-parallel ranks (the reducer of PyTorch's DDP, smaller).
// Parameters are grouped into buckets of about 25 MB in reverse registration order — the order
// backward completes their gradients. During backward, the autograd engine reports each
// finished gradient (autograd::set_grad_ready_hook); when all of a bucket's gradients are in,
// the bucket is flattened into one buffer and its all-reduce starts while backward goes on (on a
// GPU: queued on the one stream, between backward's kernels; nccl_communicator.cpp).
// finish() waits for every bucket, divides by the world size and writes the averages back.
// Buckets start strictly in order, so every rank issues the same collectives in the same order.
#pragma once
#include <cstddef>
#include <memory>
#include <unordered_map>
#include <vector>

#include "dist/communicator.h"
#include "optim/optimizer.h"

namespace fgvc {
namespace dist {

class GradientReducer {
 public:
  GradientReducer(Communicator& comm, optim::NamedTensors params, size_t bucket_bytes = size_t(25) << 20);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Before backward: watch the gradients of this step.
  void prepare();
  // After backward: every bucket reduced, gradients averaged. A parameter without a gradient
  // on this rank counts as zero; one without a gradient on any rank keeps none (the optimizer
  // leaves it alone, as in one process): each bucket carries a has-gradient flag per parameter.
  // Such a bucket goes out here on that rank, during backward on the others: a collective that
  // backward itself makes (synchronised batch norm) must then not come between, so with
  // --sync-bn every rank must use the same parameters (fgvc-train's models always do).
  void finish();
  size_t buckets() const { return buckets_.size(); }
  // Buckets whose all-reduce started during backward in the last step (overlap), for tests.
  size_t started_early() const { return started_early_; }

 private:
  struct Bucket {
    std::vector<size_t> params;   // indices into params_
    std::vector<int64_t> offsets; // each parameter's first element in the buffer
    int64_t numel = 0;            // gradients, then one flag per parameter
    size_t ready = 0;
    Tensor buffer;
    std::unique_ptr<Communicator::Pending> pending;
  };
  void grad_ready(const Tensor& leaf);
  void launch(Bucket& b);
  void launch_ready_in_order();

  Communicator& comm_;
  optim::NamedTensors params_;
  std::vector<Bucket> buckets_;
  std::unordered_map<const void*, std::pair<size_t, size_t>> where_;  // impl -> (bucket, slot)
  size_t next_to_launch_ = 0, started_early_ = 0;
  bool in_backward_ = false;
};

}  // namespace dist
}  // namespace fgvc
