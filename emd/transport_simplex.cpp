#include "emd/transport_simplex.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <numeric>
#include <string>

#include "emd/array_tree.h"
#include "emd/parallel_each.h"
#include "fgvc/config.h"
#include "tensor/error.h"

namespace fgvc {
namespace emd {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct UnionFind {
  std::vector<int> p;
  explicit UnionFind(int n) : p(static_cast<size_t>(n)) { std::iota(p.begin(), p.end(), 0); }
  int find(int x) {
    while (p[x] != x) x = p[x] = p[p[x]];
    return x;
  }
  bool unite(int a, int b) {
    a = find(a);
    b = find(b);
    if (a == b) return false;
    p[a] = b;
    return true;
  }
};

// min(init, min over j < len of row[j] - ui - v[j]): pricing's inner loop. Four
// independent vector minimums keep the adds busy (one running minimum waits on itself
// every element); a minimum is exact in any order, and each reduced cost is computed as
// the scalar code does, so the caller finds its position again by equality. Built for AVX2
// too, chosen at load time where the CPU has it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("avx2", "default")))
#endif
double min_reduced_cost(const double* row, const double* v, double ui, int len, double init) {
  typedef double Vec __attribute__((vector_size(32)));
  Vec m0 = {init, init, init, init}, m1 = m0, m2 = m0, m3 = m0;
  int j = 0;
  for (; j + 16 <= len; j += 16) {
    Vec c0, c1, c2, c3, w0, w1, w2, w3;  // unaligned loads
    std::memcpy(&c0, row + j, sizeof c0);
    std::memcpy(&c1, row + j + 4, sizeof c1);
    std::memcpy(&c2, row + j + 8, sizeof c2);
    std::memcpy(&c3, row + j + 12, sizeof c3);
    std::memcpy(&w0, v + j, sizeof w0);
    std::memcpy(&w1, v + j + 4, sizeof w1);
    std::memcpy(&w2, v + j + 8, sizeof w2);
    std::memcpy(&w3, v + j + 12, sizeof w3);
    const Vec r0 = c0 - ui - w0, r1 = c1 - ui - w1, r2 = c2 - ui - w2, r3 = c3 - ui - w3;
    m0 = r0 < m0 ? r0 : m0;
    m1 = r1 < m1 ? r1 : m1;
    m2 = r2 < m2 ? r2 : m2;
    m3 = r3 < m3 ? r3 : m3;
  }
  double out = init;
  for (int k = 0; k < 4; ++k) out = std::min({out, m0[k], m1[k], m2[k], m3[k]});
  for (; j < len; ++j) {
    const double r = row[j] - ui - v[j];
    out = r < out ? r : out;
  }
  return out;
}

// The simplex over the classes with non-zero weight. Nodes 0..m-1 are sources (rows),
// m..m+n-1 targets (columns); every basic cell is a tree edge, stored at its child node.
//
// The tree is a threaded index: parent, the preorder as a circular doubly linked list
// (next_, prev_), and each subtree's size and last node in that order. A subtree is one
// run of the list, so a pivot moves it with a few splices per node of its stem (the path
// it turns on), the cycle is found by sizes (an ancestor's subtree is larger), and the
// only work that grows with the tree is the potentials' shift, done on whichever side of
// the cut is smaller. Where rows outnumber columns (a large source against a small target)
// the shift does less: a row's potential follows from its parent column's (u_i = c - v),
// so only columns hold theirs, and the moved subtree's columns are found through a
// skeleton of the tree without its leaf rows (most rows; see lean_). The tree is kept strongly feasible (the start's allocations and the
// leaving cell's ties, emd/array_tree.h), which is what keeps balanced classes and a domain
// against itself, where most pivots are degenerate, from stalling.
class Solver {
 public:
  // exact: integer weights (Reduced::flow_scale), where the tree stays strongly feasible to
  // the bit (checked after every pivot in the sanitizer builds).
  Solver(const double* c, int m, int n, std::vector<double> a, std::vector<double> b, const Options& o, double max_cost,
         bool exact)
      : c_(c), m_(m), n_(n), a_(std::move(a)), b_(std::move(b)), tol_(o.tolerance * max_cost),
        tolerance_(o.tolerance), max_cost_(max_cost), max_iterations_(o.max_iterations),
        degenerate_limit_(o.degenerate_limit > 0 ? o.degenerate_limit : m + n), exact_(exact) {
    row_candidates_ = std::max<int64_t>(o.row_candidates, 0);  // 0 here: every row (the callers resolve the default)
    const int64_t cells = static_cast<int64_t>(m) * n;
    // Pricing ~2 sqrt(cells) cells per pivot balances pivots saved against scanning cost
    // (measured on 1000 x 200 to 6089 x 200 problems).
    block_ = o.block_size > 0 ? o.block_size
                              : std::max<int64_t>(256, static_cast<int64_t>(2 * std::sqrt(double(cells))));
    block_ = std::min<int64_t>(std::max<int64_t>(block_, 1), std::max<int64_t>(cells, 1));
    const int nodes = m + n;
    parent_.assign(nodes, -1);
    next_.assign(nodes, 0);
    prev_.assign(nodes, 0);
    size_.assign(nodes, 1);
    last_.assign(nodes, 0);
    flow_.assign(nodes, 0.0);
    pot_.assign(nodes, 0.0);
    path_a_.assign(nodes, 0);
    path_b_.assign(nodes, 0);
    lean_ = m >= kLeanRows * n;
    if (lean_) {
      up_.assign(m, 0);
      up_cost_.assign(m, 0.0);
      kids_.assign(nodes, -1);
      sibling_next_.assign(nodes, -1);
      sibling_prev_.assign(nodes, -1);
      listed_at_.assign(nodes, -1);
    }
  }

  void run() {
    initial_basis();
    pivot_to_optimum();
  }
  // The greedy start alone (the GPU solver pivots from it): parent of each node (-1 at the
  // root, node 0) and the flow on the edge to it.
  void start() { initial_basis(); }
  // A basis found elsewhere (the GPU's): each node's parent (-1 at the root, node 0), the
  // flow on the edge to it, the potentials its pricing last used and the pivots it took.
  void load(const std::vector<int>& parent, const std::vector<double>& flow, const std::vector<double>& pot,
            int64_t iterations) {
    const int nodes = m_ + n_;
    FGVC_CHECK(static_cast<int>(parent.size()) == nodes && parent[0] == -1, "emd", "internal error: a loaded basis");
    std::vector<Edge> edges;
    for (int x = 1; x < nodes; ++x) {
      FGVC_CHECK(parent[x] >= 0 && parent[x] < nodes, "emd", "internal error: a loaded basis");
      edges.push_back({x, parent[x], flow[x]});
    }
    build_tree(edges);
    pot_ = pot;
    iterations_ = iterations;
  }
  const std::vector<int>& parents() const { return parent_; }
  int64_t bland_pivots() const { return bland_pivots_; }
  const std::vector<double>& flows() const { return flow_; }
  const std::vector<int>& sizes() const { return size_; }
  std::vector<int> preorder() const {
    std::vector<int> order{0};
    for (int x = next_[0]; x != 0; x = next_[x]) order.push_back(x);
    return order;
  }

