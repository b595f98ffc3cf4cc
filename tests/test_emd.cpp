// The exact EMD solver against POT's answers (tests/data/emd_pot_fixtures.json, made by
// scripts/emd_fixtures.py), and the self-certificate (primal feasibility, dual
// feasibility, zero gap) on every problem solved; ground distances; domain files.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "emd/array_tree.h"
#include "emd/cell_pricing.h"
#include "emd/domain.h"
#include "emd/ground_distance.h"
#include "emd/transport_simplex.h"
#include "emd/warp_plan.h"
#include "tensor/safetensors.h"
#include "test_util.h"

namespace fgvc {
namespace {

using nlohmann::json;

Tensor matrix(const json& rows) {
  std::vector<double> v;
  for (const auto& r : rows)
    for (const auto& x : r) v.push_back(x.get<double>());
  return Tensor::from_vector(v, {static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())});
}

// Checks a result's certificate (primal and dual feasibility, zero gap).
void expect_certified(const Tensor& cost, const std::vector<double>& a, const std::vector<double>& b,
                      const emd::Result& r, const std::string& what) {
  const emd::Certificate c = emd::check(cost.data<double>(), cost.size(0), cost.size(1), a, b, r);
  // Relative to the largest |cost| (the solver's own tolerance is), so that problems whose
  // costs are all tiny are held to the same standard; 1 where every cost is 0.
  double max_cost = 0;
  for (double x : cost.to_vector<double>()) max_cost = std::max(max_cost, std::fabs(x));
  const double scale = max_cost > 0 ? max_cost : 1.0;
  EXPECT_LE(c.dual_violation, 1e-9 * scale) << what << ": reduced cost below zero";
  EXPECT_LE(c.marginal_error, 1e-12) << what << ": flow does not meet the weights";
  EXPECT_LE(c.gap, 1e-9 * scale) << what << ": primal and dual objectives differ";
  EXPECT_LE(c.objective_error, 1e-9 * scale) << what << ": the objectives are not those of the flow and duals";
  EXPECT_LE(static_cast<int64_t>(r.flow.size()), cost.size(0) + cost.size(1) - 1) << what;
}

// Solves on the CPU, checks the certificate, returns the result.
emd::Result solve_certified(const Tensor& cost, const std::vector<double>& a, const std::vector<double>& b,
                            const std::string& what) {
  const emd::Result r = emd::solve(cost.data<double>(), cost.size(0), cost.size(1), a, b);
  expect_certified(cost, a, b, r, what);
  return r;
}

// The certificate catches a wrong answer of each kind: a flow moved between two cells, a cost
// or dual objective that is not the flow's or the duals', a dual raised. (So that the checks
// every solve passes through could fail.)
TEST(Emd, TheCertificateCatchesEachKindOfWrongAnswer) {
  const int64_t m = 12, n = 9;
  const Tensor cost = testing::rand_t({m, n}, 91, 0.0, 10.0, DType::Float64);
  const std::vector<double> a = testing::rand_t({m}, 92, 0.1, 1.0, DType::Float64).to_vector<double>(),
                            b = testing::rand_t({n}, 93, 0.1, 1.0, DType::Float64).to_vector<double>();
  const emd::Result good = solve_certified(cost, a, b, "the good answer");
  const auto check = [&](const emd::Result& r) { return emd::check(cost.data<double>(), m, n, a, b, r); };
  // Half of a basic cell's flow moved to another cell of its row: the marginals of two
  // columns break, and the primal recomputed from the flow no longer matches r.cost.
  emd::Result moved = good;
  ASSERT_GT(moved.flow[0].flow, 0);
  const double half = moved.flow[0].flow / 2;
  moved.flow[0].flow -= half;
  moved.flow.push_back({moved.flow[0].i, (moved.flow[0].j + 1) % static_cast<int>(n), half});
  EXPECT_GT(check(moved).marginal_error, 1e-6);
  EXPECT_GT(check(moved).objective_error, 1e-9);
  emd::Result costed = good;
  costed.cost *= 1.001;  // gap and objective error
  EXPECT_GT(check(costed).gap, 1e-6);
  EXPECT_GT(check(costed).objective_error, 1e-6);
  emd::Result claimed = good;  // a cost and dual objective that agree, but are not the flow's
  claimed.cost += 0.01, claimed.dual_objective += 0.01;
  EXPECT_LE(check(claimed).gap, 1e-12);
  EXPECT_GT(check(claimed).objective_error, 1e-3);
  emd::Result raised = good;  // a dual raised: some reduced cost turns negative
  raised.u[3] += 1.0;
  EXPECT_GT(check(raised).dual_violation, 0.5);
  EXPECT_GT(check(raised).objective_error, 1e-3);
}

TEST(Emd, MatchesPotOnTheCommittedFixtures) {
  std::ifstream in(FGVC_TEST_DATA "/emd_pot_fixtures.json");
  ASSERT_TRUE(in) << "missing fixture file";
  const json fixtures = json::parse(in);
  ASSERT_GE(fixtures["problems"].size(), 15u);
  for (const json& p : fixtures["problems"]) {
    const std::string name = p["name"];
    const std::vector<double> a = p["a"], b = p["b"];
    const Tensor cost = p.contains("cost") ? matrix(p["cost"])
                                           : emd::pairwise_distances(matrix(p["source"]), matrix(p["target"]));
    const emd::Result r = solve_certified(cost, a, b, name);
    const double want = p["pot_cost"];
    EXPECT_LE(std::fabs(r.cost - want), 1e-9 * std::max(want, 1e-12)) << name << ": ours " << r.cost << ", POT " << want;
  }
}

TEST(Emd, LargerRandomProblemsCertifyThemselves) {
  for (int k = 0; k < 4; ++k) {
    const int64_t m = 150 + 97 * k, n = 40 + 31 * k;
    const Tensor s = testing::randn_t({m, 32}, 100 + k, DType::Float64);
    const Tensor t = kernels::add(testing::randn_t({n, 32}, 200 + k, DType::Float64), Tensor::scalar(0.3, DType::Float64));
    std::vector<double> a, b;
    for (int64_t i = 0; i < m; ++i) a.push_back(1 + (i * 7919) % 97);  // uneven, long-tailed-ish
    for (int64_t j = 0; j < n; ++j) b.push_back(1 + (j * 104729) % 13);
    const Tensor d = emd::pairwise_distances(s, t);
    const emd::Result r = solve_certified(d, a, b, "random " + std::to_string(k));
    // Units do not matter: costs scaled by 1e-20 (or 1e20) give the cost scaled alike, with
    // the certificate held to the same relative standard.
    for (double unit : {1e-20, 1e20}) {
      const emd::Result scaled = solve_certified(kernels::mul(d, Tensor::scalar(unit, DType::Float64)), a, b, "scaled");
      EXPECT_NEAR(scaled.cost / unit, r.cost, 1e-12 * r.cost) << unit;
    }
  }
}

TEST(Emd, DegenerateProblemsSolve) {
  // Equal weights and integer costs with many ties: every step of the start is degenerate.
  const int64_t m = 120, n = 30;
  std::vector<double> cost(static_cast<size_t>(m * n));
  for (int64_t k = 0; k < m * n; ++k) cost[k] = static_cast<double>((k * 2654435761u) % 4);
  const Tensor c = Tensor::from_vector(cost, {m, n});
  solve_certified(c, std::vector<double>(m, 1.0), std::vector<double>(n, 1.0), "ties");
  // All costs equal: any feasible flow is optimal, and the cost is that constant.
  const Tensor flat = Tensor::full({7, 5}, 2.5, DType::Float64);
  EXPECT_NEAR(solve_certified(flat, std::vector<double>(7, 1.0), {1, 2, 3, 4, 5}, "flat").cost, 2.5, 1e-15);
  // Zero weights on both sides, and zero costs.
  const Tensor zero = Tensor::zeros({4, 4}, DType::Float64);
  EXPECT_EQ(solve_certified(zero, {0, 1, 0, 2}, {1, 0, 0, 1}, "zeros").cost, 0.0);
}

// Where rows outnumber columns at least 2 to 1, the solver keeps only the columns'
// potentials and derives the rows' (lean rows); otherwise it shifts every node's. A problem
// and its transpose (the same optimum) take one path each, by both pricings; the ties and
// equal weights make most pivots degenerate.
TEST(Emd, AProblemAndItsTransposeReachTheSameOptimum) {
  const int64_t m = 300, n = 60;
  const Tensor s = testing::randn_t({m, 16}, 41, DType::Float64);
  const Tensor t = testing::randn_t({n, 16}, 42, DType::Float64);
  std::vector<double> a, b;
  for (int64_t i = 0; i < m; ++i) a.push_back(1 + (i * 7919) % 89);
  for (int64_t j = 0; j < n; ++j) b.push_back(1 + (j * 104729) % 17);
  const Tensor distances = emd::pairwise_distances(s, t);
  std::vector<double> ties = distances.to_vector<double>();  // the distances in whole units: ties
  for (double& x : ties) x = std::floor(x);
  struct Problem {
    std::string name;
    Tensor cost;
    std::vector<double> a, b;
  };
  const std::vector<Problem> problems = {{"gaussian", distances, a, b},
                                         {"integer ties", Tensor::from_vector(ties, {m, n}), std::vector<double>(m, 1.0),
                                          std::vector<double>(n, 1.0)}};
  for (const Problem& p : problems)
    for (const emd::Pricing pricing : {emd::Pricing::Block, emd::Pricing::Rows}) {
      emd::Options o;
      o.pricing = pricing;
      const std::string what = p.name + (pricing == emd::Pricing::Rows ? ", rows" : ", block");
      const Tensor transposed = p.cost.transpose(0, 1).contiguous();
      const emd::Result tall = emd::solve(p.cost.data<double>(), m, n, p.a, p.b, o);
      const emd::Result wide = emd::solve(transposed.data<double>(), n, m, p.b, p.a, o);
      expect_certified(p.cost, p.a, p.b, tall, what + " (tall)");
      expect_certified(transposed, p.b, p.a, wide, what + " (wide)");
      EXPECT_LE(std::fabs(tall.cost - wide.cost), 1e-12 * tall.cost) << what;
      EXPECT_GT(tall.iterations, 0) << what;
    }
}

// A class of weight 0 takes no part, however far away it is: the solver's tolerance (relative
// to the largest cost) is taken over the classes that do. With a weight-0 class at 1e12 in
// the tolerance, improvements below 1 went unseen and the solve stopped 9% above the optimum.
TEST(Emd, AFarClassOfWeightZeroChangesNothing) {
  const int64_t m = 40, n = 30;
  const Tensor cost = testing::rand_t({m, n}, 21, 0.0, 10.0, DType::Float64);
  const std::vector<double> a = testing::rand_t({m}, 22, 1.0, 50.0, DType::Float64).to_vector<double>(),
                            b = testing::rand_t({n}, 23, 1.0, 50.0, DType::Float64).to_vector<double>();
  const emd::Result near = solve_certified(cost, a, b, "near");
  std::vector<double> far = cost.to_vector<double>(), a_far = a;
  far.insert(far.end(), static_cast<size_t>(n), 1e12);  // one more source class, far away
  a_far.push_back(0.0);
  const emd::Result got = solve_certified(Tensor::from_vector(far, {m + 1, n}), a_far, b, "far, weight 0");
  EXPECT_NEAR(got.cost, near.cost, 1e-12 * near.cost);
  // The same problem once the class is dropped: the same pivots, not a loose stop and a polish.
  EXPECT_EQ(got.iterations, near.iterations);
}

// A problem whose costs span many orders of magnitude and whose optimum is a tiny fraction
// of its largest cost: m - 1 sources and n - 1 targets near the origin (Gaussian, d = 8, one
// count each), and one class on either side at the same far point (`far` from the origin,
// a little noise apart) with half the mass. The far pair must trade with each other alone,
// so the optimum is half their distance plus half the near problem's, which is solved on
// its own (costs of order 1, no such trouble) for `want`.
struct FarPair {
  Tensor cost;
  std::vector<double> a, b;
  double want;
};
FarPair far_pair(int64_t m, int64_t n, double far, uint64_t seed) {
  const int64_t d = 8;
  std::vector<double> s = testing::randn_t({m, d}, seed, DType::Float64).to_vector<double>(),
                      t = testing::randn_t({n, d}, seed + 1, DType::Float64).to_vector<double>();
  for (int64_t k = 0; k < d; ++k) {
    const double x = far * (k % 2 ? 1.0 : -0.5);  // the far point
    s[k] += x;
    t[k] += x;
  }
  FarPair p;
  p.cost = emd::pairwise_distances(Tensor::from_vector(s, {m, d}), Tensor::from_vector(t, {n, d}));
  p.a.assign(static_cast<size_t>(m), 1.0);
  p.b.assign(static_cast<size_t>(n), 1.0);
  p.a[0] = static_cast<double>(m - 1);
  p.b[0] = static_cast<double>(n - 1);
  const double* c = p.cost.data<double>();
  std::vector<double> near;
  for (int64_t i = 1; i < m; ++i) near.insert(near.end(), c + i * n + 1, c + (i + 1) * n);
  const emd::Result r = emd::solve(near.data(), m - 1, n - 1, std::vector<double>(static_cast<size_t>(m - 1), 1.0),
                                   std::vector<double>(static_cast<size_t>(n - 1), 1.0));
  p.want = 0.5 * c[0] + 0.5 * r.cost;
  return p;
}

// Costs from 0.1 to 1e9 with an optimum near 3: the pricing's tolerance (1e-12 of the
// largest cost) and the rounding of potentials at 1e9 left improvements of up to 3e-3 unseen,
// and the cost 2e-8 (relative) above the optimum (POT's is 1e-6 above it on such problems).
// The polish gets it to the optimum, with primal and dual objectives equal to 1e-12.
TEST(Emd, CostsSpanningManyOrdersOfMagnitudeSolveExactly) {
  for (const double far : {1e3, 1e6, 1e9}) {
    for (uint64_t seed : {71, 73}) {
      const FarPair p = far_pair(300, 60, far, seed);
      const emd::Result r = solve_certified(p.cost, p.a, p.b, "far pair");
      EXPECT_NEAR(r.cost, p.want, 1e-12 * p.want) << far << " seed " << seed;
      EXPECT_NEAR(r.dual_objective, r.cost, 1e-12 * r.cost) << far << " seed " << seed;
      emd::Options rows;
      rows.pricing = emd::Pricing::Rows;
      const emd::Result by_rows = emd::solve(p.cost.data<double>(), 300, 60, p.a, p.b, rows);
      expect_certified(p.cost, p.a, p.b, by_rows, "far pair, by rows");
      EXPECT_NEAR(by_rows.cost, p.want, 1e-12 * p.want) << far << " seed " << seed << " (by rows)";
    }
  }
  // Costs log-uniform from 1e-6 to 1e9, weights integer (counts) and not: with the tolerance
  // at 1e-3 the answer (an optimum near 1e-5) stopped with reduced costs down to -9e-4, and
  // on such problems up to 5x above the optimum. The certificate now holds relative to the
  // cost itself, not to the largest cost.
  const int64_t m = 150, n = 60;
  std::vector<double> logs = testing::rand_t({m, n}, 77, std::log(1e-6), std::log(1e9), DType::Float64).to_vector<double>();
  for (double& x : logs) x = std::exp(x);
  const Tensor spread = Tensor::from_vector(logs, {m, n});
  const std::vector<double> real_a = testing::rand_t({m}, 78, 0.1, 1.0, DType::Float64).to_vector<double>(),
                            real_b = testing::rand_t({n}, 79, 0.1, 1.0, DType::Float64).to_vector<double>();
  std::vector<double> count_a, count_b;
  for (double w : real_a) count_a.push_back(std::round(50 * w));
  for (double w : real_b) count_b.push_back(std::round(50 * w));
  for (const bool counts : {true, false}) {
    const std::vector<double>& a = counts ? count_a : real_a;
    const std::vector<double>& b = counts ? count_b : real_b;
    const emd::Result r = emd::solve(spread.data<double>(), m, n, a, b);
    const emd::Certificate c = emd::check(spread.data<double>(), m, n, a, b, r);
    EXPECT_LT(r.cost, 1e-4) << counts;
    EXPECT_LE(c.dual_violation, 1e-10 * r.cost) << counts;
    EXPECT_LE(c.gap, 1e-10 * r.cost) << counts;
    EXPECT_LE(c.marginal_error, 1e-12) << counts;
    // The recomputed primal is as good; the dual's, from potentials near 1e9 without their low
    // parts, about 1e-16 of them.
    EXPECT_LE(c.objective_error, 1e-15 * 1e9 * (m + n)) << counts;
  }
}

// Balanced classes and a domain against itself are ordinary inputs, and most of their
// pivots are degenerate. The strongly feasible tree keeps them short: with ties broken by
// the smallest cell and Bland's rule after long degenerate runs, 1000 x 200 equal counts
// took 240,616 pivots (1 s); now about 7,000.
TEST(Emd, DegenerateProblemsTakeFewPivots) {
  const Tensor s = testing::randn_t({1000, 32}, 31, DType::Float64), t = testing::randn_t({200, 32}, 32, DType::Float64);
  const Tensor d = emd::pairwise_distances(s, t);
  const emd::Result equal = solve_certified(d, std::vector<double>(1000, 1.0), std::vector<double>(200, 1.0), "equal");
  EXPECT_LT(equal.iterations, 20000);
  // The start hangs every zero-flow cell's row from its column (strongly feasible).
  const std::vector<double> a(1000, 3.0), b(200, 15.0);
  const emd::detail::Reduced r = emd::detail::reduce(d.data<double>(), 1000, 200, a, b);
  EXPECT_EQ(r.flow_scale, 3000.0 * 3000.0);  // integer weights: exact flows
  const emd::detail::InitialTree tree = emd::detail::initial_tree(d.data<double>(), r, emd::Options{});
  int zero_flow = 0;
  for (int x = 1; x < 1200; ++x) {
    if (tree.flow[x] != 0) continue;
    ++zero_flow;
    EXPECT_LT(x, 1000) << "a column hangs with zero flow";
  }
  EXPECT_GT(zero_flow, 0);  // the start is degenerate: the check above had something to check
  // A domain against itself, long-tailed counts: the start is the identity flow; cost 0.
  const Tensor x = testing::randn_t({400, 32}, 33, DType::Float64);
  std::vector<double> counts;
  for (int i = 0; i < 400; ++i) counts.push_back(std::max(1, 2000 / (1 + (i * 37) % 400)));
  const emd::Result self = solve_certified(emd::pairwise_distances(x, x), counts, counts, "itself");
  EXPECT_EQ(self.cost, 0.0);
  EXPECT_LT(self.iterations, 400);
}

TEST(Emd, OneClassOnEitherSideIsTheWeightedMeanDistance) {
  const Tensor c = Tensor::from_vector(std::vector<double>{1.0, 4.0, 2.0}, {1, 3});
  const emd::Result r = solve_certified(c, {5.0}, {1.0, 1.0, 2.0}, "1 x n");
  EXPECT_NEAR(r.cost, (1.0 + 4.0 + 2.0 * 2.0) / 4.0, 1e-15);
  EXPECT_EQ(r.iterations, 0);
  const Tensor ct = Tensor::from_vector(std::vector<double>{1.0, 4.0, 2.0}, {3, 1});
  EXPECT_NEAR(solve_certified(ct, {1.0, 1.0, 2.0}, {3.0}, "m x 1").cost, 9.0 / 4.0, 1e-15);
}

TEST(Emd, MaxIterationsAllowsExactlyThatManyPivots) {
  const Tensor s = testing::randn_t({60, 8}, 7, DType::Float64), t = testing::randn_t({20, 8}, 8, DType::Float64);
  const Tensor c = emd::pairwise_distances(s, t);
  const std::vector<double> a(60, 1.0), b(20, 1.0);
  const emd::Result free = solve_certified(c, a, b, "no limit");
  ASSERT_GT(free.iterations, 1);
  emd::Options o;
  o.max_iterations = free.iterations;
  const emd::Result limited = emd::solve(c.data<double>(), 60, 20, a, b, o);
  expect_certified(c, a, b, limited, "at the limit");
  EXPECT_EQ(limited.cost, free.cost);
  o.max_iterations = free.iterations - 1;
  EXPECT_THROW(emd::solve(c.data<double>(), 60, 20, a, b, o), Error);
  o.block_size = INT64_MAX;  // clamped to the matrix: Dantzig's rule
  o.max_iterations = 0;
  const emd::Result dantzig = emd::solve(c.data<double>(), 60, 20, a, b, o);
  expect_certified(c, a, b, dantzig, "Dantzig's rule");
  EXPECT_NEAR(dantzig.cost, free.cost, 1e-12 * free.cost);
}

TEST(Emd, RejectsOptionsNoSolveCanHonour) {
  const double cost[] = {1, 2, 3, 4, 5, 7};
  for (const double tolerance : {-1.0, std::nan(""), 1.0}) {
    emd::Options o;
    o.tolerance = tolerance;
    try {
      emd::solve(cost, 3, 2, {3, 1, 2}, {2, 4}, o);
      ADD_FAILURE() << "tolerance " << tolerance << " was taken";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("is not in [0, 1)"), std::string::npos) << e.what();
    }
  }
  emd::Options o;
  o.max_iterations = -1;
  EXPECT_THROW(emd::solve(cost, 3, 2, {3, 1, 2}, {2, 4}, o), Error);
}

