// matmul's backward: for C = op(A) op(B), dA and dB are again matrix products (with the
// transposes arranged so no operand is copied). A 2-D B shared by a 3-D batch gets the
// sum over the batch.
#include "autograd/ops.h"
#include "autograd/saved_tensor.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"

namespace fgvc {

namespace k = kernels;
using Grads = std::vector<Tensor>;
using Needs = std::vector<bool>;

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  Tensor c = k::matmul(a, b, trans_a, trans_b);
  autograd::record("matmul", {a, b}, {c},
                   [sa = autograd::SavedTensor(a), sb = autograd::SavedTensor(b), trans_a, trans_b,
                    shared_b = b.dim() == 2 && a.dim() == 3](
                       const Grads& g, const Needs& n) -> Grads {
                     const Tensor& gc = g[0];
                     // Each gradient reads the other operand only.
                     const Tensor b_kept = n[0] ? sb.get() : Tensor();
                     const Tensor a_kept = n[1] ? sa.get() : Tensor();
                     Grads out(2);
                     // C = A B: dA = dC B^T, dB = A^T dC; with transposed inputs the same rules
                     // applied to A^T or B^T, transposed back.
                     if (n[0]) {
                       if (!trans_a) out[0] = k::matmul(gc, b_kept, false, !trans_b);
                       else if (shared_b)  // (dC op(B)^T)^T, batched
                         out[0] = k::matmul(gc, b_kept, false, !trans_b).transpose(1, 2).contiguous();
                       else out[0] = k::matmul(b_kept, gc, trans_b, true);
                     }
                     if (n[1]) {
                       if (shared_b) {
                         // Shared B: fold the batch into rows, one product.
                         const Tensor a2 = trans_a ? a_kept.transpose(1, 2).contiguous().reshape({-1, a_kept.size(1)})
                                                   : a_kept.reshape({-1, a_kept.size(2)});
                         const Tensor g2 = gc.reshape({-1, gc.size(2)});
                         out[1] = trans_b ? k::matmul(g2, a2, true, false) : k::matmul(a2, g2, true, false);
                       } else {
                         out[1] = trans_b ? k::matmul(gc, a_kept, true, trans_a) : k::matmul(a_kept, gc, !trans_a, false);
                       }
                     }
                     return out;
                   });
  return c;
}

}  // namespace fgvc