  void pivot_to_optimum() {
    bool refreshed = false;
    for (;;) {
      int ei, ej;
      double d;
      if (!find_entering(&ei, &ej, &d)) {
        if (refreshed) break;
        refresh_potentials();  // drift from incremental updates must not hide a last pivot
        refreshed = true;
        continue;
      }
      refreshed = false;
      // max_iterations pivots are allowed; an error only if the answer still improves after them.
      FGVC_CHECK(max_iterations_ <= 0 || iterations_ < max_iterations_, "emd", "no optimum after ", iterations_,
                 " pivots (max_iterations)");
      pivot(ei, ej, d);
#if FGVC_EMD_VERIFY_TREE
      if (iterations_ % verify_interval() == 0) verify_tree();
#endif
      if (++iterations_ % 1024 == 0) refresh_potentials();
    }
#if FGVC_EMD_VERIFY_TREE
    verify_tree();
#endif
  }

  // Where the pricing above stopped, every reduced cost, as computed, is at least -tol_, and
  // the computed ones are off by the rounding of the potentials: so the cost is within
  // tol_ + that rounding of the optimum (the flow totals 1). Costs of a few orders of
  // magnitude make that a few 1e-12 of the cost. Where costs span many more (a class far
  // from all others, and an optimum that is a tiny fraction of the largest cost), it is not
  // enough: a far class moves the potentials of the cheap cells to its own scale, and their
  // rounding outgrows their reduced costs. Then polish: potentials in double-double, each
  // cell's reduced cost to a few ulps of its own cost, and pivots on the cells below
  // -tolerance x their own cost, until there are none. `min_cost` (the smallest cost of the
  // problem, a lower bound on the optimum) rules out a polish where the cost already is at it.
  // Weights that are not integers get a polish too, with two limits: the flows themselves
  // carry rounding (a crumb of 1e-16 on a cell of cost 1e9), which no pivot removes, and
  // their tree is not kept strongly feasible, so as in pivot_to_optimum Bland's rule follows
  // a long degenerate run, and the polish ends after kPolishPivotsPerNode pivots a node
  // (the flow stays feasible, its cost only falls).
  void polish_if_needed(double min_cost) {
    if (!needs_polish(min_cost)) return;
    refresh_exact_potentials();
    for (int64_t k = 0; exact_ || k < kPolishPivotsPerNode * (m_ + n_); ++k) {
      int ei, ej;
      double d;
      if (!find_entering_exactly(&ei, &ej, &d)) break;
      FGVC_CHECK(max_iterations_ <= 0 || iterations_ < max_iterations_, "emd", "no optimum after ", iterations_,
                 " pivots (max_iterations)");
      pivot(ei, ej, d);  // its shift of the potentials is replaced by the exact ones
      ++iterations_;
      refresh_exact_potentials();
#if FGVC_EMD_VERIFY_TREE
      verify_tree();
#endif
    }
  }

  // u_0..u_{m-1}, v_0..v_{n-1}, as pricing last used them (pivot_to_optimum ends on a refresh).
  const std::vector<double>& potentials() const { return pot_; }
  // The potentials' low parts after a polish (the exact potential is pot + pot_low), else empty.
  const std::vector<double>& potentials_low() const { return pot_lo_; }
  int64_t iterations() const { return iterations_; }
  // Pricing::Rows: the entering cells come from this pricer's passes (not owned).
  void set_row_pricer(detail::RowPricer* pricer) { pricer_ = pricer; }
  int64_t pricing_passes() const { return passes_; }
  double pass_seconds() const { return pass_seconds_; }

 private:
  double cost(int i, int j) const { return c_[static_cast<int64_t>(i) * n_ + j]; }
  // The (row, column) of the edge between two nodes of different sides.
  std::pair<int, int> cell_of(int x, int y) const { return x < m_ ? std::pair{x, y - m_} : std::pair{y, x - m_}; }
  double edge_cost(int x, int y) const {
    const auto [i, j] = cell_of(x, y);
    return cost(i, j);
  }
  int64_t cell_index(int x, int y) const {
    const auto [i, j] = cell_of(x, y);
    return static_cast<int64_t>(i) * n_ + j;
  }

  struct Edge {
    int x, y;
    double flow;
  };

  // The `count` cheapest cells of row i, as (cost, cell): one pass that keeps them sorted
  // by insertion (most cells fail the first comparison).
  void cheapest_in_row(int i, int count, std::pair<double, int64_t>* out) const {
    double best[kStartCellsPerRow];
    int col[kStartCellsPerRow];
    const double* row = c_ + static_cast<int64_t>(i) * n_;
    for (int r = 0; r < count; ++r) best[r] = row[r], col[r] = r;
    for (int r = 1; r < count; ++r)  // insertion sort of the first `count`
      for (int k = r; k > 0 && best[k] < best[k - 1]; --k) std::swap(best[k], best[k - 1]), std::swap(col[k], col[k - 1]);
    for (int j = count; j < n_; ++j) {
      if (!(row[j] < best[count - 1])) continue;
      int k = count - 1;
      for (; k > 0 && row[j] < best[k - 1]; --k) best[k] = best[k - 1], col[k] = col[k - 1];
      best[k] = row[j], col[k] = j;
    }
    for (int r = 0; r < count; ++r) out[r] = {best[r], static_cast<int64_t>(i) * n_ + col[r]};
  }

  // A supply, demand or flow of the eps-perturbed problem behind the strongly feasible tree
  // (emd/array_tree.h, leaving_rank): value + eps * coef, compared lexicographically.
  struct Perturbed {
    double value;
    int64_t coef;
    bool operator<=(const Perturbed& o) const { return value < o.value || (value == o.value && coef <= o.coef); }
    Perturbed operator-(const Perturbed& o) const { return {value - o.value, coef - o.coef}; }
  };

  // Start: the least-cost method on each row's few cheapest cells (the cells of an optimal
  // flow are mostly among them), then each row still open sends what is left to its
  // cheapest open columns. The allocations are made in the perturbed problem where every
  // node but the root (row 0) sends eps to the root: no proper subset of rows and columns
  // balances there, so each allocation exhausts exactly one row or column (the smaller,
  // lexicographically; it takes no further allocation) and the cells form a spanning tree
  // whose zero-flow cells all hang a row from a column: strongly feasible from the start.
  // (Rounding in weights that are not integers can leave crumbs; then zero-flow cells join
  // what is left, by a row where there is one.)
  void initial_basis() {
    const int nodes = m_ + n_;
    std::vector<Perturbed> supply(static_cast<size_t>(m_)), demand(static_cast<size_t>(n_));
    for (int i = 0; i < m_; ++i) supply[i] = {a_[i], i == 0 ? 1 - nodes : 1};
    for (int j = 0; j < n_; ++j) demand[j] = {b_[j], -1};
    std::vector<char> row_open(static_cast<size_t>(m_), 1), col_open(static_cast<size_t>(n_), 1);
    std::vector<Edge> edges;
    UnionFind uf(nodes);
    auto allocate = [&](int i, int j) {
      const bool row_ends = supply[i] <= demand[j];
      const Perturbed f = row_ends ? supply[i] : demand[j];
      supply[i] = supply[i] - f;
      demand[j] = demand[j] - f;
      edges.push_back({i, m_ + j, f.value});
      uf.unite(i, m_ + j);
      (row_ends ? row_open[i] : col_open[j]) = 0;
    };
    const int per_row = std::min(n_, kStartCellsPerRow);
    std::vector<std::pair<double, int64_t>> candidates(static_cast<size_t>(m_) * per_row);  // (cost, cell)
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(m_) * n_ > (1 << 18))
    for (int i = 0; i < m_; ++i) cheapest_in_row(i, per_row, &candidates[static_cast<size_t>(i) * per_row]);
    std::sort(candidates.begin(), candidates.end());
    for (const auto& [c, cell] : candidates) {
      const int i = static_cast<int>(cell / n_), j = static_cast<int>(cell % n_);
      if (row_open[i] && col_open[j]) allocate(i, j);
    }
    for (int i = 0; i < m_; ++i) {
      while (row_open[i]) {
        int best = -1;
        for (int j = 0; j < n_; ++j)
          if (col_open[j] && (best < 0 || cost(i, j) < cost(i, best))) best = j;
        if (best < 0) break;  // rounding left a crumb of supply and no column: drop it
        allocate(i, best);
      }
    }
    // Join what is left to node 0's component with zero-flow cells, cheapest first: by a
    // row of the component where it has one (the row hangs from a column), else by its column.
    for (int pass = 0; pass < 2; ++pass)
      for (int x = pass == 0 ? 1 : m_; x < (pass == 0 ? m_ : nodes); ++x) {
        if (uf.find(x) == uf.find(0)) continue;
        int best = -1;
        double best_cost = kInf;
        const int lo = x < m_ ? m_ : 0, hi = x < m_ ? nodes : m_;
        for (int y = lo; y < hi; ++y) {
          if (uf.find(y) != uf.find(0)) continue;
          if (edge_cost(x, y) < best_cost) {
            best_cost = edge_cost(x, y);
            best = y;
          }
        }
        if (best < 0) continue;  // a row's component with no column in node 0's yet: its column joins in pass 1
        edges.push_back({x, best, 0.0});
        uf.unite(x, best);
      }
    build_tree(edges);
  }