TEST(Emd, RejectsBadWeightsAndCosts) {
  const Tensor c = Tensor::ones({2, 2}, DType::Float64);
  EXPECT_THROW(emd::solve(c.data<double>(), 2, 2, {1, -1}, {1, 1}), Error);
  EXPECT_THROW(emd::solve(c.data<double>(), 2, 2, {0, 0}, {1, 1}), Error);
  EXPECT_THROW(emd::solve(c.data<double>(), 2, 2, {1, NAN}, {1, 1}), Error);
  EXPECT_THROW(emd::solve(c.data<double>(), 2, 2, {1}, {1, 1}), Error);
  try {
    emd::solve(nullptr, 2, 2, {1, 1}, {1, 1});
    ADD_FAILURE() << "a null cost matrix was read";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "emd: no cost matrix (a null pointer) for a 2 x 2 problem");
  }
  const Tensor bad = Tensor::from_vector(std::vector<double>{1, INFINITY, 1, 1}, {2, 2});
  EXPECT_THROW(emd::solve(bad.data<double>(), 2, 2, {1, 1}, {1, 1}), Error);
  // A large matrix (its maximum is found over the threads): the first bad cell is named.
  const int64_t m = 1100, n = 1000;
  std::vector<double> big = testing::randn_t({m, n}, 91, DType::Float64).to_vector<double>();
  big[901 * n + 7] = -INFINITY;
  big[700 * n + 3] = NAN;
  try {
    emd::solve(big.data(), m, n, std::vector<double>(m, 1.0), std::vector<double>(n, 1.0));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cost (700, 3) is nan"), std::string::npos) << e.what();
  }
}

