// Strided iteration shared by CPU and CUDA kernels. An IndexMap<N> describes N operands
// laid over one iteration shape (each with its own strides, 0 on broadcast axes); it maps a
// row-major linear index to each operand's element offset. make_index_map merges adjacent
// axes that are contiguous for every operand, so a contiguous tensor iterates as 1-D.
#pragma once
#include <array>
#include <cstdint>

#include "tensor/error.h"
#include "tensor/macros.h"
#include "tensor/shape.h"

namespace fgvc {

constexpr int kMaxDims = 12;

template <int N>
struct IndexMap {
  int ndim = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride[N][kMaxDims] = {};

  FGVC_HD void offsets(int64_t linear, int64_t* out) const {
    for (int k = 0; k < N; ++k) out[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t i = linear % size[d];
      linear /= size[d];
      for (int k = 0; k < N; ++k) out[k] += i * stride[k][d];
    }
  }
  // Size and strides of the innermost axis (for CPU row loops); 1 and 0 if rank 0.
  FGVC_HD int64_t inner_size() const { return ndim ? size[ndim - 1] : 1; }
  FGVC_HD int64_t inner_stride(int k) const { return ndim ? stride[k][ndim - 1] : 0; }
};

template <int N>
IndexMap<N> make_index_map(const Shape& shape, const std::array<const Strides*, N>& strides) {
  IndexMap<N> m;
  // Walk axes from the innermost out, skipping size-1 axes and merging mergeable ones.
  int64_t sizes[64];
  int64_t st[N][64];
  int nd = 0;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    if (shape[d] == 1) continue;  // any number of them: a rank-100 tensor of one element is fine
    bool merge = nd > 0;
    for (int k = 0; k < N && merge; ++k)
      merge = (*strides[k])[d] == st[k][nd - 1] * sizes[nd - 1];
    if (merge) {
      sizes[nd - 1] *= shape[d];
    } else {
      FGVC_CHECK(nd < 64, "make_index_map", "iteration over more than 64 non-mergeable axes of ", shape_str(shape));
      sizes[nd] = shape[d];
      for (int k = 0; k < N; ++k) st[k][nd] = (*strides[k])[d];
      ++nd;
    }
  }
  FGVC_CHECK(nd <= kMaxDims, "make_index_map", "iteration over ", nd,
             " non-mergeable axes is more than the supported ", kMaxDims);
  m.ndim = nd;
  for (int d = 0; d < nd; ++d) {  // back to outermost-first order
    m.size[d] = sizes[nd - 1 - d];
    for (int k = 0; k < N; ++k) m.stride[k][d] = st[k][nd - 1 - d];
  }
  return m;
}

// Strides of `t_shape`/`t_strides` seen over the broadcast shape `out` (0 on broadcast axes).
inline Strides broadcast_strides(const Shape& t_shape, const Strides& t_strides, const Shape& out) {
  Strides s(out.size(), 0);
  const size_t off = out.size() - t_shape.size();
  for (size_t d = 0; d < t_shape.size(); ++d) s[off + d] = t_shape[d] == 1 ? 0 : t_strides[d];
  return s;
}

}  // namespace fgvc