  // Hangs the start's edges from the root (node 0): parents, flows and potentials by a
  // depth-first walk, whose visiting order is the thread; then sizes and last nodes.
  void build_tree(const std::vector<Edge>& edges) {
    const int nodes = m_ + n_;
    // Neighbours of x: around[first[x] .. first[x + 1]), with the edge's index.
    std::vector<int> first(static_cast<size_t>(nodes) + 1, 0);
    for (const Edge& e : edges) ++first[e.x + 1], ++first[e.y + 1];
    for (int x = 0; x < nodes; ++x) first[x + 1] += first[x];
    std::vector<std::pair<int, int>> around(2 * edges.size());
    std::vector<int> fill(first.begin(), first.end() - 1);
    for (int e = 0; e < static_cast<int>(edges.size()); ++e) {
      around[fill[edges[e].x]++] = {edges[e].y, e};
      around[fill[edges[e].y]++] = {edges[e].x, e};
    }
    std::vector<int> order, stack{0};
    order.reserve(static_cast<size_t>(nodes));
    parent_[0] = -1;
    pot_[0] = 0.0;
    while (!stack.empty()) {
      const int x = stack.back();
      stack.pop_back();
      order.push_back(x);
      for (int k = first[x]; k < first[x + 1]; ++k) {
        const auto [y, e] = around[k];
        if (y == parent_[x]) continue;
        parent_[y] = x;
        flow_[y] = edges[e].flow;
        pot_[y] = edge_cost(x, y) - pot_[x];
        stack.push_back(y);
      }
    }
    FGVC_CHECK(static_cast<int>(order.size()) == nodes, "emd", "internal error: the initial basis is not a tree");
    std::vector<int> position(static_cast<size_t>(nodes));
    for (int k = 0; k < nodes; ++k) {
      position[order[k]] = k;
      next_[order[k]] = order[(k + 1) % nodes];
      prev_[order[(k + 1) % nodes]] = order[k];
    }
    for (int k = nodes - 1; k > 0; --k) size_[parent_[order[k]]] += size_[order[k]];
    for (int x = 0; x < nodes; ++x) last_[x] = order[position[x] + size_[x] - 1];
    if (lean_) {
      std::fill(kids_.begin(), kids_.end(), -1);
      std::fill(listed_at_.begin(), listed_at_.end(), -1);
      for (int i = 1; i < m_; ++i) up_[i] = parent_[i], up_cost_[i] = edge_cost(i, parent_[i]);
      for (int x = 1; x < nodes; ++x) relist(x);
    }
  }

  // Lean rows (m >= kLeanRows n). Every row but the root hangs from a column, so its
  // potential is that edge's cost less the column's: u_i = up_cost_[i] - v[up_[i]], exactly
  // what pricing needs, with no shift to keep it. (The root's: up_ 0 and up_cost_ 0 give
  // -pot_[0], and pot_[0] stays 0: the root is never in the moved subtree.) Only columns
  // are shifted: those of the moved subtree, reached through the skeleton, each node's list
  // of its children that are columns or rows with children of their own. Leaf rows, most
  // rows of such a problem, are in no list.
  double row_potential(int i) const { return lean_ ? up_cost_[i] - pot_[up_[i]] : pot_[i]; }

  // Writes the rows' potentials into pot_ (for a pricing pass over all of them).
  void write_row_potentials() {
    if (!lean_) return;
    for (int i = 1; i < m_; ++i) pot_[i] = up_cost_[i] - pot_[up_[i]];
  }

  // Puts x in the skeleton list where it belongs now (its parent's, or none) after its
  // parent or its having children changed.
  void relist(int x) {
    const int at = x != 0 && (x >= m_ || size_[x] > 1) ? parent_[x] : -1;
    if (listed_at_[x] == at) return;
    if (listed_at_[x] >= 0) {  // unlink from the old list
      const int before = sibling_prev_[x], after = sibling_next_[x];
      if (before >= 0) sibling_next_[before] = after;
      else kids_[listed_at_[x]] = after;
      if (after >= 0) sibling_prev_[after] = before;
    }
    listed_at_[x] = at;
    if (at >= 0) {
      sibling_prev_[x] = -1;
      sibling_next_[x] = kids_[at];
      if (kids_[at] >= 0) sibling_prev_[kids_[at]] = x;
      kids_[at] = x;
    }
  }

  // Adds `shift` to the potentials of the columns in the subtree of s.
  void shift_columns_below(int s, double shift) {
    walk_.assign(1, s);
    while (!walk_.empty()) {
      const int x = walk_.back();
      walk_.pop_back();
      if (x >= m_) pot_[x] += shift;
      for (int y = kids_[x]; y >= 0; y = sibling_next_[y]) walk_.push_back(y);
    }
  }

  // Recomputes every potential from the root along the tree (u_root = 0, u_i + v_j = c_ij);
  // the thread visits each parent before its children.
  void refresh_potentials() {
    pot_[0] = 0.0;
    for (int x = next_[0]; x != 0; x = next_[x]) pot_[x] = edge_cost(x, parent_[x]) - pot_[parent_[x]];
  }

  // The polish (polish_if_needed). kRelativeAccuracy: how close to the optimum, relative to
  // the cost, the pricing's own bound must show an answer to be left as it is.
  static constexpr double kRelativeAccuracy = 1e-10;
  static constexpr double kEps = std::numeric_limits<double>::epsilon();
  static constexpr int64_t kPolishPivotsPerNode = 20;