// One problem for the GPU tests: its cost matrix, weights, and POT's cost where known (for
// the far pair, its optimum by construction).
struct Case {
  std::string name;
  Tensor cost;
  std::vector<double> a, b;
  double pot_cost = -1;
};

std::vector<Case> gpu_cases() {
  std::vector<Case> cases;
  std::ifstream in(FGVC_TEST_DATA "/emd_pot_fixtures.json");
  const json fixtures = json::parse(in);
  for (const json& p : fixtures["problems"]) {
    const Tensor cost = p.contains("cost") ? matrix(p["cost"])
                                           : emd::pairwise_distances(matrix(p["source"]), matrix(p["target"]));
    cases.push_back({p["name"], cost, p["a"], p["b"], p["pot_cost"]});
  }
  for (int k = 0; k < 4; ++k) {  // larger random problems, long-tailed weights
    const int64_t m = 300 + 397 * k, n = 40 + 61 * k;
    const Tensor s = testing::randn_t({m, 32}, 300 + k, DType::Float64);
    const Tensor t = kernels::add(testing::randn_t({n, 32}, 400 + k, DType::Float64), Tensor::scalar(0.3, DType::Float64));
    std::vector<double> a, b;
    for (int64_t i = 0; i < m; ++i) a.push_back(1 + (i * 7919) % 97);
    for (int64_t j = 0; j < n; ++j) b.push_back(1 + (j * 104729) % 13);
    cases.push_back({"random " + std::to_string(m) + " x " + std::to_string(n), emd::pairwise_distances(s, t), a, b});
  }
  // Shapes at the kernels' edges: a last block of rows partly empty with rows of at least a
  // warp's width (9 x 40), and rows narrower than a warp (37 x 2).
  for (const auto& [m, n] : std::vector<std::pair<int64_t, int64_t>>{{9, 40}, {37, 2}}) {
    std::vector<double> a, b;
    for (int64_t i = 0; i < m; ++i) a.push_back(1 + (i * 31) % 7);
    for (int64_t j = 0; j < n; ++j) b.push_back(1 + (j * 17) % 5);
    cases.push_back({"random " + std::to_string(m) + " x " + std::to_string(n),
                     emd::pairwise_distances(testing::randn_t({m, 8}, 500 + m, DType::Float64),
                                             testing::randn_t({n, 8}, 600 + n, DType::Float64)),
                     a, b});
  }
  // The GPU kernel's three places for a tree (227 KB of shared memory a block on sm_90): the
  // smaller problems keep tree and flows in shared memory (36 B a node); 7008 nodes, the
  // tree alone (28 B a node); 8308 nodes, all in global memory.
  for (const int64_t m : {7000, 8300}) {
    const int64_t n = 8;
    std::vector<double> a, b(n, 1.0);
    for (int64_t i = 0; i < m; ++i) a.push_back(1.0 + 50.0 / (1 + i % 600));
    cases.push_back({std::string(m == 7000 ? "flows in global memory " : "tree in global memory ") +
                         std::to_string(m) + " x 8",
                     emd::pairwise_distances(testing::randn_t({m, 16}, 450 + m, DType::Float64),
                                             testing::randn_t({n, 16}, 451 + m, DType::Float64)),
                     a, b});
  }
  const int64_t m = 120, n = 30;  // integer costs with ties and equal weights: degenerate all along
  std::vector<double> ties(static_cast<size_t>(m * n));
  for (int64_t k = 0; k < m * n; ++k) ties[k] = static_cast<double>((k * 2654435761u) % 4);
  cases.push_back({"ties", Tensor::from_vector(ties, {m, n}), std::vector<double>(m, 1.0), std::vector<double>(n, 1.0)});
  cases.push_back({"zero weights", Tensor::zeros({4, 4}, DType::Float64), {0, 1, 0, 2}, {1, 0, 0, 1}});
  const FarPair far = far_pair(150, 40, 1e9, 75);  // costs spanning 10 orders of magnitude: the polish
  cases.push_back({"far pair", far.cost, far.a, far.b, far.want});
  cases.push_back({"1 x n", Tensor::from_vector(std::vector<double>{1.0, 4.0, 2.0}, {1, 3}), {5.0}, {1.0, 1.0, 2.0}});
  return cases;
}

// Pricing by rows (each pass prices every cell; the most negative of the rows' best cells,
// re-priced, is pivoted on until none improves): on every case certified, with block
// pricing's and POT's optimum; with every row's minimum kept, and with only the 3 best.
TEST(Emd, RowPricingReachesTheSameOptimum) {
  for (const int64_t kept : {0, -1, 3}) {
    emd::Options rows;
    rows.pricing = emd::Pricing::Rows;
    rows.row_candidates = kept;
    for (const Case& c : gpu_cases()) {
      const int64_t m = c.cost.size(0), n = c.cost.size(1);
      const std::string what = c.name + " (rows, " + std::to_string(kept) + " kept)";
      const emd::Result want = emd::solve(c.cost.data<double>(), m, n, c.a, c.b);
      const emd::Result got = emd::solve(c.cost.data<double>(), m, n, c.a, c.b, rows);
      expect_certified(c.cost, c.a, c.b, got, what);
      EXPECT_LE(std::fabs(got.cost - want.cost), 1e-9 * std::max(want.cost, 1e-12)) << what;
      if (c.pot_cost >= 0) {
        EXPECT_LE(std::fabs(got.cost - c.pot_cost), 1e-9 * std::max(c.pot_cost, 1e-12)) << what;
      }
      EXPECT_GE(got.pricing_passes, 1) << what;  // the last pass finds nothing: at least that one
      EXPECT_TRUE(got.pass_seconds >= 0 && got.start_seconds >= 0 &&
                  got.pass_seconds + got.start_seconds <= got.seconds)
          << what;
      EXPECT_EQ(want.pricing_passes, 0) << what;
    }
  }
}

// A partial pass on the CPU prices rows from where the last one stopped until it has its
// candidates, and comes back to the first rows after the last; it is empty only when no
// row improves.
TEST(Emd, PartialRowPassesGoOnWhereTheLastStopped) {
  const int m = 7, n = 3;
  std::vector<double> cost(m * n), pot(m + n, 0.0);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) cost[i * n + j] = 1.0 + i + j;
  for (int i : {1, 2, 4, 6}) pot[i] = 1.5 + i;  // rows 1, 2, 4 and 6 improve, at column 0
  const std::unique_ptr<emd::detail::RowPricer> pricer = emd::detail::cpu_row_pricer(cost.data(), m, n);
  auto rows_of = [&](int64_t want) {
    std::vector<emd::detail::RowMinimum> out;
    pricer->price(pot.data(), 1e-12, want, &out);
    std::vector<int> rows;
    for (const auto& r : out) {
      EXPECT_EQ(r.j, 0);
      EXPECT_EQ(r.reduced, cost[r.i * n] - pot[r.i] - pot[m]);
      EXPECT_EQ(r.cost, cost[r.i * n]);
      rows.push_back(r.i);
    }
    return rows;
  };
  EXPECT_EQ(rows_of(3), (std::vector<int>{1, 2, 4}));
  EXPECT_EQ(rows_of(3), (std::vector<int>{6, 1, 2}));  // on from row 5, round to the start
  EXPECT_EQ(rows_of(0), (std::vector<int>{1, 2, 4, 6}));  // every row, in order
  EXPECT_EQ(rows_of(10), (std::vector<int>{1, 2, 4, 6}));  // more than the rows: every row, in order
  std::fill(pot.begin(), pot.end(), 0.0);
  EXPECT_TRUE(rows_of(2).empty());
}

