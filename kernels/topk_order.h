// The order top-k sorts by, shared by the CPU and CUDA versions: larger value first, NaN
// above everything, equal values by lower index.
#pragma once
#include <cstdint>

#include "tensor/macros.h"

namespace fgvc {
namespace kernels {

template <class T>
FGVC_HD inline bool topk_before(T a, int64_t ia, T b, int64_t ib) {
  const bool an = a != a, bn = b != b;
  if (an != bn) return an;
  if (!an && a != b) return a > b;
  return ia < ib;
}

}  // namespace kernels
}  // namespace fgvc