  // For any potentials u, v: cost - optimum = sum x_ij r_ij - sum x*_ij r_ij (r = c - u - v,
  // x* an optimal flow, both totalling 1), at most the largest |r| of a basic cell plus the
  // most negative r of any cell. With the potentials the pricing last used, that is r's
  // computed value (at least -tol_) off by its rounding, 2 eps (|c| + 2 max |potential|) at
  // most (4 eps for room).
  bool needs_polish(double min_cost) const {
    double largest = 0, primal = 0, total = 0, basic = 0;
    for (int x = 0; x < m_ + n_; ++x) largest = std::max(largest, std::fabs(pot_[x]));
    for (int x = 1; x < m_ + n_; ++x) {
      const double c = edge_cost(x, parent_[x]);
      primal += flow_[x] * c;
      basic = std::max(basic, std::fabs(c - pot_[x] - pot_[parent_[x]]));
    }
    for (double w : a_) total += w;
    const double cost = primal / total;
    const double bound = basic + tol_ + 4 * kEps * (max_cost_ + 2 * largest);
    return std::min(bound, cost - min_cost) > kRelativeAccuracy * std::fabs(cost);
  }

  // Every potential again from the root in double-double: pot_ + pot_lo_ is exact to about
  // eps^2 of the largest potential per edge of depth.
  void refresh_exact_potentials() {
    pot_lo_.assign(static_cast<size_t>(m_ + n_), 0.0);
    pot_[0] = 0.0;
    double largest = 0;
    for (int x = next_[0]; x != 0; x = next_[x]) {
      const int p = parent_[x];
      // c - (hi_p + lo_p): the rounding error of c - hi_p kept, then the low part.
      const double s = edge_cost(x, p) - pot_[p];
      const double err = two_sum_error(edge_cost(x, p), -pot_[p], s);
      const double lo = err - pot_lo_[p];
      pot_[x] = s + lo;
      pot_lo_[x] = lo - (pot_[x] - s);
      largest = std::max(largest, std::fabs(pot_[x]));
    }
    // Cells whose reduced cost computed from the high parts alone, (c - u) - v, is below
    // `margin_` are the only ones that can improve; only they get the exact evaluation.
    margin_ = 4 * kEps * (max_cost_ + 2 * largest);
    // The double-double potentials are off by about eps^2 (|c| + |potential|) per edge of
    // depth: a reduced cost must be below -floor_ (16 times the most that can add up to) as
    // well as below -tolerance x its own cost, so that no pivot is taken on rounding.
    floor_ = 16 * (m_ + n_) * kEps * kEps * (max_cost_ + 2 * largest);
  }

  // The rounding error of s = x + y (Knuth's two-sum): x + y = s + error exactly.
  static double two_sum_error(double x, double y, double s) {
    const double yy = s - x;
    return (x - (s - yy)) + (y - yy);
  }

  // c - (u_hi + u_lo) - (v_hi + v_lo) with the high parts' sum kept exactly: off by a few
  // ulps of the result and of the low parts.
  static double exact_reduced_cost(double c, double uh, double ul, double vh, double vl) {
    const double s = uh + vh;
    const double err = two_sum_error(uh, vh, s);
    return (c - s) - (err + ul + vl);
  }

  // The polish's pricing: rows cyclically from where it last stopped, the most negative
  // exact reduced cost of the first block's worth of rows that has one below -(tolerance x
  // the cell's own |cost| + floor_).
  // Under Bland's rule (pivot() sets it after a long degenerate run), the first such cell.
  bool find_entering_exactly(int* ei, int* ej, double* d) {
    const double* vh = pot_.data() + m_;
    const double* vl = pot_lo_.data() + m_;
    if (bland_) polish_row_ = 0;
    double best = 0;
    int best_i = -1, best_j = -1;
    int64_t scanned = 0;
    for (int k = 0; k < m_; ++k) {
      const int i = polish_row_;
      polish_row_ = polish_row_ + 1 == m_ ? 0 : polish_row_ + 1;
      const double* row = c_ + static_cast<int64_t>(i) * n_;
      const double uh = pot_[i], ul = pot_lo_[i];
      for (int j = 0; j < n_; ++j) {
        if (!(row[j] - uh - vh[j] < margin_)) continue;
        const double r = exact_reduced_cost(row[j], uh, ul, vh[j], vl[j]);
        if (r < -(tolerance_ * std::fabs(row[j]) + floor_) && r < best) {
          best = r, best_i = i, best_j = j;
          if (bland_) break;
        }
      }
      scanned += n_;
      if (best_i >= 0 && (scanned >= block_ || bland_)) break;
    }
    if (best_i < 0) return false;
    *ei = best_i, *ej = best_j, *d = best;
    return true;
  }

  // Block pricing: scan blocks of cells cyclically from where the last search stopped and
  // take the most negative reduced cost of the first block that has one. A guard kept from
  // before the tree was strongly feasible: after more degenerate pivots in a row than there
  // are nodes, Bland's rule (the first improvable cell) until progress resumes.
  bool find_entering(int* ei, int* ej, double* d) {
    const int64_t total = static_cast<int64_t>(m_) * n_;
    if (pricer_ && !bland_) return next_candidate(ei, ej, d);
    if (bland_) {
      for (int i = 0; i < m_; ++i) {
        const double* row = c_ + static_cast<int64_t>(i) * n_;
        const double ui = row_potential(i);
        for (int j = 0; j < n_; ++j) {
          const double r = row[j] - ui - pot_[m_ + j];
          if (r < -tol_) {
            *ei = i, *ej = j, *d = r;
            return true;
          }
        }
      }
      return false;
    }
    double best = -tol_;
    int64_t best_k = -1, scanned = 0;
    while (scanned < total) {
      const int64_t end = std::min(next_cell_ + block_, total);
      int64_t k = next_cell_;
      while (k < end) {
        const int i = static_cast<int>(k / n_);
        const int j0 = static_cast<int>(k - static_cast<int64_t>(i) * n_);
        const int j1 = static_cast<int>(std::min<int64_t>(n_, j0 + (end - k)));
        const double* row = c_ + static_cast<int64_t>(i) * n_;
        const double ui = row_potential(i);
        const double* v = pot_.data() + m_;
        // The chunk's minimum first, its position only when it improves on the best so far.
        const double chunk_min = min_reduced_cost(row + j0, v + j0, ui, j1 - j0, best);
        if (chunk_min < best) {
          for (int j = j0; j < j1; ++j)
            if (row[j] - ui - v[j] == chunk_min) {
              best = chunk_min;
              best_k = static_cast<int64_t>(i) * n_ + j;
              break;
            }
        }
        k += j1 - j0;
      }
      scanned += end - next_cell_;
      next_cell_ = end == total ? 0 : end;
      if (best_k >= 0) {
        *ei = static_cast<int>(best_k / n_);
        *ej = static_cast<int>(best_k % n_);
        *d = best;
        return true;
      }
    }
    return false;
  }

  // Pricing::Rows: the most negative reduced cost among the last pass's candidates (rows'
  // minima), each re-priced against the current potentials, since earlier pivots shifted
  // some; those that stopped improving leave the list. An empty list: a new pass; a pass
  // without candidates: optimal. Each candidate's cost is kept beside it, so the re-pricing
  // reads no row of the matrix (the pricer hands it on).
  bool next_candidate(int* ei, int* ej, double* d) {
    for (;;) {
      double best = -tol_;
      size_t best_at = 0;
      const size_t kept = lean_ ? reprice_list<true>(&best, &best_at) : reprice_list<false>(&best, &best_at);
      list_.resize(kept);
      if (kept > 0) {
        *ei = list_[best_at].i, *ej = list_[best_at].j, *d = best;
        return true;
      }
      const auto t0 = std::chrono::steady_clock::now();
      write_row_potentials();
      pricer_->price(pot_.data(), tol_, row_candidates_, &candidates_);
      ++passes_;
      pass_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (candidates_.empty()) return false;
      for (const detail::RowMinimum& c : candidates_) list_.push_back({c.cost, c.i, c.j});
    }
  }