// One pass on the GPU gives the CPU's pass to the bit (ties among costs included), so
// solve_cuda by rows takes the CPU's pivots and reaches its optimum exactly.
TEST(EmdCuda, RowPricingOnTheGpuTakesTheCpusPivots) {
  FGVC_REQUIRE_CUDA();
  emd::Options rows;
  rows.pricing = emd::Pricing::Rows;
  rows.row_candidates = -1;  // every row's, on both
  for (const Case& c : gpu_cases()) {
    const int m = static_cast<int>(c.cost.size(0)), n = static_cast<int>(c.cost.size(1));
    // The passes alone, at random potentials (some rows with nothing below -tol).
    const std::vector<double> pot = testing::randn_t({m + n}, 77, DType::Float64).to_vector<double>();
    std::vector<emd::detail::RowMinimum> on_cpu, on_gpu;
    emd::detail::cpu_row_pricer(c.cost.data<double>(), m, n)->price(pot.data(), 1e-12, 0, &on_cpu);
    emd::detail::cuda_row_pricer(c.cost.data<double>(), m, n, 0)->price(pot.data(), 1e-12, 0, &on_gpu);
    ASSERT_EQ(on_gpu.size(), on_cpu.size()) << c.name;
    for (size_t k = 0; k < on_cpu.size(); ++k) {
      EXPECT_EQ(on_gpu[k].i, on_cpu[k].i) << c.name;
      EXPECT_EQ(on_gpu[k].j, on_cpu[k].j) << c.name << " row " << on_cpu[k].i;
      EXPECT_EQ(on_gpu[k].reduced, on_cpu[k].reduced) << c.name << " row " << on_cpu[k].i;
      EXPECT_EQ(on_gpu[k].cost, on_cpu[k].cost) << c.name << " row " << on_cpu[k].i;
    }
    // Asked for 2, the GPU's pass keeps the 2 most negative (ties: the smaller row).
    std::vector<emd::detail::RowMinimum> best_two, want_two = on_cpu;
    emd::detail::cuda_row_pricer(c.cost.data<double>(), m, n, 0)->price(pot.data(), 1e-12, 2, &best_two);
    std::sort(want_two.begin(), want_two.end(), [](const auto& x, const auto& y) {
      return x.reduced < y.reduced || (x.reduced == y.reduced && x.i < y.i);
    });
    want_two.resize(std::min<size_t>(2, want_two.size()));
    // Handed on in row order (as a full pass is), whatever order the selection left them in.
    EXPECT_TRUE(std::is_sorted(best_two.begin(), best_two.end(), [](const auto& x, const auto& y) { return x.i < y.i; }))
        << c.name;
    std::sort(best_two.begin(), best_two.end(), [](const auto& x, const auto& y) {
      return x.reduced < y.reduced || (x.reduced == y.reduced && x.i < y.i);
    });
    ASSERT_EQ(best_two.size(), want_two.size()) << c.name;
    for (size_t k = 0; k < want_two.size(); ++k) EXPECT_EQ(best_two[k].i, want_two[k].i) << c.name;
    // Whole solves.
    const emd::Result cpu = emd::solve(c.cost.data<double>(), m, n, c.a, c.b, rows);
    const emd::Result gpu = emd::solve_cuda(c.cost.data<double>(), m, n, c.a, c.b, rows);
    expect_certified(c.cost, c.a, c.b, gpu, c.name + " (GPU rows)");
    EXPECT_EQ(gpu.iterations, cpu.iterations) << c.name;
    EXPECT_EQ(gpu.pricing_passes, cpu.pricing_passes) << c.name;
    EXPECT_EQ(gpu.cost, cpu.cost) << c.name;
    EXPECT_GT(gpu.gpu_kernel_seconds, 0) << c.name;
    EXPECT_TRUE(gpu.gpu_phases.empty()) << c.name;
    // The GPU's default (kGpuRowCandidates), and a pass that keeps only its 3 most negative rows.
    for (const int64_t candidates : {int64_t(0), int64_t(3)}) {
      emd::Options o;
      o.pricing = emd::Pricing::Rows;
      o.row_candidates = candidates;
      const emd::Result fewer = emd::solve_cuda(c.cost.data<double>(), m, n, c.a, c.b, o);
      expect_certified(c.cost, c.a, c.b, fewer, c.name + " (GPU rows, " + std::to_string(candidates) + " candidates)");
      EXPECT_LE(std::fabs(fewer.cost - cpu.cost), 1e-9 * std::max(cpu.cost, 1e-12)) << c.name;
    }
  }
}

// The GPU solver, one problem at a time and all in one batch: certified, and the CPU
// solver's (and POT's) optimum to 1e-9.
TEST(EmdCuda, MatchesTheCpuSolverAndPot) {
  FGVC_REQUIRE_CUDA();
  const std::vector<Case> cases = gpu_cases();
  std::vector<emd::Problem> batch;
  for (const Case& c : cases) batch.push_back({c.cost.data<double>(), c.cost.size(0), c.cost.size(1), c.a, c.b});
  const std::vector<emd::Result> batched = emd::solve_batch_cuda(batch);
  ASSERT_EQ(batched.size(), cases.size());
  for (size_t q = 0; q < cases.size(); ++q) {
    const Case& c = cases[q];
    const emd::Result cpu = emd::solve(c.cost.data<double>(), c.cost.size(0), c.cost.size(1), c.a, c.b);
    const emd::Result gpu = emd::solve_cuda(c.cost.data<double>(), c.cost.size(0), c.cost.size(1), c.a, c.b);
    // Thread 0's plan instead of warp 0's: the same pivots, so the same answer to the bit.
    emd::Options one_thread;
    one_thread.gpu_one_thread_plan = true;
    const emd::Result thread_plan =
        emd::solve_cuda(c.cost.data<double>(), c.cost.size(0), c.cost.size(1), c.a, c.b, one_thread);
    EXPECT_EQ(thread_plan.iterations, gpu.iterations) << c.name;
    EXPECT_EQ(thread_plan.cost, gpu.cost) << c.name;
    for (const emd::Result* r : {&gpu, &batched[q]}) {
      const std::string what = c.name + (r == &gpu ? " (GPU)" : " (GPU batch)");
      expect_certified(c.cost, c.a, c.b, *r, what);
      EXPECT_GT(r->gpu_kernel_seconds, 0) << what;
      ASSERT_EQ(r->gpu_phases.size(), 4u) << what;
      EXPECT_NEAR(r->gpu_phases[0] + r->gpu_phases[1] + r->gpu_phases[2] + r->gpu_phases[3], 1.0, 1e-9) << what;
      // Where the tree lived: any GPU gives a block 48 KB, which holds 1,000 nodes with their flows.
      const int64_t nodes = c.cost.size(0) + c.cost.size(1);
      EXPECT_TRUE(r->gpu_shared_tier >= 0 && r->gpu_shared_tier <= 2) << what;
      if (nodes < 1000) {
        EXPECT_EQ(r->gpu_shared_tier, 2) << what;
      }
      std::printf("%s: %lld nodes, shared-memory tier %d\n", what.c_str(), static_cast<long long>(nodes),
                  r->gpu_shared_tier);
      EXPECT_LE(std::fabs(r->cost - cpu.cost), 1e-9 * std::max(cpu.cost, 1e-12)) << what << ": GPU " << r->cost
                                                                                 << ", CPU " << cpu.cost;
      if (c.pot_cost >= 0) {
        EXPECT_LE(std::fabs(r->cost - c.pot_cost), 1e-9 * std::max(c.pot_cost, 1e-12)) << what << ": POT " << c.pot_cost;
      }
    }
  }
}

// The kernel's Bland's-rule branch (after every second degenerate pivot in a row), and sizes
// the other cases do not reach: rows longer than the block's 1,024 threads (3000 x 1100), and
// a batch of 64 targets as source selection runs it.
TEST(EmdCuda, BlandsRuleWideRowsAndAFullBatch) {
  FGVC_REQUIRE_CUDA();
  emd::Options bland_early;
  bland_early.degenerate_limit = 1;
  for (const Case& c : gpu_cases()) {
    const int64_t m = c.cost.size(0), n = c.cost.size(1);
    if (m + n > 600) continue;
    const emd::Result want = emd::solve(c.cost.data<double>(), m, n, c.a, c.b);
    const emd::Result got = emd::solve_cuda(c.cost.data<double>(), m, n, c.a, c.b, bland_early);
    expect_certified(c.cost, c.a, c.b, got, c.name + " (GPU, Bland early)");
    EXPECT_LE(std::fabs(got.cost - want.cost), 1e-9 * std::max(want.cost, 1e-12)) << c.name;
  }
  const int64_t m = 3000, n = 1100;
  const Tensor wide = emd::pairwise_distances(testing::randn_t({m, 48}, 700, DType::Float64),
                                              testing::randn_t({n, 48}, 701, DType::Float64));
  std::vector<double> a, b;
  for (int64_t i = 0; i < m; ++i) a.push_back(1 + (i * 7919) % 89);
  for (int64_t j = 0; j < n; ++j) b.push_back(1 + (j * 104729) % 11);
  const emd::Result want = emd::solve(wide.data<double>(), m, n, a, b);
  emd::Options rows;
  rows.pricing = emd::Pricing::Rows;
  for (const emd::Options& o : {emd::Options{}, rows}) {
    const emd::Result got = emd::solve_cuda(wide.data<double>(), m, n, a, b, o);
    const std::string what = o.pricing == emd::Pricing::Rows ? "3000 x 1100 (GPU rows)" : "3000 x 1100 (GPU)";
    expect_certified(wide, a, b, got, what);
    EXPECT_LE(std::fabs(got.cost - want.cost), 1e-9 * want.cost) << what;
  }
  const int64_t sm = 400, sn = 30;
  const Tensor source = testing::randn_t({sm, 32}, 702, DType::Float64);
  std::vector<double> sa;
  for (int64_t i = 0; i < sm; ++i) sa.push_back(1.0 + 300.0 / (1 + i));
  std::vector<Tensor> costs;
  std::vector<std::vector<double>> bs;
  std::vector<emd::Problem> batch;
  for (int t = 0; t < 64; ++t) {
    costs.push_back(emd::pairwise_distances(source, testing::randn_t({sn, 32}, 800 + t, DType::Float64)));
    std::vector<double> tb;
    for (int64_t j = 0; j < sn; ++j) tb.push_back(1 + (j * (t + 3)) % 9);
    bs.push_back(tb);
  }
  for (int t = 0; t < 64; ++t) batch.push_back({costs[t].data<double>(), sm, sn, sa, bs[t]});
  const std::vector<emd::Result> got = emd::solve_batch_cuda(batch);
  ASSERT_EQ(got.size(), 64u);
  for (int t = 0; t < 64; ++t) {
    const emd::Result one = emd::solve(costs[t].data<double>(), sm, sn, sa, bs[t]);
    expect_certified(costs[t], sa, bs[t], got[t], "batch of 64, target " + std::to_string(t));
    EXPECT_LE(std::fabs(got[t].cost - one.cost), 1e-9 * one.cost) << "batch of 64, target " << t;
  }
}

// Costs said to be on the device that are not (a host pointer): a clear error before any
// kernel could fault on them, with either pricing.
TEST(EmdCuda, DeviceCostOnTheHostIsAClearError) {
  FGVC_REQUIRE_CUDA();
  const Tensor c = emd::pairwise_distances(testing::randn_t({6, 4}, 900, DType::Float64),
                                           testing::randn_t({5, 4}, 901, DType::Float64));
  const std::vector<double> a(6, 1.0), b(5, 1.0);
  emd::Options rows;
  rows.pricing = emd::Pricing::Rows;
  for (const emd::Options& o : {emd::Options{}, rows}) {
    try {
      emd::solve_cuda(c.data<double>(), 6, 5, a, b, o, 0, c.data<double>());
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("device_cost is not memory of CUDA device 0"), std::string::npos) << e.what();
    }
  }
  // The device is still usable.
  const emd::Result r = emd::solve_cuda(c.data<double>(), 6, 5, a, b);
  expect_certified(c, a, b, r, "after the refused device_cost");
}

// Two warps a block instead of 32: the same optimum. (compute-sanitizer's racecheck runs this
// test, scripts/gpu-check.sh: its cost grows with the threads sharing memory.)
TEST(EmdCuda, FewerThreadsPerBlockReachTheSameOptimum) {
  FGVC_REQUIRE_CUDA();
  emd::Options two_warps;
  two_warps.gpu_threads = 64;
  const std::vector<Case> cases = gpu_cases();
  for (const Case& c : cases) {
    const int64_t m = c.cost.size(0), n = c.cost.size(1);
    if (c.pot_cost < 0 || m + n > 400) continue;  // POT's small fixtures only
    const emd::Result want = emd::solve(c.cost.data<double>(), m, n, c.a, c.b);
    const emd::Result got = emd::solve_cuda(c.cost.data<double>(), m, n, c.a, c.b, two_warps);
    expect_certified(c.cost, c.a, c.b, got, c.name + " (64 threads)");
    EXPECT_LE(std::fabs(got.cost - want.cost), 1e-9 * std::max(want.cost, 1e-12)) << c.name;
  }
  emd::Options odd;
  odd.gpu_threads = 48;
  const Case& c = cases.front();
  EXPECT_THROW(emd::solve_cuda(c.cost.data<double>(), c.cost.size(0), c.cost.size(1), c.a, c.b, odd), Error);
}

