// plan_pivot (emd/array_tree.h) spread over the 32 lanes of a warp: the same cycle, leaving
// edge, parents, flows, sizes and Move, with the serial part cut to the climb from each end
// of the entering cell. One thread's plan is a chain of dependent shared-memory reads about
// four times the cycle's length (walk, leaving edge, flows, stem, rehang); here two lanes
// climb at once and every other step takes each lane a cycle's length / 32 entries.
//
// The phases, with the warp synchronised (__syncwarp) after each:
//   1. climb     lane 0 from the row end a, lane 1 from the column end b, each up to the first
//                ancestor of the other end (by preorder intervals: x is an ancestor of y iff
//                pos x <= pos y < pos x + size x): the two tree paths up to their join;
//   2. leaving   each lane's best minus cell of the two paths (least flow, then the least
//                leaving_rank, as turn_cycle), reduced over the lanes (shuffles on the GPU);
//   3. settle    lane 0: theta, the stem, and the Move (old positions and sizes);
//   4. flows     theta round the cycle; the stem's old positions and sizes copied;
//   5. sizes     the stem's and both paths' new sizes; the stem's flows read;
//   6. rehang    the stem's parents reversed and each stem flow moved to its new child.
// plan_by_lanes runs the phases in order; the kernel and the tests (tests/test_emd.cpp, the
// lanes of each phase one after another in a shuffled order, every pivot checked against
// plan_pivot) both call it.
#pragma once

#include "emd/array_tree.h"