  // Keeps the list's improving entries at its front, in order, and returns how many; *best
  // and *best_at: the most negative and where it now is. Branch-free: every entry is written
  // at `kept`, which only an improving one advances (the outcome of either test is random,
  // and mispredicting it cost more than the work).
  template <bool kLean>
  size_t reprice_list(double* best_out, size_t* best_at_out) {
    size_t kept = 0, best_at = 0;
    double best = *best_out;
    const double* u = pot_.data();
    const double* v = pot_.data() + m_;
    const int* up = kLean ? up_.data() : nullptr;
    const double* up_cost = kLean ? up_cost_.data() : nullptr;
    ListEntry* list = list_.data();
    const double limit = -tol_;
    for (size_t k = 0, size = list_.size(); k < size; ++k) {
      const ListEntry e = list[k];
      const double ui = kLean ? up_cost[e.i] - u[up[e.i]] : u[e.i];
      const double r = e.cost - ui - v[e.j];
      const bool improving = r < limit;
      const bool better = r < best;
      best = better ? r : best;
      best_at = better ? kept : best_at;
      list[kept] = e;
      kept += improving;
    }
    *best_out = best;
    *best_at_out = best_at;
    return kept;
  }

  void pivot(int ei, int ej, double d) {
    bland_pivots_ += bland_;  // its entering cell was Bland's rule's
    const int a = ei, b = m_ + ej;
    const detail::Cycle c =
        detail::turn_cycle(m_, n_, parent_.data(), size_.data(), flow_.data(), a, b, path_a_.data(), path_b_.data());
    FGVC_CHECK(c.theta >= 0, "emd", "internal error: the basis stopped being a tree");
    if (c.theta > 0) {
      degenerate_run_ = 0;
      bland_ = false;
    } else if (++degenerate_run_ > degenerate_limit_) {
      bland_ = true;
    }
    if (c.on_a) reattach(a, b, path_a_.data(), c, d);
    else reattach(b, a, path_b_.data(), c, d);
  }

  // The leaving edge is (q, parent q) with q = stem[k] on the path from s: the subtree
  // under q, which holds s, is cut off, re-rooted at s and hung from t by the entering edge.
  // Its new preorder: s's own subtree, then each stem node w = stem[i] followed by the rest
  // of its old subtree (the runs before and after the subtree of stem[i - 1]); the whole
  // run goes in right after t.
  void reattach(int s, int t, const int* stem, const detail::Cycle& c, double d) {
    const int k = c.leave, q = stem[k], p = parent_[q], moved = size_[q];
    const int before = prev_[q], after = next_[last_[q]], old_last = last_[q];
    runs_.assign(1, {s, last_[s]});
    for (int i = 1; i <= k; ++i) {
      const int w = stem[i], below = stem[i - 1];
      runs_.push_back({w, w});
      if (next_[w] != below) runs_.push_back({next_[w], prev_[below]});
      if (last_[w] != last_[below]) runs_.push_back({next_[last_[below]], last_[w]});
    }
    // Cut the subtree out of the thread; ancestors that ended with it now end before it.
    link(before, after);
    for (int u = p; u >= 0 && last_[u] == old_last; u = parent_[u]) last_[u] = before;
    // Chain the runs and put them after t; ancestors that ended at t now end with them.
    for (size_t r = 1; r < runs_.size(); ++r) link(runs_[r - 1].second, runs_[r].first);
    const int new_last = runs_.back().second;
    const int t_next = next_[t];
    link(t, s);
    link(new_last, t_next);
    for (int u = t; u >= 0 && last_[u] == t; u = parent_[u]) last_[u] = new_last;
    // Sizes, parents and flows as on the GPU; the stem's subtrees now all end at new_last.
    FGVC_CHECK(detail::rehang(m_ + n_, parent_.data(), size_.data(), flow_.data(), stem, k, t, c.join, c.theta), "emd",
               "internal error: the basis stopped being a tree");
    for (int i = 0; i <= k; ++i) last_[stem[i]] = new_last;
    // The entering cell's reduced cost d must become 0: shift the moved subtree's potentials
    // (s's side by d, the other by -d), or the rest of the tree's the opposite way.
    // The shift by side is looked up, not branched on: rows and columns alternate along the
    // thread too irregularly for a branch predictor.
    const bool s_is_row = s < m_;
    const double row_shift = s_is_row ? d : -d;
    if (lean_) {
      // The stem's rows hang from new columns; the stem, p and t are all whose place in the
      // skeleton can change (only they changed parents or gained or lost all children).
      for (int i = 0; i <= k; ++i)
        if (stem[i] < m_) up_[stem[i]] = parent_[stem[i]], up_cost_[stem[i]] = edge_cost(stem[i], parent_[stem[i]]);
      for (int i = 0; i <= k; ++i) relist(stem[i]);
      relist(p);
      relist(t);
      shift_columns_below(s, -row_shift);
    } else if (2 * moved <= m_ + n_) {
      const double shift[2] = {-row_shift, row_shift};  // [x is a row]
      shift_run(s, new_last, moved, shift);
    } else {
      const double shift[2] = {row_shift, -row_shift};
      shift_run(t_next, t, m_ + n_ - moved, shift);
    }
  }

  // Adds shift[x is a row] to the potentials of the `count` nodes of the thread from `first`
  // to `last`. Each step waits for its node's load, so the run is walked from both ends at
  // once: two independent chains of loads in flight instead of one.
  void shift_run(int first, int last, int count, const double shift[2]) {
    int x = first, y = last;
    for (int k = count / 2; k > 0; --k) {
      pot_[x] += shift[x < m_];
      pot_[y] += shift[y < m_];
      x = next_[x];
      y = prev_[y];
    }
    if (count % 2) pot_[x] += shift[x < m_];  // the middle node (x == y)
  }

  void link(int x, int y) {
    next_[x] = y;
    prev_[y] = x;
  }

#if FGVC_EMD_VERIFY_TREE
  // A check walks the whole tree: after every pivot on trees of up to 127 nodes, on larger ones
  // after every k-th, k the power of two at most nodes / 64 (so that checks cost about 64 nodes
  // a pivot), and at the end. A broken thread or size stays broken until a check; a wrong
  // potential until the next refresh, every 1024 pivots. (Checking every pivot made one
  // test of larger problems take 80 s under the sanitizers.)
  int64_t verify_interval() const {
    int64_t k = 1;
    while (2 * k <= (m_ + n_) / 64) k *= 2;
    return k;
  }