// Many targets against one source in one launch, as source selection runs them.
TEST(EmdCuda, BatchOfTargetsAgainstOneSource) {
  FGVC_REQUIRE_CUDA();
  const int64_t m = 700;
  const Tensor source = testing::randn_t({m, 64}, 500, DType::Float64);
  std::vector<double> a;
  for (int64_t i = 0; i < m; ++i) a.push_back(1.0 + 1000.0 / (1 + i));  // Zipf-like
  std::vector<Tensor> costs;
  std::vector<std::vector<double>> bs;
  std::vector<emd::Problem> batch;
  for (int t = 0; t < 12; ++t) {
    const int64_t n = 20 + 15 * t;
    costs.push_back(emd::pairwise_distances(source, testing::randn_t({n, 64}, 600 + t, DType::Float64)));
    std::vector<double> b;
    for (int64_t j = 0; j < n; ++j) b.push_back(1 + (j * 31) % 7);
    bs.push_back(b);
  }
  bs[5][3] = 0;  // a class of weight 0: with its costs on the device too, the kernel takes a copy
  // Half the problems have their costs on the device as well (as domain_similarities passes
  // them): priced in place.
  std::vector<Tensor> on_device;
  for (size_t t = 0; t < costs.size(); ++t) {
    on_device.push_back(t % 2 ? costs[t].cuda() : Tensor());
    batch.push_back({costs[t].data<double>(), m, costs[t].size(1), a, bs[t],
                     t % 2 ? on_device.back().data<double>() : nullptr});
  }
  const std::vector<emd::Result> got = emd::solve_batch_cuda(batch);
  for (size_t t = 0; t < costs.size(); ++t) {
    const emd::Result want = emd::solve(costs[t].data<double>(), m, costs[t].size(1), a, bs[t]);
    expect_certified(costs[t], a, bs[t], got[t], "target " + std::to_string(t));
    EXPECT_LE(std::fabs(got[t].cost - want.cost), 1e-9 * want.cost) << "target " << t;
  }
}

// The GPU solver's host side, run on the CPU: each problem of a batch gets the same start as
// on its own, and a bad problem is named.
TEST(EmdBatch, PreparesEveryProblemAndNamesABadOne) {
  const std::vector<Case> cases = gpu_cases();
  std::vector<emd::Problem> batch;
  for (const Case& c : cases) batch.push_back({c.cost.data<double>(), c.cost.size(0), c.cost.size(1), c.a, c.b});
  std::vector<emd::detail::Reduced> reduced;
  std::vector<emd::detail::InitialTree> trees;
  emd::detail::prepare_batch(batch, {}, &reduced, &trees);
  ASSERT_EQ(trees.size(), cases.size());
  for (size_t q = 0; q < cases.size(); ++q) {
    const emd::detail::Reduced r = emd::detail::reduce(batch[q].cost, batch[q].m, batch[q].n, batch[q].a, batch[q].b);
    const emd::detail::InitialTree t = emd::detail::initial_tree(batch[q].cost, r, {});
    EXPECT_EQ(trees[q].parent, t.parent) << cases[q].name;
    EXPECT_EQ(trees[q].flow, t.flow) << cases[q].name;
    EXPECT_EQ(reduced[q].rows, r.rows) << cases[q].name;
  }
  batch[2].a[0] = -1;
  try {
    emd::detail::prepare_batch(batch, {}, &reduced, &trees);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("problem 2 of the batch"), std::string::npos) << e.what();
  }
}

// Every invariant of the array tree (emd/array_tree.h); an empty string when all hold.
std::string array_tree_fault(const emd::detail::ArrayTree& t, const std::vector<int>& order, const std::vector<int>& pos,
                             const std::vector<int>& size, const std::vector<int>& parent) {
  const int nodes = t.m + t.n;
  if (order[0] != 0 || parent[0] != -1) return "the root is not first";
  for (int k = 0; k < nodes; ++k)
    if (order[k] < 0 || order[k] >= nodes || pos[order[k]] != k) return "order and pos disagree at " + std::to_string(k);
  std::vector<int> count(static_cast<size_t>(nodes), 1);
  for (int k = nodes - 1; k > 0; --k) count[parent[order[k]]] += count[order[k]];
  for (int x = 0; x < nodes; ++x) {
    if (count[x] != size[x]) return "size of node " + std::to_string(x);
    if (x == 0) continue;
    const int p = parent[x];
    if ((x < t.m) == (p < t.m)) return "edge within one side at node " + std::to_string(x);
    if (!(pos[p] < pos[x] && pos[x] + size[x] <= pos[p] + size[p])) return "node " + std::to_string(x) + " outside its parent's run";
    const double c = t.cost[emd::detail::tree_edge_cell(t, x, p)];
    // Rounding of the potentials counts at their own scale (a far class puts them at 1e9).
    const double scale = std::fabs(t.pot[x]) + std::fabs(t.pot[p]);
    if (std::fabs(c - t.pot[x] - t.pot[p]) > 1e-9 * (1 + std::fabs(c)) + 1e-11 * scale)
      return "basic cell of node " + std::to_string(x);
    if (t.flow[x] < -1e-12) return "negative flow at node " + std::to_string(x);
  }
  return "";
}

// The GPU kernel's loop run on the host: block pricing (each of the kernel's 1024 threads'
// share by best_of_cells, or first_improvable under Bland's rule, then the block's best),
// plan_pivot, then move_to_scratch and place over the changing positions one at a time (the
// kernel's threads do them in parallel between barriers); every invariant checked after
// every pivot.
// degenerate_limit: Options::degenerate_limit's (0: the nodes); *bland_pivots: pivots entered
// by Bland's rule.
emd::Result solve_with_array_tree(const Tensor& cost_t, const std::vector<double>& a, const std::vector<double>& b,
                                  const std::string& what, long long degenerate_limit = 0,
                                  long long* bland_pivots = nullptr) {
  const double* cost = cost_t.data<double>();
  const emd::detail::Reduced r = emd::detail::reduce(cost, cost_t.size(0), cost_t.size(1), a, b);
  const emd::detail::InitialTree start = emd::detail::initial_tree(cost, r, {});
  const int m = r.m(), n = r.n(), nodes = m + n;
  std::vector<int> parent = start.parent, size = start.size, order = start.order, pos(nodes), scratch(nodes),
                   path_a(nodes), path_b(nodes), stem_pos(nodes), stem_size(nodes);
  std::vector<double> flow = start.flow, pot(nodes), stem_flow(nodes);
  for (int k = 0; k < nodes; ++k) pos[order[k]] = k;
  emd::detail::ArrayTree t{m,           n,           r.cost(cost),  parent.data(), size.data(),
                           order.data(), pos.data(),  scratch.data(), flow.data(),   pot.data(),
                           path_a.data(), path_b.data(), stem_pos.data(), stem_size.data(), stem_flow.data()};
  // plan_pivot's reference copy of what a plan changes, before each pivot.
  std::vector<int> ref_parent, ref_size, ref_path_a(nodes), ref_path_b(nodes), ref_stem_pos(nodes), ref_stem_size(nodes);
  std::vector<double> ref_flow;
  std::vector<int> lanes(emd::detail::kLanes);
  // The kernel's exact recomputation: pointer jumping, each round over every node from one
  // buffer into the other (the kernel's threads do a round in parallel between barriers).
  std::vector<int> anc[2] = {std::vector<int>(nodes), std::vector<int>(nodes)};
  std::vector<double> acc[2] = {std::vector<double>(nodes), std::vector<double>(nodes)};
  auto refresh = [&] {
    for (int x = 0; x < nodes; ++x) emd::detail::jump_start(t, x, anc[0].data(), acc[0].data());
    int cur = 0;
    for (bool active = true; active; cur ^= 1) {
      active = false;
      for (int x = 0; x < nodes; ++x)
        active |= emd::detail::jump_once(t, x, anc[cur].data(), acc[cur].data(), anc[cur ^ 1].data(), acc[cur ^ 1].data());
    }
    pot = acc[cur];
  };
  refresh();
  const long long cells = static_cast<long long>(m) * n;
  const long long block = std::min<long long>(cells, std::max<long long>(1024, 8 * std::sqrt(double(cells))));
  const double tol = 1e-12 * r.max_cost;
  const int threads = 1024;  // the kernel's block
  long long next = 0, pivots = 0, degenerate = 0;
  bool bland = false, refreshed = false;
  for (;;) {
    emd::detail::Candidate enter{0.0, -1};
    const double* u = pot.data();
    const double* v = pot.data() + m;
    if (!bland) {
      for (long long scanned = 0; scanned < cells && enter.k < 0;) {
        const long long end = std::min(next + block, cells);
        for (int x = 0; x < threads; ++x)
          enter = emd::detail::better(enter, emd::detail::best_of_cells(t.cost, u, v, n, next + x, threads, end,
                                                                         emd::detail::Candidate{-tol, -1}));
        scanned += end - next;
        next = end == cells ? 0 : end;
      }
    } else {
      for (long long base = 0; base < cells && enter.k < 0; base += 16 * threads)
        for (int x = 0; x < threads; ++x) {
          const emd::detail::Candidate c =
              emd::detail::first_improvable(t.cost, u, v, n, base + x, threads, std::min(base + 16 * threads, cells), tol);
          if (c.k >= 0 && (enter.k < 0 || c.k < enter.k)) enter = c;
        }
    }
    if (enter.k < 0) {
      if (refreshed) break;
      refresh();
      refreshed = true;
      continue;
    }
    refreshed = false;
    // The reference: one thread's plan_pivot on copies.
    ref_parent = parent, ref_size = size, ref_flow = flow;
    emd::detail::ArrayTree rt = t;
    rt.parent = ref_parent.data(), rt.size = ref_size.data(), rt.flow = ref_flow.data();
    rt.path_a = ref_path_a.data(), rt.path_b = ref_path_b.data();
    rt.stem_pos = ref_stem_pos.data(), rt.stem_size = ref_stem_size.data();
    emd::detail::Move want{};
    const double want_theta = emd::detail::plan_pivot(rt, enter.k, enter.r, &want);
    if (want_theta < 0) {
      ADD_FAILURE() << what << ": plan_pivot found no tree after " << pivots << " pivots";
      return {};
    }
    // The kernel's plan: warp 0's phases (plan_by_lanes, as the kernel calls it), the lanes of
    // each phase one after another here, in a different order each pivot (a phase must not
    // depend on its lanes' order).
    std::iota(lanes.begin(), lanes.end(), 0);
    std::shuffle(lanes.begin(), lanes.end(), std::mt19937(static_cast<unsigned>(pivots)));
    emd::detail::Move mv{};
    emd::detail::LanePlan plan{};
    auto phase = [&](auto step) {
      for (int lane : lanes) step(lane);
    };
    auto best = [&](auto share) {
      emd::detail::Leaving leave{0.0, 0, -1, 0};
      for (int lane : lanes) leave = emd::detail::better_leaving(leave, share(lane));
      return leave;
    };
    emd::detail::plan_by_lanes(t, enter.k, enter.r, &plan, &mv, phase, best);
    if (plan.broken) {
      ADD_FAILURE() << what << ": the warp's plan found no tree after " << pivots << " pivots";
      return {};
    }
    const double theta = plan.leave.flow;
    if (theta != want_theta || parent != ref_parent || size != ref_size || flow != ref_flow || mv.lo != want.lo ||
        mv.hi != want.hi || mv.from != want.from || mv.count != want.count || mv.to != want.to || mv.k != want.k ||
        mv.t_before != want.t_before || mv.s_is_row != want.s_is_row || mv.shift != want.shift) {
      ADD_FAILURE() << what << ": pivot " << pivots << ": the warp's plan differs from plan_pivot's";
      return {};
    }
    for (int x = mv.lo; x < mv.hi; ++x) emd::detail::move_to_scratch(t, mv, x);
    for (int y = mv.lo; y < mv.hi; ++y) emd::detail::place(t, mv, y);
    const std::string fault = array_tree_fault(t, order, pos, size, parent);
    if (!fault.empty()) {
      ADD_FAILURE() << what << ": after pivot " << pivots << ": " << fault;
      return {};
    }
    if (bland && bland_pivots) ++*bland_pivots;
    if (theta > 0) degenerate = 0, bland = false;
    else if (++degenerate > (degenerate_limit > 0 ? degenerate_limit : nodes)) bland = true;
    if (++pivots % 1024 == 0) refresh();  // as the kernel
    if (pivots > 1000000) {
      ADD_FAILURE() << what << ": no optimum after " << pivots << " pivots";
      return {};
    }
  }
  // The GPU solver's host side from here: the polish where needed, then the answer.
  const emd::Problem problem{cost, cost_t.size(0), cost_t.size(1), a, b};
  return emd::detail::finish_batch({problem}, {}, {r}, {parent}, {flow}, {pot}, {pivots}).front();
}

