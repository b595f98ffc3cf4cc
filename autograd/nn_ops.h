// The differentiable building blocks of the networks (the functional form of nn/ layers).
#pragma once
#include <functional>

#include "autograd/ops.h"
#include "kernels/conv2d.h"
#include "kernels/pool2d.h"
#include "tensor/random.h"

namespace fgvc {

// x [N, C, H, W], w [O, C, kh, kw], bias [O] or undefined.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const kernels::Conv2dGeometry& g);
// Batch norm with affine gamma/beta. In training, the batch statistics normalise and the
// running ones move: running = (1 - momentum) running + momentum batch (PyTorch's momentum;
// TF's decay is 1 - momentum), the variance unbiased. In evaluation the running ones normalise.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                  Tensor& running_var, bool training, double momentum, double eps);
// Synchronised batch norm (data-parallel training with --sync-bn): while set on a thread, batch
// norm in training mode takes its statistics over every rank's batch — the channel sums in
// forward and the gradient sums in backward go through this in-place sum over the ranks of a
// float64 tensor (dist::Communicator::all_reduce_sum) — so N ranks with batch B normalise as
// one process with batch N B. nullptr: per-rank statistics (the default).
using BatchNormAllReduce = std::function<void(Tensor&)>;
void set_batch_norm_all_reduce(BatchNormAllReduce fn);
Tensor max_pool2d(const Tensor& x, const kernels::Pool2dGeometry& g);
Tensor avg_pool2d(const Tensor& x, const kernels::Pool2dGeometry& g);
// x [N, in], w [out, in], bias [out] or undefined: x w^T + bias.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias);
// Zeroes each element with probability p and scales the rest by 1 / (1 - p); identity when
// not training or p = 0.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

}  // namespace fgvc