  // Checks the threaded index against the parent pointers and the potentials against the
  // basic cells (sanitizer builds, where the tests run it).
  void verify_tree() const {
    const int nodes = m_ + n_;
    std::vector<int> position(static_cast<size_t>(nodes), -1), count(static_cast<size_t>(nodes), 1);
    int x = 0;
    for (int k = 0; k < nodes; ++k, x = next_[x]) {
      FGVC_CHECK(position[x] < 0 && prev_[next_[x]] == x, "emd", "verify: thread broken at node ", x);
      position[x] = k;
    }
    FGVC_CHECK(x == 0 && parent_[0] < 0, "emd", "verify: the thread is not one circle from the root");
    std::vector<int> order(static_cast<size_t>(nodes));
    for (int y = 0; y < nodes; ++y) order[position[y]] = y;
    for (int k = nodes - 1; k > 0; --k) count[parent_[order[k]]] += count[order[k]];
    for (int y = 0; y < nodes; ++y) {
      FGVC_CHECK(count[y] == size_[y], "emd", "verify: size of node ", y, " is ", size_[y], ", counted ", count[y]);
      FGVC_CHECK(last_[y] == order[position[y] + size_[y] - 1], "emd", "verify: last of node ", y);
      if (y == 0) continue;
      const int p = parent_[y];
      FGVC_CHECK(position[p] < position[y] && position[y] + size_[y] <= position[p] + size_[p], "emd",
                 "verify: node ", y, " is not inside its parent's run");
      // Rounding of the potentials counts at their own scale (a far class puts them at 1e9).
      const double py = y < m_ ? row_potential(y) : pot_[y], pp = p < m_ ? row_potential(p) : pot_[p];
      const double r = edge_cost(y, p) - py - pp;
      const double scale = std::fabs(py) + std::fabs(pp);
      FGVC_CHECK(std::fabs(r) <= 1e-9 * (1 + std::fabs(edge_cost(y, p))) + 1e-11 * scale, "emd", "verify: basic cell of node ",
                 y, " has reduced cost ", r);
      FGVC_CHECK(flow_[y] >= -1e-12, "emd", "verify: negative flow ", flow_[y], " at node ", y);
      FGVC_CHECK(!exact_ || flow_[y] > 0 || y < m_, "emd", "verify: not strongly feasible: column ", y - m_,
                 " hangs from row ", p, " with zero flow");
    }
    if (!lean_) return;
    std::vector<int> listed(static_cast<size_t>(nodes), 0);
    for (int y = 0; y < nodes; ++y)
      for (int z = kids_[y]; z >= 0; z = sibling_next_[z]) {
        FGVC_CHECK(parent_[z] == y && listed_at_[z] == y && ++listed[z] == 1, "emd", "verify: node ", z,
                   " is in the skeleton list of node ", y);
        FGVC_CHECK(sibling_next_[z] < 0 || sibling_prev_[sibling_next_[z]] == z, "emd", "verify: skeleton list broken");
      }
    for (int y = 0; y < nodes; ++y) {
      const bool belongs = y != 0 && (y >= m_ || size_[y] > 1);
      FGVC_CHECK(listed[y] == (belongs ? 1 : 0), "emd", "verify: node ", y, " is in ", listed[y],
                 " skeleton lists, should be in ", belongs ? 1 : 0);
      if (y > 0 && y < m_)
        FGVC_CHECK(up_[y] == parent_[y] && up_cost_[y] == edge_cost(y, parent_[y]), "emd", "verify: row ", y,
                   "'s parent column");
    }
  }
#endif

  const double* c_;
  int m_, n_;
  std::vector<double> a_, b_;
  double tol_, tolerance_, max_cost_;
  int64_t max_iterations_, degenerate_limit_;
  bool exact_;
  int polish_row_ = 0;    // where the polish's pricing goes on
  double margin_ = 0, floor_ = 0;  // refresh_exact_potentials'
  std::vector<double> pot_lo_;  // the potentials' low parts, in a polish
  static constexpr int kStartCellsPerRow = 8;  // the greedy start's candidates per row
  int64_t block_ = 0, next_cell_ = 0, iterations_ = 0, degenerate_run_ = 0;
  bool bland_ = false;
  int64_t bland_pivots_ = 0;
  detail::RowPricer* pricer_ = nullptr;
  std::vector<detail::RowMinimum> candidates_;  // the last pass's
  struct ListEntry {
    double cost;
    int i, j;
  };
  std::vector<ListEntry> list_;  // the candidates still improving
  int64_t row_candidates_ = 0;   // a pass's candidates (RowPricer::price's want)
  int64_t passes_ = 0;
  double pass_seconds_ = 0;
  std::vector<int> parent_, next_, prev_, size_, last_;
  std::vector<double> flow_, pot_;
  std::vector<int> path_a_, path_b_;  // the cycle's two tree paths (turn_cycle's scratch)
  std::vector<std::pair<int, int>> runs_;  // [first, last] runs of the thread, in their new order
  // Lean rows (row_potential): where m >= kLeanRows n; measured on 2000 x 2000 to
  // 20000 x 2000, see bench/results/emd-lean-rows-2026-11-29.md.
  static constexpr int kLeanRows = 2;
  bool lean_ = false;
  std::vector<int> up_;          // each row's parent column (the root: 0)
  std::vector<double> up_cost_;  // the cost of that edge (the root: 0)
  std::vector<int> kids_, sibling_next_, sibling_prev_;  // the skeleton's lists: first child, links
  std::vector<int> listed_at_;   // whose list a node is in (-1: none)
  std::vector<int> walk_;        // shift_columns_below's stack
};

std::vector<double> normalized(const std::vector<double>& w, const char* which) {
  double total = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    FGVC_CHECK(std::isfinite(w[i]) && w[i] >= 0, "emd", which, " weight ", i, " is ", w[i],
               " (weights must be finite and non-negative)");
    total += w[i];
  }
  FGVC_CHECK(total > 0, "emd", "all ", which, " weights are zero");
  std::vector<double> out(w.size());
  for (size_t i = 0; i < w.size(); ++i) out[i] = w[i] / total;
  return out;
}

}  // namespace