// The GPU pricing's walk over cells keeps (row, column) right without dividing, for strides
// shorter and longer than a row; and a thread's best cell is the plain scan's.
TEST(EmdCellPricing, WalksCellsAndFindsTheBestLikeAPlainScan) {
  for (const int n : {1, 3, 7, 200, 1024, 1500})
    for (const int stride : {1, 5, 32, 199, 1024}) {
      emd::detail::CellWalk w = emd::detail::cell_walk(17 + n, stride, n);
      for (int s = 0; s < 300; ++s, w = emd::detail::advanced(w)) {
        ASSERT_EQ(w.k, 17 + n + static_cast<long long>(s) * stride);
        ASSERT_EQ(w.i, w.k / n) << "n " << n << " stride " << stride << " step " << s;
        ASSERT_EQ(w.j, w.k % n) << "n " << n << " stride " << stride << " step " << s;
      }
    }
  const int m = 37, n = 53;
  const Tensor c = testing::randn_t({m, n}, 77, DType::Float64);
  std::vector<double> cost = c.to_vector<double>(), pot = testing::randn_t({m + n}, 78, DType::Float64).to_vector<double>();
  cost[5 * n + 9] = cost[20 * n + 40] = -50;  // a tie: the smaller cell wins
  pot[5] = pot[20], pot[m + 9] = pot[m + 40];
  for (const int stride : {1, 4, 9, 64}) {
    for (const long long end : {0LL, 3LL, 1000LL, static_cast<long long>(m) * n}) {
      emd::detail::Candidate want{-1e-9, -1}, got{0.0, -1};
      for (long long k = 0; k < end; ++k) {
        const double r = cost[k] - pot[k / n] - pot[m + k % n];
        if (r < want.r) want = {r, k};
      }
      for (int x = 0; x < stride; ++x)
        got = emd::detail::better(got, emd::detail::best_of_cells(cost.data(), pot.data(), pot.data() + m, n, x, stride,
                                                                   end, emd::detail::Candidate{-1e-9, -1}));
      EXPECT_EQ(got.k, want.k) << "stride " << stride << " end " << end;
      if (want.k >= 0) {
        EXPECT_EQ(got.r, want.r);
      }
      const emd::detail::Candidate first = emd::detail::first_improvable(cost.data(), pot.data(), pot.data() + m, n, 0,
                                                                           1, end, 1e-9);
      long long want_first = -1;
      for (long long k = 0; k < end && want_first < 0; ++k)
        if (cost[k] - pot[k / n] - pot[m + k % n] < -1e-9) want_first = k;
      EXPECT_EQ(first.k, want_first);
    }
  }
}

TEST(EmdArrayTree, TheGpuSolversPivotStepsSolveEveryCaseOnTheHost) {
  long long bland_pivots = 0;
  for (const Case& c : gpu_cases()) {
    const emd::Result want = emd::solve(c.cost.data<double>(), c.cost.size(0), c.cost.size(1), c.a, c.b);
    // As the kernel runs, then with Bland's rule after every second degenerate pivot in a row
    // (the kernel's Bland's-rule branch; its strongly feasible trees keep real runs short).
    for (const long long limit : {0LL, 1LL}) {
      if (limit > 0 && c.cost.size(0) + c.cost.size(1) > 600) continue;
      const std::string what = c.name + (limit > 0 ? " (array tree, Bland's rule early)" : " (array tree)");
      const emd::Result got = solve_with_array_tree(c.cost, c.a, c.b, what, limit, &bland_pivots);
      if (::testing::Test::HasFailure()) return;
      expect_certified(c.cost, c.a, c.b, got, what);
      EXPECT_LE(std::fabs(got.cost - want.cost), 1e-9 * std::max(want.cost, 1e-12)) << what;
      if (c.cost.size(0) > 1 && c.cost.size(1) > 1 && want.iterations > 0) {
        EXPECT_GT(got.iterations, 0) << what;
      }
    }
  }
  EXPECT_GT(bland_pivots, 0);  // the early limit reached Bland's rule
}

// Both CPU pricings with Bland's rule after every second degenerate pivot in a row: the
// same optimum, certified.
TEST(Emd, BlandsRuleAfterShortDegenerateRunsReachesTheSameOptimum) {
  int64_t bland_pivots[2] = {0, 0};
  for (const Case& c : gpu_cases()) {
    const int64_t m = c.cost.size(0), n = c.cost.size(1);
    if (m + n > 600) continue;
    const emd::Result want = emd::solve(c.cost.data<double>(), m, n, c.a, c.b);
    for (const emd::Pricing pricing : {emd::Pricing::Block, emd::Pricing::Rows}) {
      emd::Options o;
      o.degenerate_limit = 1;
      o.pricing = pricing;
      const emd::Result got = emd::solve(c.cost.data<double>(), m, n, c.a, c.b, o);
      const std::string what = c.name + (pricing == emd::Pricing::Rows ? " (rows, Bland early)" : " (Bland early)");
      expect_certified(c.cost, c.a, c.b, got, what);
      EXPECT_LE(std::fabs(got.cost - want.cost), 1e-9 * std::max(want.cost, 1e-12)) << what;
      bland_pivots[pricing == emd::Pricing::Rows] += got.bland_pivots;
      EXPECT_EQ(want.bland_pivots, 0) << c.name;  // the default limit: never on these
    }
  }
  EXPECT_GT(bland_pivots[0], 0);  // block pricing reached Bland's rule
  EXPECT_GT(bland_pivots[1], 0);  // pricing by rows too
}

TEST(EmdCuda, WithoutADeviceItIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present";
  const Tensor c = Tensor::ones({2, 2}, DType::Float64);
  try {
    emd::solve_cuda(c.data<double>(), 2, 2, {1, 1}, {1, 1});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("emd:"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
  }
}

TEST(GroundDistance, MatchesExactDifferencesIncludingNearDuplicates) {
  Tensor a = kernels::binary(kernels::BinaryOp::Mul, testing::randn_t({20, 64}, 1, DType::Float64), 100.0);
  Tensor b = kernels::binary(kernels::BinaryOp::Mul, testing::randn_t({15, 64}, 2, DType::Float64), 100.0);
  // Near-duplicates of large vectors: the GEMM form cancels to nothing here.
  b.slice(0, 0, 3).copy_(kernels::add(a.slice(0, 0, 3), Tensor::scalar(1e-6, DType::Float64)));
  const Tensor d = emd::pairwise_distances(a, b);
  const std::vector<double> av = a.to_vector<double>(), bv = b.to_vector<double>(), dv = d.to_vector<double>();
  for (int64_t i = 0; i < 20; ++i)
    for (int64_t j = 0; j < 15; ++j) {
      double s = 0;
      for (int64_t k = 0; k < 64; ++k) s += (av[i * 64 + k] - bv[j * 64 + k]) * (av[i * 64 + k] - bv[j * 64 + k]);
      EXPECT_NEAR(dv[i * 15 + j], std::sqrt(s), 1e-12 * std::max(1.0, std::sqrt(s))) << i << "," << j;
    }
  EXPECT_NEAR(dv[0], 8e-6, 1e-12);  // |1e-6 * ones(64)| = 8e-6
  EXPECT_THROW(emd::pairwise_distances(a, testing::randn_t({3, 5}, 3)), Error);
}

// The CUDA distances (cuBLAS dgemm and the combining kernel) are the CPU's: ordinary features
// (float32 and float64), near-duplicates (the exact-difference fallback) and features whose
// squares overflow (differences taken where the norms are infinite).
TEST(GroundDistance, TheGpuGivesTheCpusDistancesOnTheGpu) {
  FGVC_REQUIRE_CUDA();
  Tensor a = kernels::binary(kernels::BinaryOp::Mul, testing::randn_t({70, 96}, 11, DType::Float64), 100.0);
  Tensor b = kernels::binary(kernels::BinaryOp::Mul, testing::randn_t({45, 96}, 12, DType::Float64), 100.0);
  b.slice(0, 0, 5).copy_(kernels::add(a.slice(0, 10, 15), Tensor::scalar(1e-6, DType::Float64)));
  // Every feature near 2e153: squared norms overflow (inf - inf in the GEMM form), while the
  // differences (about 1e150) and the distances stay finite.
  const auto huge = [](uint64_t seed, int64_t rows) {
    return kernels::add(kernels::binary(kernels::BinaryOp::Mul, testing::randn_t({rows, 96}, seed, DType::Float64), 1e150),
                        Tensor::scalar(2e153, DType::Float64));
  };
  const Tensor huge_a = huge(13, 70), huge_b = huge(14, 45);
  const std::vector<std::pair<Tensor, Tensor>> cases = {
      {a, b}, {a.to(DType::Float32), b.to(DType::Float32)}, {huge_a, huge_b}};
  for (size_t c = 0; c < cases.size(); ++c) {
    const auto& [x, y] = cases[c];
    const std::vector<double> want = emd::pairwise_distances(x, y).to_vector<double>();
    const Tensor got_t = emd::pairwise_distances(x.cuda(), y.cuda());
    ASSERT_TRUE(got_t.device().is_cuda()) << c;
    const std::vector<double> got = got_t.to_vector<double>();
    ASSERT_EQ(got.size(), want.size()) << c;
    for (size_t k = 0; k < want.size(); ++k) {
      ASSERT_TRUE(std::isfinite(want[k]) && std::isfinite(got[k])) << "case " << c << " element " << k;
      EXPECT_NEAR(got[k], want[k], 1e-12 * std::max(want[k], 1e-300)) << "case " << c << " element " << k;
    }
  }
}

// float64 features near 1e-180: their squares would underflow to nothing. Scaled by a power
// of two inside, they give exactly the distances of the same features at ordinary size,
// scaled by that power.
TEST(GroundDistance, TinyFloat64FeaturesKeepTheirDistances) {
  const Tensor a = testing::randn_t({40, 32}, 7, DType::Float64), b = testing::randn_t({9, 32}, 8, DType::Float64);
  const double tiny = std::ldexp(1.0, -600);
  const Tensor d = emd::pairwise_distances(kernels::binary(kernels::BinaryOp::Mul, a, tiny),
                                           kernels::binary(kernels::BinaryOp::Mul, b, tiny));
  const std::vector<double> want = emd::pairwise_distances(a, b).to_vector<double>(), got = d.to_vector<double>();
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i] * tiny) << i;
  EXPECT_GT(got[0], 0.0);
}

