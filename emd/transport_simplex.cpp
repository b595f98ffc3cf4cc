#include "emd/transport_simplex.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>
#include <numeric>
#include <string>

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

// The simplex over the classes with non-zero weight. Nodes 0..m-1 are sources (rows),
// m..m+n-1 targets (columns); every basic cell is a tree edge, stored at its child node.
class Solver {
 public:
  Solver(const double* c, int m, int n, std::vector<double> a, std::vector<double> b, const Options& o, double max_cost)
      : c_(c), m_(m), n_(n), a_(std::move(a)), b_(std::move(b)), tol_(o.tolerance * max_cost),
        max_iterations_(o.max_iterations) {
    const int64_t cells = static_cast<int64_t>(m) * n;
    // Pricing ~2 sqrt(cells) cells per pivot balances pivots saved against scanning cost
    // (measured on 1000 x 200 to 6089 x 200 problems).
    block_ = o.block_size > 0 ? o.block_size
                              : std::max<int64_t>(256, static_cast<int64_t>(2 * std::sqrt(double(cells))));
    block_ = std::min<int64_t>(std::max<int64_t>(block_, 1), std::max<int64_t>(cells, 1));
    const int nodes = m + n;
    parent_.assign(nodes, -1);
    depth_.assign(nodes, 0);
    flow_.assign(nodes, 0.0);
    pot_.assign(nodes, 0.0);
    adj_.assign(nodes, {});
  }