namespace detail {

namespace {
// Reduced::flow_scale: counts a and b become a * sum(b) and b * sum(a) where both are
// integers and the product of the sums stays below 2^53 (every partial sum then exact).
void exact_integer_weights(const std::vector<double>& a, const std::vector<double>& b, Reduced* r) {
  auto integral_sum = [](const std::vector<double>& w) {
    double total = 0;
    for (double x : w)
      if (x != std::floor(x) || x >= 9007199254740992.0) return -1.0;
      else total += x;
    return total;
  };
  const double sa = integral_sum(a), sb = integral_sum(b);
  if (sa <= 0 || sb <= 0 || sa * sb >= 9007199254740992.0) return;
  for (size_t k = 0; k < r->rows.size(); ++k) r->ra[k] = a[r->rows[k]] * sb;
  for (size_t k = 0; k < r->cols.size(); ++k) r->rb[k] = b[r->cols[k]] * sa;
  r->flow_scale = sa * sb;
}
}  // namespace

Reduced reduce(const double* cost, int64_t m, int64_t n, const std::vector<double>& a_in,
               const std::vector<double>& b_in) {
  FGVC_CHECK(m > 0 && n > 0, "emd", "empty problem (", m, " x ", n, ")");
  FGVC_CHECK(cost != nullptr, "emd", "no cost matrix (a null pointer) for a ", m, " x ", n, " problem");
  FGVC_CHECK(m < (1 << 30) && n < (1 << 30), "emd", "problem too large (", m, " x ", n, ")");
  FGVC_CHECK(static_cast<int64_t>(a_in.size()) == m && static_cast<int64_t>(b_in.size()) == n, "emd", "weights of sizes ",
             a_in.size(), " and ", b_in.size(), " for a ", m, " x ", n, " cost matrix");
  Reduced r;
  r.a = normalized(a_in, "source");
  r.b = normalized(b_in, "target");
  // Classes of weight 0 take no part; solve on the others.
  for (int64_t i = 0; i < m; ++i)
    if (r.a[i] > 0) r.rows.push_back(static_cast<int>(i)), r.ra.push_back(r.a[i]);
  for (int64_t j = 0; j < n; ++j)
    if (r.b[j] > 0) r.cols.push_back(static_cast<int>(j)), r.rb.push_back(r.b[j]);
  // One pass, spread over the threads for a large matrix: non-finite costs are counted (the
  // first located afterwards for the message), and the largest |cost| is taken among the
  // classes that take part. The solver's tolerance scales with it, so a far-away class of
  // weight 0 must not loosen it (it stopped short of the optimum).
  std::vector<char> col_kept(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) col_kept[j] = r.b[j] > 0;
  // The smallest cost too (a lower bound on the optimum, Solver::polish_if_needed's).
  double max_cost = 0, min_cost = kInf;
  int64_t bad = 0;
#pragma omp parallel for reduction(max : max_cost) reduction(min : min_cost) reduction(+ : bad) schedule(static) \
    if (m * n > (1 << 20))
  for (int64_t i = 0; i < m; ++i) {
    const double* row = cost + i * n;
    const bool row_kept = r.a[i] > 0;
    for (int64_t j = 0; j < n; ++j) {
      const double c = std::fabs(row[j]);
      bad += !std::isfinite(c);
      const bool kept = row_kept && col_kept[j];
      max_cost = kept && c > max_cost ? c : max_cost;
      min_cost = kept && row[j] < min_cost ? row[j] : min_cost;
    }
  }
  for (int64_t k = 0; bad > 0 && k < m * n; ++k)
    FGVC_CHECK(std::isfinite(cost[k]), "emd", "cost (", k / n, ", ", k % n, ") is ", cost[k]);
  r.max_cost = max_cost > 0 ? max_cost : 1.0;
  r.min_cost = min_cost;
  exact_integer_weights(a_in, b_in, &r);
  if (r.rows.size() != static_cast<size_t>(m) || r.cols.size() != static_cast<size_t>(n)) {
    r.sub.resize(r.rows.size() * r.cols.size());
    for (size_t i = 0; i < r.rows.size(); ++i)
      for (size_t j = 0; j < r.cols.size(); ++j) r.sub[i * r.cols.size() + j] = cost[r.rows[i] * n + r.cols[j]];
  }
  return r;
}

InitialTree initial_tree(const double* cost, const Reduced& r, const Options& options) {
  Solver solver(r.cost(cost), r.m(), r.n(), r.ra, r.rb, options, r.max_cost, r.flow_scale != 1);
  solver.start();
  return {solver.parents(), solver.flows(), solver.preorder(), solver.sizes()};
}

namespace {
// parallel_each's error, if any: as it is for a single problem, else naming problem q.
void rethrow_naming_the_problem(int64_t q, const std::exception_ptr& error, size_t problems) {
  if (!error) return;
  if (problems == 1) std::rethrow_exception(error);
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    throw Error("emd: problem " + std::to_string(q) + " of the batch: " + e.what());
  }
}
}  // namespace

void prepare_batch(const std::vector<Problem>& problems, const Options& options, std::vector<Reduced>* reduced,
                   std::vector<InitialTree>* trees) {
  reduced->assign(problems.size(), {});
  trees->assign(problems.size(), {});
  const auto [q, error] = parallel_each(static_cast<int64_t>(problems.size()), [&](int64_t k) {
    const Problem& p = problems[k];
    (*reduced)[k] = reduce(p.cost, p.m, p.n, p.a, p.b);
    (*trees)[k] = initial_tree(p.cost, (*reduced)[k], options);
  });
  rethrow_naming_the_problem(q, error, problems.size());
}

namespace {
// A sum of products kept to about one rounding of the result, however much its terms cancel
// (the dual objective's do where potentials are large): each product split exactly by an
// FMA into its rounded value and error, each addition's error kept (Neumaier).
class ExactishSum {
 public:
  void add(double x) {
    const double t = sum_ + x;
    error_ += std::fabs(sum_) >= std::fabs(x) ? (sum_ - t) + x : (x - t) + sum_;
    sum_ = t;
  }
  void add_product(double a, double b) {
    const double p = a * b;
    add(p);
    add(std::fma(a, b, -p));
  }
  double value() const { return sum_ + error_; }

 private:
  double sum_ = 0, error_ = 0;
};
}  // namespace

Result assemble(const double* cost, int64_t m, int64_t n, const Reduced& r, const std::vector<int>& parent,
                const std::vector<double>& flow, const std::vector<double>& pot, int64_t iterations,
                const std::vector<double>& pot_low) {
  const int rm = r.m();
  Result out;
  out.iterations = iterations;
  ExactishSum primal, dual;
  for (int x = 0; x < static_cast<int>(parent.size()); ++x) {  // each basic cell is (node, its parent)
    if (parent[x] < 0) continue;
    const int i = x < rm ? x : parent[x], j = (x < rm ? parent[x] : x) - rm;
    out.flow.push_back({r.rows[i], r.cols[j], flow[x] / r.flow_scale});
    primal.add_product(flow[x], cost[static_cast<int64_t>(r.rows[i]) * n + r.cols[j]]);
  }
  out.cost = primal.value() / r.flow_scale;
  // The dual objective from the solver's weights (integers where counts are) and potentials
  // (with their low parts after a polish): sum a_i u_i + sum b_j v_j, the weight-0 classes
  // adding nothing.
  for (size_t k = 0; k < pot.size(); ++k) {
    const double w = static_cast<int>(k) < rm ? r.ra[k] : r.rb[k - rm];
    dual.add_product(w, pot[k]);
    if (!pot_low.empty()) dual.add_product(w, pot_low[k]);
  }
  out.dual_objective = dual.value() / r.flow_scale;
  out.u.assign(static_cast<size_t>(m), kInf);
  out.v.assign(static_cast<size_t>(n), kInf);
  for (size_t i = 0; i < r.rows.size(); ++i) out.u[r.rows[i]] = pot[i];
  for (size_t j = 0; j < r.cols.size(); ++j) out.v[r.cols[j]] = pot[rm + j];
  // Duals of weight-0 classes: as large as dual feasibility allows (they add nothing to the
  // dual objective, so any feasible value certifies).
  for (int64_t i = 0; i < m; ++i)
    if (r.a[i] == 0)
      for (int j : r.cols) out.u[i] = std::min(out.u[i], cost[i * n + j] - out.v[j]);
  for (int64_t j = 0; j < n; ++j)
    if (r.b[j] == 0)
      for (int64_t i = 0; i < m; ++i) out.v[j] = std::min(out.v[j], cost[i * n + j] - out.u[i]);
  return out;
}

std::vector<Result> finish_batch(const std::vector<Problem>& problems, const Options& options,
                                 const std::vector<Reduced>& reduced, const std::vector<std::vector<int>>& parents,
                                 const std::vector<std::vector<double>>& flows,
                                 const std::vector<std::vector<double>>& pots, const std::vector<int64_t>& iterations) {
  std::vector<Result> out(problems.size());
  const auto [q, error] = parallel_each(static_cast<int64_t>(problems.size()), [&](int64_t k) {
    const Problem& p = problems[k];
    const Reduced& r = reduced[k];
    Solver solver(r.cost(p.cost), r.m(), r.n(), r.ra, r.rb, options, r.max_cost, r.flow_scale != 1);
    solver.load(parents[k], flows[k], pots[k], iterations[k]);
    solver.polish_if_needed(r.min_cost);
    out[k] = assemble(p.cost, p.m, p.n, r, solver.parents(), solver.flows(), solver.potentials(), solver.iterations(),
                      solver.potentials_low());
  });
  rethrow_naming_the_problem(q, error, problems.size());
  return out;
}