// Enough rows for several blocks over the threads; float32 features are widened block by
// block, so both dtypes must give the exact distances of the same (float32) values.
TEST(GroundDistance, BlocksOfFloat32AndFloat64RowsAgree) {
  const Tensor a32 = testing::randn_t({300, 256}, 4), b32 = testing::randn_t({70, 256}, 5);
  const Tensor d32 = emd::pairwise_distances(a32, b32);
  const Tensor d64 = emd::pairwise_distances(a32.to(DType::Float64), b32.to(DType::Float64));
  ASSERT_EQ(d32.dtype(), DType::Float64);
  const std::vector<float> av = a32.to_vector<float>(), bv = b32.to_vector<float>();
  const std::vector<double> x = d32.to_vector<double>(), y = d64.to_vector<double>();
  for (int64_t i = 0; i < 300; ++i)
    for (int64_t j = 0; j < 70; ++j) {
      double s = 0;
      for (int64_t k = 0; k < 256; ++k) {
        const double diff = double(av[i * 256 + k]) - double(bv[j * 256 + k]);
        s += diff * diff;
      }
      ASSERT_NEAR(x[i * 70 + j], std::sqrt(s), 1e-12 * std::sqrt(s)) << i << "," << j;
      ASSERT_EQ(x[i * 70 + j], y[i * 70 + j]) << i << "," << j;
    }
}

class DomainFiles : public ::testing::Test {
 protected:
  std::string dir = ::testing::TempDir();
  emd::Domain make(int64_t m, int64_t d, uint64_t seed) {
    emd::Domain dom;
    dom.features = testing::randn_t({m, d}, seed);
    for (int64_t i = 0; i < m; ++i) {
      dom.counts.push_back(static_cast<double>(1 + (i * 31) % 17));
      dom.classes.push_back("class " + std::to_string(seed) + "/" + std::to_string(i));
    }
    return dom;
  }
};

TEST_F(DomainFiles, RoundTripAndSimilarity) {
  const emd::Domain s = make(30, 16, 1), t = make(12, 16, 2);
  emd::save_domain(dir + "/s.safetensors", s, "resnet50", "pool");
  emd::save_domain(dir + "/t.safetensors", t);
  const emd::Domain s2 = emd::load_domain(dir + "/s.safetensors"), t2 = emd::load_domain(dir + "/t.safetensors");
  EXPECT_EQ(s2.classes, s.classes);
  EXPECT_EQ(s2.counts, s.counts);
  EXPECT_TRUE(testing::all_close(s2.features, s.features, 0, 0));
  EXPECT_EQ(t2.classes, t.classes);
  EXPECT_EQ(t2.counts, t.counts);
  EXPECT_TRUE(testing::all_close(t2.features, t.features, 0, 0));
  // The file as SPEC section 5 has it: features F32 [m, d], counts I64 [m], and the metadata.
  const SafetensorsFile raw = read_safetensors(dir + "/s.safetensors");
  EXPECT_EQ(raw.tensors.at("features").dtype(), DType::Float32);
  EXPECT_EQ(raw.tensors.at("features").shape(), (Shape{30, 16}));
  EXPECT_EQ(raw.tensors.at("counts").dtype(), DType::Int64);
  EXPECT_EQ(raw.tensors.at("counts").shape(), (Shape{30}));
  EXPECT_EQ(raw.metadata.at("model"), "resnet50");
  EXPECT_EQ(raw.metadata.at("layer"), "pool");
  EXPECT_EQ(nlohmann::json::parse(raw.metadata.at("classes")).get<std::vector<std::string>>(), s.classes);
  const emd::Similarity sim = emd::domain_similarity(s2, t2, 0.01);
  EXPECT_GT(sim.emd, 0);
  EXPECT_NEAR(sim.similarity, std::exp(-0.01 * sim.emd), 1e-15);
  EXPECT_NEAR(emd::domain_similarity(s2, s2).emd, 0.0, 1e-12);  // a domain is at distance 0 from itself
}

// Several targets on the GPU in one launch, their distances priced where cuBLAS left them
// (one target with a class of count 0, whose costs are copied instead): the CPU's answers.
TEST_F(DomainFiles, SimilaritiesOnTheGpuAreTheCpus) {
  FGVC_REQUIRE_CUDA();
  const emd::Domain s = make(300, 32, 11);
  std::vector<emd::Domain> targets{make(40, 32, 12), make(75, 32, 13), make(20, 32, 14)};
  targets[1].counts[4] = 0;
  const std::vector<emd::Similarity> cpu = emd::domain_similarities(s, targets, 0.01, Device::cpu());
  const std::vector<emd::Similarity> gpu = emd::domain_similarities(s, targets, 0.01, Device::cuda(0));
  ASSERT_EQ(gpu.size(), targets.size());
  for (size_t q = 0; q < targets.size(); ++q) EXPECT_NEAR(gpu[q].emd, cpu[q].emd, 1e-9 * cpu[q].emd) << "target " << q;
  // By rows: passes on the GPU over the distances where they were computed (target 1, with a
  // class of count 0, over a smaller copy), pivots on the host.
  emd::Options rows;
  rows.pricing = emd::Pricing::Rows;
  const std::vector<emd::Similarity> by_rows = emd::domain_similarities(s, targets, 0.01, Device::cuda(0), rows);
  ASSERT_EQ(by_rows.size(), targets.size());
  for (size_t q = 0; q < targets.size(); ++q)
    EXPECT_NEAR(by_rows[q].emd, cpu[q].emd, 1e-9 * cpu[q].emd) << "target " << q << " by rows";
}

// Domains made in memory (not through load_domain) are checked as files are: a NaN feature
// would otherwise be a zero distance and a finite, wrong EMD.
TEST_F(DomainFiles, DomainsMadeInMemoryAreCheckedToo) {
  const emd::Domain s = make(6, 4, 11), t = make(3, 4, 12);
  auto error_of = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  for (const double bad : {std::nan(""), std::numeric_limits<double>::infinity()}) {
    emd::Domain nan_target = t;
    nan_target.name = "in memory";
    nan_target.features = t.features.clone();
    nan_target.features.select(0, 1).select(0, 2).fill_(bad);
    const std::string what = error_of([&] { emd::domain_similarity(s, nan_target); });
    EXPECT_NE(what.find("in memory: feature 2 of class 1"), std::string::npos) << what;
    const std::string selecting = error_of([&] { emd::select_source_classes(s, {nan_target}, {1}); });
    EXPECT_NE(selecting.find("in memory: feature 2 of class 1"), std::string::npos) << selecting;
  }
  EXPECT_TRUE(std::isnan(emd::pairwise_distances(s.features, [&] {
                            Tensor f = t.features.clone();
                            f.select(0, 0).select(0, 0).fill_(std::nan(""));
                            return f;
                          }()).to_vector<double>()[0]));
  emd::Domain short_names = s;
  short_names.classes.resize(1);
  EXPECT_NE(error_of([&] { emd::select_source_classes(short_names, {t}, {3}); }).find("1 class names for 6 classes"),
            std::string::npos);
  EXPECT_NE(error_of([&] { emd::domain_similarity(s, t, -1.0); }).find("gamma -1 must be finite and not negative"),
            std::string::npos);
  EXPECT_NE(error_of([&] { emd::select_source_classes(s, {t}, {-1}); }).find("k = -1 for target  is negative"),
            std::string::npos);
  emd::Domain fractional = s;
  fractional.counts[2] = 1.5;  // a weight, fine in memory; a file holds whole image counts
  EXPECT_GT(emd::domain_similarity(fractional, t).emd, 0.0);
  EXPECT_NE(error_of([&] { emd::save_domain(dir + "/fractional.safetensors", fractional); })
                .find("class 2 ('class 11/2') has count 1.5, not a whole number of images"),
            std::string::npos);
}

// Several targets: a source class that two select is reported against the nearer one.
TEST_F(DomainFiles, ASourceClassTwoTargetsSelectGoesToTheNearer) {
  emd::Domain s = make(8, 4, 21), near = make(2, 4, 22), far = make(2, 4, 23);
  near.name = "near";
  far.name = "far";
  near.counts = {1, 1};
  far.counts = {1, 1};
  // Source class 5 halfway between near's two classes, and far's two classes around it
  // farther out: every point on one line, along feature 0.
  for (emd::Domain* d : {&s, &near, &far}) d->features.fill_(0.0);
  for (int64_t i = 0; i < 8; ++i) s.features.select(0, i).select(0, 0).fill_(100.0 + 10.0 * i);
  s.features.select(0, 5).select(0, 0).fill_(0.0);
  near.features.select(0, 0).select(0, 0).fill_(-1.0);
  near.features.select(0, 1).select(0, 0).fill_(1.0);
  far.features.select(0, 0).select(0, 0).fill_(-3.0);
  far.features.select(0, 1).select(0, 0).fill_(3.0);
  for (const auto& order : {std::vector<emd::Domain>{near, far}, std::vector<emd::Domain>{far, near}}) {
    const auto sel = emd::select_source_classes(s, order, {1, 1});
    ASSERT_EQ(sel.size(), 1u);
    EXPECT_EQ(sel[0].index, 5);
    EXPECT_EQ(sel[0].target, "near");
    EXPECT_DOUBLE_EQ(sel[0].emd, 1.0);
    EXPECT_DOUBLE_EQ(sel[0].similarity, std::exp(-0.01));
  }
}