namespace fgvc {
namespace emd {
namespace detail {

constexpr int kLanes = 32;

// A minus cell of the cycle: entry `index` of path_a (on_a) or path_b; index -1: none.
struct Leaving {
  double flow;
  int rank;  // leaving_rank (emd/array_tree.h): distinct within a cycle
  int index;
  int on_a;
};

// The leaving cell of two: the least flow, then the smaller rank.
FGVC_HD inline Leaving better_leaving(Leaving x, Leaving y) {
  if (y.index < 0) return x;
  if (x.index < 0) return y;
  return (y.flow < x.flow || (y.flow == x.flow && y.rank < x.rank)) ? y : x;
}

// What the lanes share between phases (in shared memory on the GPU).
struct LanePlan {
  long long cell;  // the entering cell and its reduced cost
  double d;
  int la, lb;      // the two paths' lengths
  int lost[2];     // lane 0 / lane 1 climbed off the tree (each lane writes its own flag)
  int broken;      // 1: the parents are not a tree (a guard: a kernel must not hang on a bug)
  Leaving leave;
  int k, target;   // stem[0..k] (stem[0] = s, stem[k] = q), hung from target
  int count;       // old size of q's subtree
};

FGVC_HD inline void plan_start(long long cell, double d, LanePlan* p) {
  p->cell = cell;
  p->d = d;
  p->la = p->lb = 0;
  p->lost[0] = p->lost[1] = 0;
  p->broken = 0;
}

// Phase 1, lanes 0 and 1: from one end of the entering cell up to, not including, the first
// ancestor of the other end.
FGVC_HD inline void plan_climb(const ArrayTree& t, LanePlan* p, int lane) {
  if (lane > 1) return;
  const int a = static_cast<int>(p->cell / t.n), b = t.m + static_cast<int>(p->cell % t.n);
  int x = lane == 0 ? a : b;
  const int other = lane == 0 ? b : a, at = t.pos[other];
  int* path = lane == 0 ? t.path_a : t.path_b;
  int len = 0;
  while (!(t.pos[x] <= at && at < t.pos[x] + t.size[x])) {
    path[len++] = x;
    x = t.parent[x];
    if (x < 0 || len >= t.m + t.n) {  // the root is everyone's ancestor
      p->lost[lane] = 1;
      return;
    }
  }
  if (lane == 0) p->la = len;
  else p->lb = len;
}

// Phase 2, every lane: its share of the minus cells (even entries of both paths).
FGVC_HD inline Leaving plan_leaving_share(const ArrayTree& t, const LanePlan& p, int lane) {
  Leaving best{0.0, 0, -1, 0};
  for (int side = 0; side < 2; ++side) {
    const int* path = side == 0 ? t.path_a : t.path_b;
    const int len = side == 0 ? p.la : p.lb;
    for (int e = 2 * lane; e < len; e += 2 * kLanes) {
      const int w = path[e];
      best = better_leaving(best, Leaving{t.flow[w], leaving_rank(side == 0, e, p.lb), e, side == 0});
    }
  }
  return best;
}

// Phase 3, lane 0: the leaving cell found; the stem and the preorder's Move.
FGVC_HD inline void plan_settle(const ArrayTree& t, LanePlan* p, Leaving leave, Move* move) {
  if (p->lost[0] || p->lost[1] || leave.index < 0) {
    p->broken = 1;
    return;
  }
  p->leave = leave;
  const int a = static_cast<int>(p->cell / t.n), b = t.m + static_cast<int>(p->cell % t.n);
  const int s = leave.on_a ? a : b;
  const int* stem = leave.on_a ? t.path_a : t.path_b;
  p->k = leave.index;
  p->target = leave.on_a ? b : a;
  const int q = stem[p->k], from = t.pos[q], at_t = t.pos[p->target];
  p->count = t.size[q];
  move->from = from;
  move->count = p->count;
  move->k = p->k;
  move->t_before = at_t < from;
  if (at_t < from) move->lo = at_t + 1, move->hi = from + p->count, move->to = at_t + 1;
  else move->lo = from, move->hi = at_t + 1, move->to = at_t - p->count + 1;
  move->s_is_row = s < t.m;
  move->shift = p->d;
}

// Phase 4, every lane: theta round the cycle (minus on even entries); the stem's old
// positions and sizes.
FGVC_HD inline void plan_flows(const ArrayTree& t, const LanePlan& p, int lane) {
  const double theta = p.leave.flow;
  for (int e = lane; e < p.la; e += kLanes) t.flow[t.path_a[e]] += (e & 1) ? theta : -theta;
  for (int e = lane; e < p.lb; e += kLanes) t.flow[t.path_b[e]] += (e & 1) ? theta : -theta;
  const int* stem = p.leave.on_a ? t.path_a : t.path_b;
  for (int i = lane; i <= p.k; i += kLanes) t.stem_pos[i] = t.pos[stem[i]], t.stem_size[i] = t.size[stem[i]];
}

// Phase 5, every lane: new sizes (the stem's from the old ones; the stem path above q loses
// q's subtree, the other path gains it) and the stem's flows (after phase 4) read.
FGVC_HD inline void plan_sizes(const ArrayTree& t, const LanePlan& p, int lane) {
  const int* stem = p.leave.on_a ? t.path_a : t.path_b;
  const int* other = p.leave.on_a ? t.path_b : t.path_a;
  const int stem_len = p.leave.on_a ? p.la : p.lb, other_len = p.leave.on_a ? p.lb : p.la;
  for (int i = lane; i <= p.k; i += kLanes) {
    t.size[stem[i]] = i == 0 ? p.count : p.count - t.stem_size[i - 1];
    t.stem_flow[i] = t.flow[stem[i]];
  }
  for (int e = p.k + 1 + lane; e < stem_len; e += kLanes) t.size[stem[e]] -= p.count;
  for (int e = lane; e < other_len; e += kLanes) t.size[other[e]] += p.count;
}

// Phase 6, every lane: the stem hung the other way round, from target.
FGVC_HD inline void plan_rehang(const ArrayTree& t, const LanePlan& p, int lane) {
  const int* stem = p.leave.on_a ? t.path_a : t.path_b;
  for (int i = lane; i <= p.k; i += kLanes) {
    t.parent[stem[i]] = i == 0 ? p.target : stem[i - 1];
    t.flow[stem[i]] = i == 0 ? p.leave.flow : t.stem_flow[i - 1];
  }
}

// The whole plan, as the kernel's warp 0 and the host tests both run it. phase(f) runs
// f(lane) in every lane, then synchronises the lanes (__syncwarp on the GPU; on the host,
// the lanes of a phase run one after another). best(f) returns, in every lane, the best
// leaving cell of f(lane) over the lanes (shuffles on the GPU). On return p->broken says
// whether the parents were a tree; if not, nothing in the tree has changed.
template <class Phase, class Best>
FGVC_HD inline void plan_by_lanes(const ArrayTree& t, long long cell, double d, LanePlan* p, Move* move, Phase phase,
                                  Best best) {
  phase([&](int lane) {
    if (lane == 0) plan_start(cell, d, p);
  });
  phase([&](int lane) { plan_climb(t, p, lane); });
  // A lost climb left its path's length 0; settle then marks the plan broken.
  const Leaving leave = best([&](int lane) { return plan_leaving_share(t, *p, lane); });
  phase([&](int lane) {
    if (lane == 0) plan_settle(t, p, leave, move);
  });
  if (p->broken) return;  // the same in every lane after the phase's synchronisation
  phase([&](int lane) { plan_flows(t, *p, lane); });
  phase([&](int lane) { plan_sizes(t, *p, lane); });
  phase([&](int lane) { plan_rehang(t, *p, lane); });
}

}  // namespace detail
}  // namespace emd
}  // namespace fgvc
