// Softmax, log-softmax and the fused cross-entropy loss with their backward rules.
#include "autograd/ops.h"
#include "autograd/saved_tensor.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"

namespace fgvc {

namespace k = kernels;
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;

namespace {
// 16-bit inputs are taken up to float32 first (differentiably), and the result stays float32:
// what PyTorch's autocast does with softmax and log-softmax (the kernels have no 16-bit path).
Tensor float32_if_16_bit(const Tensor& x) {
  return compute_dtype(x.dtype()) != x.dtype() ? to_dtype(x, compute_dtype(x.dtype())) : x;
}
}  // namespace

Tensor softmax(const Tensor& x_in, int64_t axis) {
  const Tensor x = float32_if_16_bit(x_in);
  Tensor y = k::softmax(x, axis);
  autograd::record("softmax", {x}, {y}, [y = autograd::SavedTensor(y), axis](const Grads& g, const Needs&) -> Grads {
    return {k::softmax_backward(g[0], y.get(), axis)};
  });
  return y;
}

Tensor log_softmax(const Tensor& x_in, int64_t axis) {
  const Tensor x = float32_if_16_bit(x_in);
  Tensor y = k::log_softmax(x, axis);
  autograd::record("log_softmax", {x}, {y}, [y = autograd::SavedTensor(y), axis](const Grads& g, const Needs&) -> Grads {
    return {k::log_softmax_backward(g[0], y.get(), axis)};
  });
  return y;
}

Tensor cross_entropy(const Tensor& logits_in, const Tensor& labels, double label_smoothing) {
  // 16-bit logits (a head that mixed precision ran in 16 bits): the loss is taken in float32,
  // as PyTorch's autocast does.
  const Tensor logits = logits_in.defined() && compute_dtype(logits_in.dtype()) != logits_in.dtype()
                            ? to_dtype(logits_in, compute_dtype(logits_in.dtype()))
                            : logits_in;
  k::CrossEntropyOutput per_sample = k::cross_entropy(logits, labels, label_smoothing);
  Tensor loss = k::mean(per_sample.loss);
  const int64_t n = logits.size(0);
  autograd::record("cross_entropy", {logits}, {loss},
                   [x = autograd::SavedTensor(logits), y = autograd::SavedTensor(labels), lse = per_sample.lse,
                    label_smoothing, n](
                       const Grads& g, const Needs&) -> Grads {
                     // d(mean)/d(loss_i) = 1/N, times the incoming scalar gradient.
                     const Tensor gi = k::binary(k::BinaryOp::Mul, g[0].reshape({1}).expand({n}).contiguous(),
                                                 1.0 / static_cast<double>(n));
                     return {k::cross_entropy_backward(gi, x.get(), y.get(), lse, label_smoothing)};
                   });
  return loss;
}

}  // namespace fgvc