namespace {
// Each row's minimum by the vector loop, its column found again by equality (the loop
// computes each reduced cost as the scalar code does). Every row: spread over the threads;
// part of them (want > 0): one thread, from where the last pass stopped.
class CpuRowPricer : public RowPricer {
 public:
  CpuRowPricer(const double* cost, int m, int n) : cost_(cost), m_(m), n_(n), found_(static_cast<size_t>(m)) {}
  void price(const double* pot, double tol, int64_t want, std::vector<RowMinimum>* out) override {
    out->clear();
    if (want > 0 && want < m_) {
      for (int scanned = 0; scanned < m_ && static_cast<int64_t>(out->size()) < want; ++scanned) {
        const RowMinimum f = row_minimum(pot, tol, next_row_);
        next_row_ = next_row_ + 1 == m_ ? 0 : next_row_ + 1;
        if (f.j >= 0) out->push_back(f);
      }
      return;
    }
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(m_) * n_ > (1 << 16))
    for (int i = 0; i < m_; ++i) found_[i] = row_minimum(pot, tol, i);
    for (const RowMinimum& f : found_)
      if (f.j >= 0) out->push_back(f);
  }

 private:
  // Row i's smallest reduced cost and its first column; column -1 where none is below -tol.
  RowMinimum row_minimum(const double* pot, double tol, int i) const {
    const double* row = cost_ + static_cast<int64_t>(i) * n_;
    const double* v = pot + m_;
    const double ui = pot[i], low = min_reduced_cost(row, v, ui, n_, -tol);
    if (low < -tol)
      for (int j = 0; j < n_; ++j)
        if (row[j] - ui - v[j] == low) return {low, i, j, row[j]};
    return {low, i, -1, 0.0};
  }

  const double* cost_;
  int m_, n_;
  int next_row_ = 0;  // where a partial pass goes on
  std::vector<RowMinimum> found_;
};
}  // namespace

std::unique_ptr<RowPricer> cpu_row_pricer(const double* cost, int m, int n) {
  return std::make_unique<CpuRowPricer>(cost, m, n);
}

void check_options(const Options& o) {
  FGVC_CHECK(std::isfinite(o.tolerance) && o.tolerance >= 0 && o.tolerance < 1, "emd", "tolerance ", o.tolerance,
             " is not in [0, 1) (a fraction of the largest cost)");
  FGVC_CHECK(o.block_size >= 0 && o.max_iterations >= 0 && o.degenerate_limit >= 0, "emd",
             "block_size, max_iterations and degenerate_limit must not be negative (0: the default), got ", o.block_size,
             ", ", o.max_iterations, ", ", o.degenerate_limit);
}

Result solve_by_rows(const double* cost, int64_t m, int64_t n, const std::vector<double>& a_in,
                     const std::vector<double>& b_in, const Options& options, const MakeRowPricer& make) {
  const auto t0 = std::chrono::steady_clock::now();
  check_options(options);
  const Reduced r = reduce(cost, m, n, a_in, b_in);
  // Without `make` (solve() with block pricing), no pricer: the solver scans blocks itself.
  const std::unique_ptr<RowPricer> pricer = make ? make(r.cost(cost), r.m(), r.n()) : nullptr;
  Solver solver(r.cost(cost), r.m(), r.n(), r.ra, r.rb, options, r.max_cost, r.flow_scale != 1);
  solver.set_row_pricer(pricer.get());
  solver.start();
  const double start_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  solver.pivot_to_optimum();
  solver.polish_if_needed(r.min_cost);
  Result out = assemble(cost, m, n, r, solver.parents(), solver.flows(), solver.potentials(), solver.iterations(),
                        solver.potentials_low());
  out.pricing_passes = solver.pricing_passes();
  out.bland_pivots = solver.bland_pivots();
  out.pass_seconds = solver.pass_seconds();
  out.start_seconds = start_seconds;
  if (pricer) out.gpu_kernel_seconds = pricer->device_seconds();
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace detail

Result solve(const double* cost, int64_t m, int64_t n, const std::vector<double>& a_in, const std::vector<double>& b_in,
             const Options& options) {
  Options o = options;
  if (o.row_candidates == 0) o.row_candidates = kCpuRowCandidates;
  return detail::solve_by_rows(cost, m, n, a_in, b_in, o,
                               o.pricing == Pricing::Rows ? detail::MakeRowPricer(detail::cpu_row_pricer) : nullptr);
}

#if !FGVC_WITH_CUDA
std::vector<Result> solve_batch_cuda(const std::vector<Problem>&, const Options&, int) {
  throw Error("emd: the CUDA solver is not available: fgvc was built without CUDA (FGVC_CUDA=OFF)");
}
Result solve_cuda(const double*, int64_t, int64_t, const std::vector<double>&, const std::vector<double>&, const Options&,
                  int, const double*) {
  throw Error("emd: the CUDA solver is not available: fgvc was built without CUDA (FGVC_CUDA=OFF)");
}
namespace detail {
std::unique_ptr<RowPricer> cuda_row_pricer(const double*, int, int, int, const double*) {
  throw Error("emd: the CUDA solver is not available: fgvc was built without CUDA (FGVC_CUDA=OFF)");
}
}  // namespace detail
#endif

Certificate check(const double* cost, int64_t m, int64_t n, const std::vector<double>& a_in,
                  const std::vector<double>& b_in, const Result& r) {
  const std::vector<double> a = normalized(a_in, "source"), b = normalized(b_in, "target");
  Certificate c{-kInf, 0.0, std::fabs(r.cost - r.dual_objective), 0.0};
  detail::ExactishSum primal, dual;
  for (const FlowCell& f : r.flow) primal.add_product(f.flow, cost[static_cast<int64_t>(f.i) * n + f.j]);
  for (int64_t i = 0; i < m; ++i)
    if (a[i] > 0) dual.add_product(a[i], r.u[i]);
  for (int64_t j = 0; j < n; ++j)
    if (b[j] > 0) dual.add_product(b[j], r.v[j]);
  c.objective_error = std::max(std::fabs(r.cost - primal.value()), std::fabs(r.dual_objective - dual.value()));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c.dual_violation = std::max(c.dual_violation, r.u[i] + r.v[j] - cost[i * n + j]);
  std::vector<double> out(static_cast<size_t>(m), 0.0), in(static_cast<size_t>(n), 0.0);
  for (const FlowCell& f : r.flow) {
    if (f.flow < 0) c.marginal_error = std::max(c.marginal_error, -f.flow);
    out[f.i] += f.flow;
    in[f.j] += f.flow;
  }
  for (int64_t i = 0; i < m; ++i) c.marginal_error = std::max(c.marginal_error, std::fabs(out[i] - a[i]));
  for (int64_t j = 0; j < n; ++j) c.marginal_error = std::max(c.marginal_error, std::fabs(in[j] - b[j]));
  return c;
}

}  // namespace emd
}  // namespace fgvc