TEST_F(DomainFiles, SelectionPicksTheClosestSourceClasses) {
  emd::Domain t = make(3, 4, 5);
  emd::Domain s = make(10, 4, 6);
  // Source classes 7 and 2 sit on the target's classes; 7 on the heaviest.
  t.counts = {1, 1, 10};
  s.features.select(0, 7).copy_(t.features.select(0, 2));
  s.features.select(0, 2).copy_(t.features.select(0, 0));
  t.name = "target";
  const auto sel = emd::select_source_classes(s, {t}, {2});
  ASSERT_EQ(sel.size(), 2u);
  EXPECT_EQ(sel[0].index, 7);
  EXPECT_EQ(sel[0].target, "target");
  EXPECT_GE(sel[0].similarity, sel[1].similarity);
  // Each EMD is the closed form for one source class, sum_j w_j ||s_i - t_j||, and no class
  // left out is closer than the last one taken.
  auto closed_form = [&](int64_t i) {
    const std::vector<float> sf = s.features.contiguous().to_vector<float>(), tf = t.features.contiguous().to_vector<float>();
    double e = 0;
    for (int64_t j = 0; j < 3; ++j) {
      double sq = 0;
      for (int64_t c = 0; c < 4; ++c) sq += (double(sf[i * 4 + c]) - tf[j * 4 + c]) * (double(sf[i * 4 + c]) - tf[j * 4 + c]);
      e += t.counts[j] / 12.0 * std::sqrt(sq);
    }
    return e;
  };
  for (const auto& x : sel) {
    EXPECT_NEAR(x.emd, closed_form(x.index), 1e-12 * closed_form(x.index)) << x.index;
    EXPECT_NEAR(x.similarity, std::exp(-0.01 * x.emd), 1e-15) << x.index;
  }
  for (int64_t i = 0; i < 10; ++i) {
    if (i == sel[0].index || i == sel[1].index) continue;
    EXPECT_GE(closed_form(i), sel[1].emd) << i;
  }
  // The ranking is by the EMD, so a gamma at which every similarity rounds to 0 picks the
  // same classes in the same order.
  const auto huge_gamma = emd::select_source_classes(s, {t}, {2}, 1e6);
  ASSERT_EQ(huge_gamma.size(), 2u);
  EXPECT_EQ(huge_gamma[0].similarity, 0.0);
  EXPECT_EQ(huge_gamma[0].index, sel[0].index);
  EXPECT_EQ(huge_gamma[1].index, sel[1].index);
  EXPECT_LT(huge_gamma[0].emd, huge_gamma[1].emd);
  // A class without images (count 0) is never selected, however close its (zero) mean.
  emd::Domain empty_class = s;
  empty_class.counts[7] = 0;
  for (const auto& x : emd::select_source_classes(empty_class, {t}, {3})) EXPECT_NE(x.index, 7);
  // Asking for every class, that one included, is an error (it would quietly give fewer).
  const int64_t all = empty_class.features.size(0);
  EXPECT_EQ(emd::select_source_classes(empty_class, {t}, {all - 1}).size(), static_cast<size_t>(all - 1));
  EXPECT_THROW(emd::select_source_classes(empty_class, {t}, {all}), Error);
  // Union over two targets: each class once.
  emd::Domain same = t;
  same.name = "same";
  EXPECT_EQ(emd::select_source_classes(s, {t, same}, {2, 3}).size(), 3u);
  // Two targets far apart: each picks its own classes, and each class records its target.
  emd::Domain t2 = make(2, 4, 9);
  std::vector<float> shifted = t2.features.to_vector<float>();
  for (float& v : shifted) v += 100.0f;
  t2.features = Tensor::from_vector(shifted, {2, 4});
  t2.name = "far";
  emd::Domain s2 = s;
  s2.features = s.features.clone();
  s2.features.select(0, 4).copy_(t2.features.select(0, 0));
  s2.features.select(0, 5).copy_(t2.features.select(0, 1));
  const auto both = emd::select_source_classes(s2, {t, t2}, {2, 2});
  ASSERT_EQ(both.size(), 4u);
  std::map<int64_t, std::string> picked;
  for (const auto& x : both) picked[x.index] = x.target;
  EXPECT_EQ(picked.at(7), "target");
  EXPECT_EQ(picked.at(4), "far");
  EXPECT_EQ(picked.at(5), "far");
  EXPECT_THROW(emd::select_source_classes(s, {t}, {11}), Error);
}

TEST_F(DomainFiles, BadFilesAreClearErrors) {
  auto expect_error = [](const std::string& path, const std::string& part) {
    try {
      emd::load_domain(path);
      ADD_FAILURE() << "no error for " << path;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  };
  { std::ofstream(dir + "/garbage.safetensors") << "this is not a safetensors file at all"; }
  expect_error(dir + "/garbage.safetensors", "header length");
  expect_error(dir + "/missing.safetensors", "cannot open");
  write_safetensors(dir + "/nocounts.safetensors", {{"features", testing::randn_t({3, 2}, 1)}});
  expect_error(dir + "/nocounts.safetensors", "counts");
  emd::Domain d = make(3, 2, 1);
  d.features.select(0, 1).fill_(NAN);
  write_safetensors(dir + "/nan.safetensors",
                    {{"features", d.features}, {"counts", Tensor::from_vector(std::vector<int64_t>{1, 2, 3}, {3})}});
  expect_error(dir + "/nan.safetensors", "nan");
  write_safetensors(dir + "/neg.safetensors", {{"features", testing::randn_t({3, 2}, 1)},
                                               {"counts", Tensor::from_vector(std::vector<int64_t>{1, -2, 3}, {3})}});
  expect_error(dir + "/neg.safetensors", "count -2");
  write_safetensors(dir + "/zero.safetensors", {{"features", testing::randn_t({2, 2}, 1)},
                                                {"counts", Tensor::from_vector(std::vector<int64_t>{0, 0}, {2})}});
  expect_error(dir + "/zero.safetensors", "all class counts are zero");
  write_safetensors(dir + "/nofeatures.safetensors", {{"counts", Tensor::from_vector(std::vector<int64_t>{1, 2}, {2})}});
  expect_error(dir + "/nofeatures.safetensors", "no 'features' tensor");
  {  // counts as I32 (numpy's or torch's int32) and features in 8-bit floats: named with their types
    const auto raw = [&](const std::string& name, const std::string& features_type, const std::string& features_bytes) {
      const std::string header = R"({"features":{"dtype":")" + features_type + R"(","shape":[2,2],"data_offsets":[0,)" +
                                 std::to_string(features_bytes.size()) + R"(]},"counts":{"dtype":"I32","shape":[2],)" +
                                 R"("data_offsets":[)" + std::to_string(features_bytes.size()) + "," +
                                 std::to_string(features_bytes.size() + 8) + "]}}";
      std::ofstream f(dir + "/" + name, std::ios::binary);
      for (int i = 0; i < 8; ++i) f.put(static_cast<char>((header.size() >> (8 * i)) & 0xFF));
      const int32_t counts[2] = {3, 4};
      f << header << features_bytes;
      f.write(reinterpret_cast<const char*>(counts), sizeof counts);
      return dir + "/" + name;
    };
    const float features[4] = {0.5f, -1.0f, 2.0f, 0.25f};
    expect_error(raw("i32.safetensors", "F32", std::string(reinterpret_cast<const char*>(features), 16)),
                 "counts must be I64 [m], got I32");
    expect_error(raw("f8.safetensors", "F8_E4M3", std::string(4, '\x38')), "features must be F32 or F64 [m, d], got F8_E4M3");
  }
  write_safetensors(dir + "/empty.safetensors",
                    {{"features", Tensor::zeros({0, 4})}, {"counts", Tensor::zeros({0}, DType::Int64)}});
  expect_error(dir + "/empty.safetensors", "empty domain");
  emd::Domain inf = make(3, 2, 1);
  inf.features.select(0, 2).fill_(-INFINITY);
  write_safetensors(dir + "/inf.safetensors",
                    {{"features", inf.features}, {"counts", Tensor::from_vector(std::vector<int64_t>{1, 2, 3}, {3})}});
  expect_error(dir + "/inf.safetensors", "of class 2");
  EXPECT_THROW(emd::domain_similarity(make(3, 4, 1), make(3, 5, 2)), Error);
  // Class names are fields of fgvc-select's lines: not empty, not repeated, no tab.
  const auto named = [&](const std::string& file, const std::string& classes_json) {
    write_safetensors(dir + "/" + file,
                      {{"features", testing::randn_t({2, 2}, 1)},
                       {"counts", Tensor::from_vector(std::vector<int64_t>{1, 2}, {2})}},
                      {{"classes", classes_json}});
    return dir + "/" + file;
  };
  expect_error(named("dup.safetensors", R"(["a", "a"])"), "classes 0 and 1 are both named 'a'");
  expect_error(named("blank.safetensors", R"(["a", ""])"), "class 1 has an empty name");
  expect_error(named("tab.safetensors", R"(["a", "b\tc"])"), "tab");
  // Features whose squared distances overflow float64 (they would have come out as 0).
  write_safetensors(dir + "/huge.safetensors",
                    {{"features", Tensor::from_vector(std::vector<double>{1e200, 0, 1.5e200, 0}, {2, 2})},
                     {"counts", Tensor::from_vector(std::vector<int64_t>{1, 2}, {2})}});
  expect_error(dir + "/huge.safetensors", "beyond 1e150");
  // The distances themselves: where the norms overflow (inf - inf), the differences.
  const Tensor big_a = Tensor::from_vector(std::vector<double>{1e154, 0}, {1, 2});
  const Tensor big_b = Tensor::from_vector(std::vector<double>{1.5e154, 0}, {1, 2});
  EXPECT_NEAR(emd::pairwise_distances(big_a, big_b).to_vector<double>()[0], 5e153, 1e140);
}

// The finiteness check counts in blocks, on several threads above 4M values: a bad value is
// found wherever it lies (the last value, the first of a block, the middle of one), in either
// type, and named by its class and feature.
TEST_F(DomainFiles, ABadValueIsFoundAnywhereInALargeDomain) {
  const int64_t m = 2100, d = 2048;  // 4.3M values: the threaded count
  for (const DType type : {DType::Float32, DType::Float64}) {
    emd::Domain dom = make(m, d, 7);
    dom.features = dom.features.to(type);
    EXPECT_NO_THROW(emd::validate_domain(dom));
    for (const int64_t at : {m * d - 1, int64_t(1) << 14, 3 * (int64_t(1) << 20) + 12345}) {
      emd::Domain bad = dom;
      bad.features = dom.features.clone();
      const double value = type == DType::Float32 ? static_cast<double>(NAN) : 1e151;
      bad.features.view({m * d}).slice(0, at, at + 1).fill_(value);
      try {
        emd::validate_domain(bad);
        ADD_FAILURE() << "no error for a bad value at " << at;
      } catch (const Error& e) {
        const std::string expected = "feature " + std::to_string(at % d) + " of class " + std::to_string(at / d) + " (";
        EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace fgvc
