// Exact earth mover's distance: the transportation simplex (a network simplex on the
// bipartite graph of m sources and n targets) in float64.
//
// Both weight vectors are normalised to sum 1 (the paper's convention: EMD = sum f c /
// sum f with total flow 1); classes of weight 0 take no part in the flow and get duals
// that keep the certificate valid. The answer certifies itself: the flow is primal
// feasible, the duals satisfy u_i + v_j <= c_ij (to the tolerance), and the primal and dual
// objectives agree.
//
// Method: a greedy least-cost-per-row start completed to a spanning tree; the basis kept
// as a threaded rooted tree (parent, preorder list, subtree sizes and last nodes), so a
// pivot finds its cycle and moves a subtree in time proportional to the cycle, and shifts
// the potentials of the smaller side of the cut; block pricing over the cost matrix (or
// pricing by rows, Pricing::Rows below); Bland's rule after a long run of degenerate pivots,
// which rules out cycling. Where costs span so many orders of magnitude that the pricing's
// tolerance (relative to the largest cost) and the potentials' rounding could leave the cost
// more than 1e-10 above the optimum, a polish follows (on the host, after the GPU solvers
// too): double-double potentials and each cell held to -tolerance x its own cost.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace fgvc {
namespace emd {

// How the entering cell is found.
//   Block: scan blocks of cells cyclically and take the most negative reduced cost of the
//     first block that has one (the default: cheap per pivot, nothing priced twice).
//   Rows: a pass prices rows and keeps each improving row's most negative cell as a
//     candidate (Options::row_candidates of them); the solver then pivots on the most
//     negative candidate, re-pricing them all after each pivot (those that stopped improving
//     leave), until none is left; then the next pass. About half block pricing's pivots
//     where each pass prices every row. On the CPU a pass stops once it has its candidates,
//     the next going on from there; solve_cuda does the passes on the GPU (every row each
//     time, handing on every improving row's), so that the host keeps only the tree's work
//     (bench/results/emd-pricing-rounds-2026-11-27.md).
enum class Pricing { Block, Rows };

// Options::row_candidates when it is 0: the CPU's, and the GPU's (-1: every improving row's).
// Against the 2,048 most negative rows, every row's takes 18% fewer pivots and 47% fewer
// passes at 20000 x 2000, and comes out even at 6089 x 200 (counted with the GPU's pass run
// on the CPU: bench/results/emd-pricing-rounds-2026-11-27.md; scripts/gpu-check.sh --emd
// times both on the GPU).
constexpr int64_t kCpuRowCandidates = 128;
constexpr int64_t kGpuRowCandidates = -1;

struct Options {
  double tolerance = 1e-12;     // a reduced cost below -tolerance * max cost is improvable (in a polish: * its own cost)
  int64_t block_size = 0;       // cells priced per block; 0: max(256, 2 sqrt(m n)) (GPU: max(1024, 8 sqrt(m n)))
  int64_t max_iterations = 0;   // pivots allowed; an error if not optimal after them (0: no limit)
  // Degenerate pivots (no flow moved) in a row after which Bland's rule takes over until one
  // moves flow (0: the number of classes, m + n). Small values are for tests: they make both
  // solvers run their Bland's-rule paths, which weights that keep the tree strongly feasible
  // otherwise never reach.
  int64_t degenerate_limit = 0;
  // GPU only: plan each pivot in one thread (plan_pivot, emd/array_tree.h) instead of warp 0
  // (emd/warp_plan.h). The same pivots either way; for timing one against the other.
  bool gpu_one_thread_plan = false;
  // GPU only: threads per block of the pivoting kernel, a multiple of 32 up to 1024 (0: 1024).
  // The same optimum with any count; fewer for compute-sanitizer's racecheck, whose cost
  // grows with the threads that share memory (scripts/gpu-check.sh).
  int gpu_threads = 0;
  // Block or Rows. solve_cuda with Rows: passes on the GPU, pivots on the host (no kernel
  // pivots); solve_batch_cuda always pivots in its kernel with block pricing.
  Pricing pricing = Pricing::Block;
  // Pricing::Rows: the candidates a pass hands the pivots, at most (detail::RowPricer);
  // 0: kCpuRowCandidates or kGpuRowCandidates; negative: every improving row's.
  int64_t row_candidates = 0;
};

struct FlowCell {
  int32_t i, j;
  double flow;
};

struct Result {
  double cost = 0;                // sum f_ij c_ij, total flow 1
  // sum a_i u_i + sum b_j v_j (equals cost at the optimum), from the potentials before their
  // rounding to u, v: after a polish (costs spanning many orders of magnitude) they are
  // double-double, and u, v their nearest doubles.
  double dual_objective = 0;
  std::vector<FlowCell> flow;     // the basic cells (zero flows included)
  std::vector<double> u, v;       // dual potentials, m and n of them
  int64_t iterations = 0;         // pivots
  int64_t bland_pivots = 0;       // CPU solver: pivots whose entering cell Bland's rule chose (Options::degenerate_limit)
  int64_t pricing_passes = 0;     // Pricing::Rows: passes (each over every row, or on the CPU part of them; 0 with block pricing)
  double pass_seconds = 0;        // Pricing::Rows: the passes' time (on the GPU: with the round trips)
  double start_seconds = 0;       // Pricing::Rows: setting up (on the GPU: the cost matrix's upload) and the greedy start
  double seconds = 0;
  // GPU solver only (empty or 0 on the CPU): the shares of the kernel's time (thread 0's
  // clock) in pricing, in planning the pivots (warp 0: cycle, flows, rehanging), in the
  // parallel passes over the preorder, and in recomputing the potentials exactly; and the
  // kernel's time by CUDA events, for the whole launch (all problems of a batch).
  std::vector<double> gpu_phases;
  double gpu_kernel_seconds = 0;
  int gpu_shared_tier = -1;  // where the kernel kept the tree: 2 with the flows in shared memory, 1 the tree alone, 0 global
};

// cost: row-major m x n. a: m weights, b: n weights (non-negative, finite, not all zero).
Result solve(const double* cost, int64_t m, int64_t n, const std::vector<double>& a, const std::vector<double>& b,
             const Options& options = {});

// The same method on a CUDA device (emd/transport_simplex.cu): the greedy start on the host,
// then one thread block per problem pivots to the optimum without returning to the host.
// The block prices each block of cells in parallel (emd/cell_pricing.h), warp 0 finds the
// cycle and turns the tree (emd/warp_plan.h), and all threads move the changed run of the
// tree's preorder array and shift the moved subtree's potentials (emd/array_tree.h); every
// 1024 pivots and at the end the potentials are recomputed exactly by pointer jumping.
// Throws where the library has no CUDA or no device. `device`: the CUDA device index.
// device_cost: the same m x n costs already on that device (Pricing::Rows prices them there
// instead of a copy, unless classes of weight 0 are dropped, which takes a smaller matrix).
Result solve_cuda(const double* cost, int64_t m, int64_t n, const std::vector<double>& a, const std::vector<double>& b,
                  const Options& options = {}, int device = 0, const double* device_cost = nullptr);

// solve_cuda with Pricing::Rows: the kernel's time (CUDA events) is that of the pricing
// passes, gpu_phases stays empty.

// Many problems at once, one thread block each (many targets against one source, or many
// candidate subsets): the throughput mode. Costs are host row-major matrices (the greedy
// start runs on the host); where the same matrix is on the device already (distances
// computed there), device_cost points to it and the kernel prices it in place instead of a
// copy (unless classes of weight 0 are dropped, which takes a smaller matrix).
struct Problem {
  const double* cost;
  int64_t m, n;
  std::vector<double> a, b;
  // Optional: the same m x n row-major matrix in memory of `device`, complete before the call
  // or written on fgvc's stream for that device (as fgvc's own kernels and cuBLAS calls are).
  const double* device_cost = nullptr;
};
std::vector<Result> solve_batch_cuda(const std::vector<Problem>& problems, const Options& options = {}, int device = 0);

// The largest violation of the optimality certificate, for tests: max over cells of
// (u_i + v_j - c_ij), the largest marginal error of the flow (a negative flow counts as its
// size), |primal - dual| of the result, and how far the result's two objectives are from the
// ones its flow and duals give, recomputed here (sum f_ij c_ij; sum a_i u_i + sum b_j v_j over
// the classes of weight > 0), so that a cost or a dual objective that is not the one of the
// flow and duals returned cannot pass. (The solver's dual objective also holds the potentials'
// low parts after a polish, which the returned duals round off: near 1e-16 of the largest |u|.)
struct Certificate {
  double dual_violation, marginal_error, gap, objective_error;
};
Certificate check(const double* cost, int64_t m, int64_t n, const std::vector<double>& a, const std::vector<double>& b,
                  const Result& r);

namespace detail {
// Refuses options no solve can honour: a tolerance that is negative or not finite (a pivot
// that never improves, or a comparison that is always false), negative counts.
void check_options(const Options& options);
// What solve() and solve_cuda() share: the problem without its weight-0 classes, the greedy
// start, and the answer in the caller's indices with the weight-0 classes' duals.
struct Reduced {
  std::vector<double> a, b;    // normalised weights, all classes
  std::vector<int> rows, cols; // classes with weight > 0
  std::vector<double> ra, rb;  // their weights, in units of 1 / flow_scale
  // Integer weights (class counts) are solved exactly: ra = counts * (sum of b), rb = counts *
  // (sum of a), both summing to flow_scale, integers below 2^53, so every flow is an integer
  // and a zero flow is exactly 0 (degeneracy seen as it is). Otherwise the normalised weights,
  // scale 1.
  double flow_scale = 1;
  std::vector<double> sub;     // rows x cols costs when some class was dropped, else empty
  double max_cost = 1;         // the largest |cost| among them (1 where all are 0)
  double min_cost = 0;         // the smallest cost among them
  int m() const { return static_cast<int>(rows.size()); }
  int n() const { return static_cast<int>(cols.size()); }
  const double* cost(const double* full) const { return sub.empty() ? full : sub.data(); }
};
Reduced reduce(const double* cost, int64_t m, int64_t n, const std::vector<double>& a, const std::vector<double>& b);
// Nodes 0..m-1 are the rows, m..m+n-1 the columns; node 0 is the root (parent -1) and
// each other node's basic cell is the edge to its parent, with its flow.
struct InitialTree {
  std::vector<int> parent;
  std::vector<double> flow;
  std::vector<int> order;  // a preorder from the root (the GPU's array tree, emd/array_tree.h)
  std::vector<int> size;   // nodes in each subtree
};
InitialTree initial_tree(const double* cost, const Reduced& r, const Options& options);
// reduce() and initial_tree() of every problem of a batch, the problems spread over the
// OpenMP threads (the GPU solver's host side); the first problem's error is thrown.
void prepare_batch(const std::vector<Problem>& problems, const Options& options, std::vector<Reduced>* reduced,
                   std::vector<InitialTree>* trees);
// The answer in the caller's indices; pot_low: the potentials' low parts where a polish made
// them (Solver::polish_if_needed, emd/transport_simplex.cpp), else empty.
Result assemble(const double* cost, int64_t m, int64_t n, const Reduced& r, const std::vector<int>& parent,
                const std::vector<double>& flow, const std::vector<double>& pot, int64_t iterations,
                const std::vector<double>& pot_low = {});
// The GPU solver's host side after its kernel: each problem's basis (parents, flows,
// potentials; iterations: the kernel's pivots) polished on the host where costs spanning many
// orders of magnitude need it, then assembled; the problems spread over the OpenMP threads.
std::vector<Result> finish_batch(const std::vector<Problem>& problems, const Options& options,
                                 const std::vector<Reduced>& reduced, const std::vector<std::vector<int>>& parents,
                                 const std::vector<std::vector<double>>& flows,
                                 const std::vector<std::vector<double>>& pots, const std::vector<int64_t>& iterations);

// A pass of Pricing::Rows over a problem's m x n costs (its classes of weight > 0): for each
// row priced whose smallest reduced cost c_ij - u_i - v_j, computed as (c_ij - u_i) - v_j, is
// below -tol, that cost and its first column; `pot` holds u_0..u_{m-1}, v_0..v_{n-1}.
//   want <= 0 (or at least m): every row, in increasing order. The CPU's pass (OpenMP) and the GPU's
//     (emd/row_pricing.cu) give the same bits, so both solvers take the same pivots.
//   want > 0, on the CPU, where pricing costs: rows in cyclic order from where the last pass
//     stopped, until `want` of them improve or every row was priced once.
//   want > 0, on the GPU, where a pass costs little: every row, and the `want` most negative
//     kept (fewer pivots for more passes).
// Either way an empty answer means that no cell improves.
struct RowMinimum {
  double reduced;
  int i, j;
  double cost;  // c_ij, handed on so that the solver's re-pricing reads no row of the matrix
};
class RowPricer {
 public:
  virtual ~RowPricer() = default;
  virtual void price(const double* pot, double tol, int64_t want, std::vector<RowMinimum>* out) = 0;
  virtual double device_seconds() const { return 0; }  // the GPU's time in the passes
};
std::unique_ptr<RowPricer> cpu_row_pricer(const double* cost, int m, int n);
// The GPU's pass (CUDA builds only): the costs copied to `device` once, kept there; or, with
// device_cost, priced where they already are on that device (not copied, not freed).
std::unique_ptr<RowPricer> cuda_row_pricer(const double* cost, int m, int n, int device,
                                           const double* device_cost = nullptr);
// The host solver: Pricing::Rows with the pricer `make` makes for the reduced problem's
// costs, or, with an empty `make`, block pricing.
using MakeRowPricer = std::function<std::unique_ptr<RowPricer>(const double* cost, int m, int n)>;
Result solve_by_rows(const double* cost, int64_t m, int64_t n, const std::vector<double>& a,
                     const std::vector<double>& b, const Options& options, const MakeRowPricer& make);
}  // namespace detail

}  // namespace emd
}  // namespace fgvc
