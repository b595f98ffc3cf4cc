// The differentiable building blocks of the networks (the functional form of nn/ layers).
#pragma once
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
Tensor max_pool2d(const Tensor& x, const kernels::Pool2dGeometry& g);
Tensor avg_pool2d(const Tensor& x, const kernels::Pool2dGeometry& g);
// x [N, in], w [out, in], bias [out] or undefined: x w^T + bias.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias);
// Zeroes each element with probability p and scales the rest by 1 / (1 - p); identity when
// not training or p = 0.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

}  // namespace fgvc
