// The GPU solver's basis tree: a rooted spanning tree whose preorder is kept in an array,
// so that every subtree is one run of positions. A pivot then takes one thread's walk along
// the cycle (O(cycle)) and one parallel pass over the positions that change:
//
//   plan_pivot (one thread)   the cycle by subtree sizes (an ancestor's subtree is larger),
//                             theta moved round it, the leaving edge (q, parent q); the
//                             subtree of q is re-rooted at s and hung from t; parents, flows
//                             and sizes of the O(cycle) nodes that change; a Move for the rest;
//   move_to_scratch (each x)  position x's node to its new position (in scratch);
//   place (each y)            back into order and pos, and the moved subtree's potentials
//                             shifted by the entering cell's reduced cost.
//
// Between the three steps every thread must see the others' writes (a block barrier); within
// a step no two positions write the same element. The new preorder of the moved subtree: s's
// own subtree, then each stem node w_i (s = w_0, ..., w_k = q) followed by the rest of its old
// subtree, the run before w_{i-1}'s subtree and then the run after it. The same functions run
// on the host in the tests (tests/test_emd.cpp), which check every invariant after each pivot;
// turn_cycle and rehang are the CPU solver's too (emd/transport_simplex.cpp).
#pragma once

#include "tensor/macros.h"

namespace fgvc {
namespace emd {
namespace detail {

struct ArrayTree {
  int m, n;             // nodes 0..m-1 are rows, m..m+n-1 columns; node 0 is the root
  const double* cost;   // m x n, row-major
  int* parent;          // -1 at the root
  int* size;            // nodes in each subtree
  int* order;           // the preorder: order[pos[x]] == x, order[0] == 0
  int* pos;
  int* scratch;         // one node per changing position, during a move
  double* flow;         // on the edge to the parent
  double* pot;          // u_0..u_{m-1}, v_0..v_{n-1}
  int* path_a;          // the cycle's two tree paths (one thread's scratch, m + n each)
  int* path_b;
  int* stem_pos;        // the stem's old positions and subtree sizes (m + n each)
  int* stem_size;
  double* stem_flow;    // the stem's flows, read before they move (emd/warp_plan.h; m + n)
};

// What one pivot does to the preorder, for all threads.
struct Move {
  int lo, hi;      // the positions that change: [lo, hi)
  int from, count; // the moved subtree's old run [from, from + count)
  int to;          // its new first position
  int k;           // stem nodes: k + 1
  int t_before;    // 1: t precedes the run (the positions between move right), 0: it follows
  int s_is_row;    // potentials of the moved subtree: s's side += shift, the other side -= shift
  double shift;
};

FGVC_HD inline long long tree_edge_cell(const ArrayTree& t, int x, int p) {
  const int i = x < t.m ? x : p, j = (x < t.m ? p : x) - t.m;
  return static_cast<long long>(i) * t.n + j;
}

// What the CPU solver and the GPU kernel share: the pivot's cycle and the parent, flow and
// size changes it makes. Both take the same leaving edge, so both pivot alike.
struct Cycle {
  int join;      // the two tree paths' common ancestor
  int leave;     // the leaving edge is (stem[leave], its parent), stem = path_a if on_a else path_b
  bool on_a;
  double theta;  // the flow moved round the cycle (0: degenerate); -1: not a tree
};

// Which minus cell leaves among those of least flow: the rule that keeps the tree strongly
// feasible (Cunningham 1976), so that degenerate pivots cannot cycle and rarely run long.
// The tree is strongly feasible when every basic cell of zero flow hangs a row from its
// parent column (each node could then send a little flow to the root): equivalently, every
// node sends eps to the root, and the eps-perturbed problem is feasible and nondegenerate.
// Its ratio test breaks the ties of theta: a minus cell on the column's path b (a column
// child, flow - eps * subtree) leaves before any on the row's path a (a row child, flow +
// eps * subtree); on path b the one nearest the join (largest subtree), on path a the one
// nearest a. Smaller rank leaves first; ranks of one cycle are distinct.
FGVC_HD inline int leaving_rank(int on_a, int index, int lb) { return on_a ? lb + index : lb - 1 - index; }

// The cycle the entering cell (row a, column node b) closes, found by subtree sizes (an
// ancestor's subtree is larger), and theta moved round it. path_a and path_b (m + n entries
// each) receive the two tree paths up to the join. Round the cycle from the entering cell
// the signs alternate, minus first on both paths; the leaving cell is the minus cell of
// least flow, ties broken by leaving_rank.
FGVC_HD inline Cycle turn_cycle(int m, int n, const int* parent, const int* size, double* flow, int a, int b,
                                int* path_a, int* path_b) {
  const int nodes = m + n;
  Cycle c{-1, -1, true, -1.0};
  int la = 0, lb = 0, x = a, y = b;
  while (x != y) {
    if (la + lb >= nodes) return c;  // a cycle has at most m + n - 1 tree edges
    if (size[x] < size[y]) {         // then x is no ancestor of y
      path_a[la++] = x;
      x = parent[x];
    } else {
      path_b[lb++] = y;
      y = parent[y];
    }
    if (x < 0 || y < 0) return c;
  }
  c.join = x;
  int leave_rank = 0;
  for (int side = 0; side < 2; ++side) {
    const int* path = side == 0 ? path_a : path_b;
    const int len = side == 0 ? la : lb;
    for (int i = 0; i < len; i += 2) {
      const double f = flow[path[i]];
      const int rank = leaving_rank(side == 0, i, lb);
      if (c.leave < 0 || f < c.theta || (f == c.theta && rank < leave_rank))
        c.theta = f, c.leave = i, c.on_a = side == 0, leave_rank = rank;
    }
  }
  if (c.leave < 0) return Cycle{-1, -1, true, -1.0};
  for (int i = 0; i < la; ++i) flow[path_a[i]] += (i & 1) ? c.theta : -c.theta;
  for (int i = 0; i < lb; ++i) flow[path_b[i]] += (i & 1) ? c.theta : -c.theta;
  return c;
}

// The subtree under q = stem[k] (which holds s = stem[0]) re-rooted at s and hung from
// `target` by the entering edge: the stem's sizes from the old ones (descending, each reads
// the one below it before it changes), the two paths' sizes up to the join, the parents
// from s up to q reversed, each stem edge's flow moved to its new child. False if the
// parents are not a tree.
FGVC_HD inline bool rehang(int nodes, int* parent, int* size, double* flow, const int* stem, int k, int target,
                           int join, double theta) {
  const int q = stem[k], p = parent[q], count = size[q];
  for (int i = k; i >= 1; --i) size[stem[i]] = count - size[stem[i - 1]];
  size[stem[0]] = count;
  int steps = 0;
  for (int u = p; u != join; u = parent[u]) {
    if (u < 0 || ++steps > nodes) return false;
    size[u] -= count;
  }
  for (int u = target; u != join; u = parent[u]) {
    if (u < 0 || ++steps > 2 * nodes) return false;
    size[u] += count;
  }
  int up = target;
  double carry = theta;
  for (int i = 0; i <= k; ++i) {
    const int w = stem[i];
    const double old_flow = flow[w];
    parent[w] = up;
    flow[w] = carry;
    carry = old_flow;
    up = w;
  }
  return true;
}

// One thread: the pivot on `cell` (reduced cost d < 0) as far as parents, flows and sizes
// go, and the Move for the preorder. Returns theta (0: a degenerate pivot), or -1 if the
// tree is broken (a guard: a kernel must not hang on a bug).
FGVC_HD inline double plan_pivot(ArrayTree& t, long long cell, double d, Move* move) {
  const int a = static_cast<int>(cell / t.n), b = t.m + static_cast<int>(cell % t.n);
  const Cycle c = turn_cycle(t.m, t.n, t.parent, t.size, t.flow, a, b, t.path_a, t.path_b);
  if (c.theta < 0) return -1;
  const int s = c.on_a ? a : b, target = c.on_a ? b : a;
  const int* stem = c.on_a ? t.path_a : t.path_b;
  const int k = c.leave, q = stem[k], count = t.size[q], from = t.pos[q], at_t = t.pos[target];
  for (int i = 0; i <= k; ++i) t.stem_pos[i] = t.pos[stem[i]], t.stem_size[i] = t.size[stem[i]];
  if (!rehang(t.m + t.n, t.parent, t.size, t.flow, stem, k, target, c.join, c.theta)) return -1;
  move->from = from;
  move->count = count;
  move->k = k;
  move->t_before = at_t < from;
  if (at_t < from) move->lo = at_t + 1, move->hi = from + count, move->to = at_t + 1;
  else move->lo = from, move->hi = at_t + 1, move->to = at_t - count + 1;
  move->s_is_row = s < t.m;
  move->shift = d;
  return c.theta;
}

// The new position of old position x, lo <= x < hi.
FGVC_HD inline int new_position(const ArrayTree& t, const Move& mv, int x) {
  if (x < mv.from || x >= mv.from + mv.count) return mv.t_before ? x + mv.count : x - mv.count;
  // The innermost stem subtree that holds x (they nest: w_0's inside w_1's ... inside q's).
  int lo = 0, hi = mv.k;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (x >= t.stem_pos[mid] && x < t.stem_pos[mid] + t.stem_size[mid]) hi = mid;
    else lo = mid + 1;
  }
  if (lo == 0) return mv.to + (x - t.stem_pos[0]);
  // In w_i's part: w_i lands after the parts below it (stem_size[i - 1] nodes), then its run
  // before w_{i-1}'s subtree, then its run after it, which lands where it already was
  // relative to w_i.
  const int offset = (x - t.stem_pos[lo]) + (x < t.stem_pos[lo - 1] ? t.stem_size[lo - 1] : 0);
  return mv.to + offset;
}

FGVC_HD inline void move_to_scratch(const ArrayTree& t, const Move& mv, int x) {
  t.scratch[new_position(t, mv, x) - mv.lo] = t.order[x];
}

FGVC_HD inline void place(const ArrayTree& t, const Move& mv, int y) {
  const int node = t.scratch[y - mv.lo];
  t.order[y] = node;
  t.pos[node] = y;
  if (y >= mv.to && y < mv.to + mv.count) t.pot[node] += ((node < t.m) == (mv.s_is_row != 0)) ? mv.shift : -mv.shift;
}

// Every potential from the parent pointers by pointer jumping (the kernel's exact
// recomputation; root: node 0, potential 0). pot_x = c(x, parent x) - pot_parent, so after
// jumping to an ancestor a, pot_x = acc_x + pot_a or acc_x - pot_a: plus where x and a are on
// the same side (an even number of hops). Round 0 for node x:
FGVC_HD inline void jump_start(const ArrayTree& t, int x, int* anc, double* acc) {
  const int p = t.parent[x];
  anc[x] = p;
  acc[x] = p < 0 ? 0.0 : t.cost[tree_edge_cell(t, x, p)];
}

// One round for node x, from (anc, acc) into (anc_out, acc_out); true if x still has an
// ancestor to jump to (another round is needed). At the end pot_x = acc_x.
FGVC_HD inline bool jump_once(const ArrayTree& t, int x, const int* anc, const double* acc, int* anc_out,
                              double* acc_out) {
  const int a = anc[x];
  if (a < 0) {
    anc_out[x] = -1;
    acc_out[x] = acc[x];
    return false;
  }
  acc_out[x] = acc[x] + (((x < t.m) != (a < t.m)) ? -acc[a] : acc[a]);
  anc_out[x] = anc[a];
  return anc[a] >= 0;
}

}  // namespace detail
}  // namespace emd
}  // namespace fgvc
