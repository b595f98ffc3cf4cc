// The GPU kernel's pricing, one thread's share (emd/transport_simplex.cu): the most
// improvable of the cells first, first + stride, first + 2 stride, ... of an m x n row-major
// cost matrix. Host and device code, so that the tests run it on the host.
//
// Each cell's (row, column) is kept up to date by adds (CellWalk): dividing each cell's index
// by n would cost a GPU thread about a hundred instructions per cell (a 64-bit division),
// more than the reduced cost itself. Four loads are issued before any is used, so that four
// memory latencies overlap: with one load at a time a thread block mostly waits on memory.
#pragma once

#include "tensor/macros.h"

namespace fgvc {
namespace emd {
namespace detail {

struct CellWalk {
  long long k;    // the cell: k == i * n + j
  int i, j;
  int di, dj, n;  // the stride in whole rows and a remainder: stride == di * n + dj, dj < n
  int stride;
};

FGVC_HD inline CellWalk cell_walk(long long first, int stride, int n) {
  return {first, static_cast<int>(first / n), static_cast<int>(first % n), stride / n, stride % n, n, stride};
}

// The walk one stride on.
FGVC_HD inline CellWalk advanced(CellWalk w) {
  w.k += w.stride;
  w.i += w.di;
  w.j += w.dj;
  if (w.j >= w.n) w.j -= w.n, ++w.i;
  return w;
}

struct Candidate {
  double r;     // its reduced cost
  long long k;  // the cell; -1: none
};

// The better of two candidates: the lower reduced cost, then the smaller cell.
FGVC_HD inline Candidate better(Candidate a, Candidate b) {
  if (b.k < 0) return a;
  if (a.k < 0) return b;
  return (b.r < a.r || (b.r == a.r && b.k < a.k)) ? b : a;
}

FGVC_HD inline double read_only(const double* p) {
#ifdef __CUDA_ARCH__
  return __ldg(p);  // through the read-only data cache
#else
  return *p;
#endif
}

// The best of c and the cells first, first + stride, ... below end, by reduced cost
// cost_ij - u_i - v_j; a cell must beat c.r to count (c.r = -tolerance with no candidate).
FGVC_HD inline Candidate best_of_cells(const double* cost, const double* u, const double* v, int n, long long first,
                                       int stride, long long end, Candidate c) {
  constexpr int kUnroll = 4;  // loads in flight
  CellWalk w = cell_walk(first, stride, n);
  // Unrolled by hand with scalars rather than four CellWalk copies: the kernel has 64
  // registers a thread, and the copies spill.
  for (; w.k + (kUnroll - 1LL) * stride < end; w = advanced(w)) {
    int i[kUnroll], j[kUnroll];
    i[0] = w.i, j[0] = w.j;
    for (int s = 1; s < kUnroll; ++s) {
      i[s] = i[s - 1] + w.di, j[s] = j[s - 1] + w.dj;
      if (j[s] >= n) j[s] -= n, ++i[s];
    }
    const double* at = cost + w.k;
    double r[kUnroll];
    for (int s = 0; s < kUnroll; ++s) r[s] = read_only(at + static_cast<long long>(s) * stride);
    for (int s = 0; s < kUnroll; ++s) r[s] = r[s] - u[i[s]] - v[j[s]];  // as the CPU rounds it
    for (int s = 0; s < kUnroll; ++s)
      if (r[s] < c.r) c = {r[s], w.k + static_cast<long long>(s) * stride};  // in cell order: a tie keeps the first
    w.k += (kUnroll - 1LL) * stride, w.i = i[kUnroll - 1], w.j = j[kUnroll - 1];  // and one more stride in the loop's step
  }
  for (; w.k < end; w = advanced(w)) {
    const double r = read_only(cost + w.k) - u[w.i] - v[w.j];
    if (r < c.r) c = {r, w.k};
  }
  return c;
}

// The first cell of first, first + stride, ... below end whose reduced cost is below -tol
// (Bland's rule), or none.
FGVC_HD inline Candidate first_improvable(const double* cost, const double* u, const double* v, int n, long long first,
                                          int stride, long long end, double tol) {
  for (CellWalk w = cell_walk(first, stride, n); w.k < end; w = advanced(w)) {
    const double r = read_only(cost + w.k) - u[w.i] - v[w.j];
    if (r < -tol) return {r, w.k};
  }
  return {0.0, -1};
}

}  // namespace detail
}  // namespace emd
}  // namespace fgvc