  void run() {
    initial_basis();
    pivot_to_optimum();
  }
  // The greedy start alone (the GPU solver pivots from it): parent of each node (-1 at the
  // root, node 0) and the flow on the edge to it.
  void start() { initial_basis(); }
  const std::vector<int>& parents() const { return parent_; }
  const std::vector<double>& flows() const { return flow_; }

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
      if (++iterations_ % 1024 == 0) refresh_potentials();
    }
  }

  const std::vector<double>& potentials() const { return pot_; }  // u_0..u_{m-1}, v_0..v_{n-1}
  int64_t iterations() const { return iterations_; }

 private:
  double cost(int i, int j) const { return c_[static_cast<int64_t>(i) * n_ + j]; }
  // The (row, column) of the edge between two nodes of different sides.
  std::pair<int, int> cell_of(int x, int y) const { return x < m_ ? std::pair{x, y - m_} : std::pair{y, x - m_}; }
  int64_t cell_index(int x, int y) const {
    const auto [i, j] = cell_of(x, y);
    return static_cast<int64_t>(i) * n_ + j;
  }

  // Start: the least-cost method on each row's few cheapest cells (the cells of an optimal
  // flow are mostly among them), then each row still open sends what is left to its
  // cheapest open columns. Every allocation exhausts its row or its column, which takes no
  // further allocation, so the cells form a forest; zero-flow cells then join it into a
  // spanning tree.
  void initial_basis() {
    constexpr double kExhausted = 1e-14;  // leftovers of rounding in the normalised weights
    std::vector<double> supply = a_, demand = b_;
    std::vector<char> row_open(static_cast<size_t>(m_), 1), col_open(static_cast<size_t>(n_), 1);
    UnionFind uf(m_ + n_);
    auto allocate = [&](int i, int j) {
      const double f = std::min(supply[i], demand[j]);
      supply[i] -= f;
      demand[j] -= f;
      add_edge(i, m_ + j);
      uf.unite(i, m_ + j);
      initial_flow_.push_back(f);
      if (supply[i] <= kExhausted) row_open[i] = 0;
      else col_open[j] = 0;
    };
    const int per_row = std::min(n_, 8);
    std::vector<std::pair<double, int64_t>> candidates;  // (cost, cell)
    candidates.reserve(static_cast<size_t>(m_) * per_row);
    std::vector<int> cols(static_cast<size_t>(n_));
    for (int i = 0; i < m_; ++i) {
      std::iota(cols.begin(), cols.end(), 0);
      std::nth_element(cols.begin(), cols.begin() + (per_row - 1), cols.end(),
                       [&](int x, int y) { return cost(i, x) < cost(i, y); });
      for (int r = 0; r < per_row; ++r)
        candidates.emplace_back(cost(i, cols[r]), static_cast<int64_t>(i) * n_ + cols[r]);
    }
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
    // Join the remaining components to node 0's with zero-flow cells, cheapest first.
    for (int x = 1; x < m_ + n_; ++x) {
      if (uf.find(x) == uf.find(0)) continue;
      int best = -1;
      double best_cost = kInf;
      const int lo = x < m_ ? m_ : 0, hi = x < m_ ? m_ + n_ : m_;
      for (int y = lo; y < hi; ++y) {
        if (uf.find(y) != uf.find(0)) continue;
        const auto [i, j] = cell_of(x, y);
        if (cost(i, j) < best_cost) {
          best_cost = cost(i, j);
          best = y;
        }
      }
      FGVC_CHECK(best >= 0, "emd", "internal error: cannot connect the initial basis");
      add_edge(x, best);
      uf.unite(x, best);
      initial_flow_.push_back(0.0);
    }
    orient_from_root();
  }

  void add_edge(int x, int y) {
    adj_[x].push_back(y);
    adj_[y].push_back(x);
    edge_nodes_.emplace_back(x, y);
  }

  void orient_from_root() {
    // Flow of each edge, keyed by cell index, to place on the child after orientation.
    std::vector<std::pair<int64_t, double>> flows;
    for (size_t e = 0; e < edge_nodes_.size(); ++e)
      flows.emplace_back(cell_index(edge_nodes_[e].first, edge_nodes_[e].second), initial_flow_[e]);
    std::sort(flows.begin(), flows.end());
    std::vector<int> stack{0};
    parent_[0] = -1;
    depth_[0] = 0;
    pot_[0] = 0.0;
    std::vector<char> seen(static_cast<size_t>(m_ + n_), 0);
    seen[0] = 1;
    while (!stack.empty()) {
      const int x = stack.back();
      stack.pop_back();
      for (int y : adj_[x]) {
        if (seen[y]) continue;
        seen[y] = 1;
        parent_[y] = x;
        depth_[y] = depth_[x] + 1;
        const auto [i, j] = cell_of(x, y);
        pot_[y] = cost(i, j) - pot_[x];
        const int64_t k = cell_index(x, y);
        flow_[y] = std::lower_bound(flows.begin(), flows.end(), std::pair<int64_t, double>{k, -kInf})->second;
        stack.push_back(y);
      }
    }
    edge_nodes_.clear();
    initial_flow_.clear();
  }

  // Recomputes every potential from the root along the tree (u_root = 0, u_i + v_j = c_ij).
  void refresh_potentials() {
    std::vector<int> stack{0};
    pot_[0] = 0.0;
    while (!stack.empty()) {
      const int x = stack.back();
      stack.pop_back();
      for (int y : adj_[x]) {
        if (y == parent_[x]) continue;
        const auto [i, j] = cell_of(x, y);
        pot_[y] = cost(i, j) - pot_[x];
        stack.push_back(y);
      }
    }
  }

  // Block pricing: scan blocks of cells cyclically from where the last search stopped and
  // take the most negative reduced cost of the first block that has one. After a long run
  // of degenerate pivots, Bland's rule (the first improvable cell) until progress resumes.
  bool find_entering(int* ei, int* ej, double* d) {
    const int64_t total = static_cast<int64_t>(m_) * n_;
    if (bland_) {
      for (int i = 0; i < m_; ++i) {
        const double* row = c_ + static_cast<int64_t>(i) * n_;
        const double ui = pot_[i];
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
      const int64_t end = std::min(next_ + block_, total);
      int64_t k = next_;
      while (k < end) {
        const int i = static_cast<int>(k / n_);
        const int j0 = static_cast<int>(k - static_cast<int64_t>(i) * n_);
        const int j1 = static_cast<int>(std::min<int64_t>(n_, j0 + (end - k)));
        const double* row = c_ + static_cast<int64_t>(i) * n_;
        const double ui = pot_[i];
        const double* v = pot_.data() + m_;
        // The chunk's minimum first (a loop the compiler vectorises), its position only
        // when it improves on the best so far.
        double chunk_min = best;
        for (int j = j0; j < j1; ++j) {
          const double r = row[j] - ui - v[j];
          chunk_min = r < chunk_min ? r : chunk_min;
        }
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
      scanned += end - next_;
      next_ = end == total ? 0 : end;
      if (best_k >= 0) {
        *ei = static_cast<int>(best_k / n_);
        *ej = static_cast<int>(best_k % n_);
        *d = best;
        return true;
      }
    }
    return false;
  }

  void pivot(int ei, int ej, double d) {
    const int a = ei, b = m_ + ej;
    // The cycle: the tree paths from a and b up to their common ancestor. Going round the
    // cycle from the entering cell, the signs of the cells alternate, starting with minus
    // next to a and next to b.
    path_a_.clear();
    path_b_.clear();
    for (int x = a, y = b; x != y;) {
      if (depth_[x] >= depth_[y]) {
        path_a_.push_back(x);
        x = parent_[x];
      } else {
        path_b_.push_back(y);
        y = parent_[y];
      }
    }
    double theta = kInf;
    int leave = -1;
    bool leave_on_a = true;
    int64_t leave_cell = std::numeric_limits<int64_t>::max();
    auto consider = [&](const std::vector<int>& path, bool on_a) {
      for (size_t k = 0; k < path.size(); k += 2) {
        const int x = path[k];
        const double f = flow_[x];
        const int64_t cell = cell_index(x, parent_[x]);
        if (f < theta || (f == theta && cell < leave_cell)) {  // ties: smallest cell (Bland)
          theta = f;
          leave = x;
          leave_on_a = on_a;
          leave_cell = cell;
        }
      }
    };
    consider(path_a_, true);
    consider(path_b_, false);
    for (size_t k = 0; k < path_a_.size(); ++k) flow_[path_a_[k]] += (k & 1) ? theta : -theta;
    for (size_t k = 0; k < path_b_.size(); ++k) flow_[path_b_[k]] += (k & 1) ? theta : -theta;

    if (theta > 0) {
      degenerate_run_ = 0;
      bland_ = false;
    } else if (++degenerate_run_ > m_ + n_) {
      bland_ = true;
    }
    if (leave_on_a) reattach(a, b, leave, path_a_, theta, d);
    else reattach(b, a, leave, path_b_, theta, d);
  }

  // The leaving edge is (q, parent q) with q on the path from s: the subtree under q, which
  // holds s, is re-rooted at s and hung from t by the entering edge; its potentials move by
  // the entering cell's reduced cost so that the new edge has reduced cost 0.
  void reattach(int s, int t, int q, const std::vector<int>& path, double theta, double d) {
    remove_adj(q, parent_[q]);
    remove_adj(parent_[q], q);
    int prev = t;
    double carry = theta;
    for (int w : path) {  // reverse the parent pointers from s up to q
      const double old_flow = flow_[w];
      parent_[w] = prev;
      flow_[w] = carry;
      carry = old_flow;
      prev = w;
      if (w == q) break;
    }
    adj_[s].push_back(t);
    adj_[t].push_back(s);
    const bool s_is_row = s < m_;
    stack_.assign(1, s);
    depth_[s] = depth_[t] + 1;
    while (!stack_.empty()) {
      const int x = stack_.back();
      stack_.pop_back();
      pot_[x] += ((x < m_) == s_is_row) ? d : -d;
      for (int y : adj_[x]) {
        if (y == parent_[x]) continue;
        depth_[y] = depth_[x] + 1;
        stack_.push_back(y);
      }
    }
  }

  void remove_adj(int x, int y) {
    std::vector<int>& l = adj_[x];
    const auto it = std::find(l.begin(), l.end(), y);
    *it = l.back();
    l.pop_back();
  }

  const double* c_;
  int m_, n_;
  std::vector<double> a_, b_;
  double tol_;
  int64_t max_iterations_;
  int64_t block_ = 0, next_ = 0, iterations_ = 0, degenerate_run_ = 0;
  bool bland_ = false;
  std::vector<int> parent_, depth_;
  std::vector<double> flow_, pot_;
  std::vector<std::vector<int>> adj_;
  std::vector<int> path_a_, path_b_, stack_;
  std::vector<std::pair<int, int>> edge_nodes_;  // initial basis, before orientation
  std::vector<double> initial_flow_;
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

Reduced reduce(const double* cost, int64_t m, int64_t n, const std::vector<double>& a_in,
               const std::vector<double>& b_in) {
  FGVC_CHECK(m > 0 && n > 0, "emd", "empty problem (", m, " x ", n, ")");
  FGVC_CHECK(m < (1 << 30) && n < (1 << 30), "emd", "problem too large (", m, " x ", n, ")");
  FGVC_CHECK(static_cast<int64_t>(a_in.size()) == m && static_cast<int64_t>(b_in.size()) == n, "emd", "weights of sizes ",
             a_in.size(), " and ", b_in.size(), " for a ", m, " x ", n, " cost matrix");
  Reduced r;
  r.a = normalized(a_in, "source");
  r.b = normalized(b_in, "target");
  double max_cost = 0;
  for (int64_t k = 0; k < m * n; ++k) {
    FGVC_CHECK(std::isfinite(cost[k]), "emd", "cost (", k / n, ", ", k % n, ") is ", cost[k]);
    max_cost = std::max(max_cost, std::fabs(cost[k]));
  }
  r.max_cost = max_cost > 0 ? max_cost : 1.0;
  // Classes of weight 0 take no part; solve on the others.
  for (int64_t i = 0; i < m; ++i)
    if (r.a[i] > 0) r.rows.push_back(static_cast<int>(i)), r.ra.push_back(r.a[i]);
  for (int64_t j = 0; j < n; ++j)
    if (r.b[j] > 0) r.cols.push_back(static_cast<int>(j)), r.rb.push_back(r.b[j]);
  if (r.rows.size() != static_cast<size_t>(m) || r.cols.size() != static_cast<size_t>(n)) {
    r.sub.resize(r.rows.size() * r.cols.size());
    for (size_t i = 0; i < r.rows.size(); ++i)
      for (size_t j = 0; j < r.cols.size(); ++j) r.sub[i * r.cols.size() + j] = cost[r.rows[i] * n + r.cols[j]];
  }
  return r;
}

InitialTree initial_tree(const double* cost, const Reduced& r, const Options& options) {
  Solver solver(r.cost(cost), r.m(), r.n(), r.ra, r.rb, options, r.max_cost);
  solver.start();
  return {solver.parents(), solver.flows()};
}

void prepare_batch(const std::vector<Problem>& problems, const Options& options, std::vector<Reduced>* reduced,
                   std::vector<InitialTree>* trees) {
  const int64_t count = static_cast<int64_t>(problems.size());
  reduced->assign(problems.size(), {});
  trees->assign(problems.size(), {});
  std::vector<std::exception_ptr> errors(problems.size());
#pragma omp parallel for schedule(dynamic) if (count > 1)
  for (int64_t q = 0; q < count; ++q) {
    try {
      const Problem& p = problems[q];
      (*reduced)[q] = reduce(p.cost, p.m, p.n, p.a, p.b);
      (*trees)[q] = initial_tree(p.cost, (*reduced)[q], options);
    } catch (...) {  // exceptions must not leave an OpenMP region
      errors[q] = std::current_exception();
    }
  }
  for (int64_t q = 0; q < count; ++q) {
    if (!errors[q]) continue;
    if (count == 1) std::rethrow_exception(errors[q]);
    try {
      std::rethrow_exception(errors[q]);
    } catch (const Error& e) {
      throw Error("emd: problem " + std::to_string(q) + " of the batch: " + e.what());
    }
  }
}

Result assemble(const double* cost, int64_t m, int64_t n, const Reduced& r, const std::vector<int>& parent,
                const std::vector<double>& flow, const std::vector<double>& pot, int64_t iterations) {
  const int rm = r.m();
  Result out;
  out.iterations = iterations;
  for (int x = 0; x < static_cast<int>(parent.size()); ++x) {  // each basic cell is (node, its parent)
    if (parent[x] < 0) continue;
    const int i = x < rm ? x : parent[x], j = (x < rm ? parent[x] : x) - rm;
    out.flow.push_back({r.rows[i], r.cols[j], flow[x]});
    out.cost += flow[x] * cost[static_cast<int64_t>(r.rows[i]) * n + r.cols[j]];
  }
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
  for (int64_t i = 0; i < m; ++i) out.dual_objective += r.a[i] * out.u[i];
  for (int64_t j = 0; j < n; ++j) out.dual_objective += r.b[j] * out.v[j];
  return out;
}

}  // namespace detail

Result solve(const double* cost, int64_t m, int64_t n, const std::vector<double>& a_in, const std::vector<double>& b_in,
             const Options& options) {
  const auto t0 = std::chrono::steady_clock::now();
  const detail::Reduced r = detail::reduce(cost, m, n, a_in, b_in);
  Solver solver(r.cost(cost), r.m(), r.n(), r.ra, r.rb, options, r.max_cost);
  solver.run();
  Result out =
      detail::assemble(cost, m, n, r, solver.parents(), solver.flows(), solver.potentials(), solver.iterations());
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

#if !FGVC_WITH_CUDA
std::vector<Result> solve_batch_cuda(const std::vector<Problem>&, const Options&, int) {
  throw Error("emd: the CUDA solver is not available: fgvc was built without CUDA (FGVC_CUDA=OFF)");
}
Result solve_cuda(const double*, int64_t, int64_t, const std::vector<double>&, const std::vector<double>&, const Options&,
                  int) {
  throw Error("emd: the CUDA solver is not available: fgvc was built without CUDA (FGVC_CUDA=OFF)");
}
#endif

Certificate check(const double* cost, int64_t m, int64_t n, const std::vector<double>& a_in,
                  const std::vector<double>& b_in, const Result& r) {
  const std::vector<double> a = normalized(a_in, "source"), b = normalized(b_in, "target");
  Certificate c{-kInf, 0.0, std::fabs(r.cost - r.dual_objective)};
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
