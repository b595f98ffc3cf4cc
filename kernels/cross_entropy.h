// Softmax cross-entropy with label smoothing, fused and numerically stable.
// With smoothing e over C classes the target distribution is (1 - e) one_hot(y) + e / C, so
//   loss_n = logsumexp(x_n) - (1 - e) x_n[y_n] - (e / C) sum_j x_n[j]
//   dloss_n / dx_n[j] = softmax(x_n)[j] - (1 - e) [j == y_n] - e / C
// The forward keeps logsumexp per row so the backward needs no extra pass for it, in float64
// whatever the logits' type: rounded to float32 it would put an error of half a float32 step of
// |logsumexp| into every softmax probability (2e-5 relative at logits near 1000).
#pragma once
#include "tensor/tensor.h"

namespace fgvc {
namespace kernels {

struct CrossEntropyOutput {
  Tensor loss;  // [N], per sample
  Tensor lse;   // [N] float64, logsumexp of each row (for the backward)
};

// logits [N, C] float32/float64, labels [N] int64 in [0, C) (an out-of-range label throws).
CrossEntropyOutput cross_entropy(const Tensor& logits, const Tensor& labels, double smoothing = 0.0);
// grad_loss [N] -> dL/dlogits [N, C].
Tensor cross_entropy_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& labels,
                              const Tensor& lse, double smoothing);

namespace detail {
// Returns the number of out-of-range labels (the first one's row in *bad_row).
int64_t cross_entropy_cpu(const Tensor& logits, const Tensor& labels, double smoothing, const CrossEntropyOutput& out,
                          int64_t* bad_row);
void cross_entropy_backward_cpu(const Tensor& grad_loss, const Tensor& logits, const Tensor& labels,
                                const Tensor& lse, double smoothing, const Tensor& out);
int64_t cross_entropy_cuda(const Tensor& logits, const Tensor& labels, double smoothing, const CrossEntropyOutput& out,
                           int64_t* bad_row);
void cross_entropy_backward_cuda(const Tensor& grad_loss, const Tensor& logits, const Tensor& labels,
                                 const Tensor& lse, double smoothing, const Tensor& out);
}  // namespace detail

}  // namespace kernels
}  // namespace fgvc
