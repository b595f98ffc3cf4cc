// The exact EMD solvers on the paper's problem shapes: Gaussian class means (d = 2048),
// Zipf-like class sizes, Euclidean ground distances. For each m x n size: the distances'
// time, then the CPU solver and the GPU solver (at several pricing block sizes) on the same
// cost matrix, with pivots, seconds and the GPU/CPU cost agreement; then the batched mode:
// B targets of n classes against one m-class source in one launch, against the CPU solver
// on a sample of them (per-problem time times B).
//
//   bench_emd [--sizes 1000x200,6089x200] [--batch 64 --batch-size 6089x200] [--device both]
//             [--block-scales 1,4,16] [--cpu-block-scales 1,0.5] [--cpu-sample 8] [--gpu-plans warp,thread]
//             [--json out.json]
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "emd/ground_distance.h"
#include "emd/transport_simplex.h"
#include "fgvc/fgvc.h"

namespace {

using namespace fgvc;
using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::pair<int64_t, int64_t> parse_size(const std::string& s) {
  const auto x = s.find('x');
  if (x == std::string::npos) throw CLI::ValidationError("size", "expected MxN, got " + s);
  return {std::stoll(s.substr(0, x)), std::stoll(s.substr(x + 1))};
}

// Class means: a shared mean plus per-class Gaussian offsets, as penultimate features
// (non-negative after ReLU in a real network; the distances are what matters here).
Tensor class_means(int64_t classes, int64_t d, uint64_t seed) {
  Generator gen(seed);
  return randn({classes, d}, gen, DType::Float64);
}

std::vector<double> zipf_counts(int64_t classes, uint64_t seed) {
  std::vector<double> c;
  for (int64_t i = 0; i < classes; ++i) c.push_back(std::floor(2000.0 / std::pow(1.0 + i, 0.9)) + 1 + (i * seed) % 3);
  return c;
}

Tensor distances(const Tensor& a, const Tensor& b, bool on_gpu, double* seconds) {
  const auto t0 = Clock::now();
  Tensor d = on_gpu ? emd::pairwise_distances(a.cuda(), b.cuda()).cpu() : emd::pairwise_distances(a, b);
  *seconds = since(t0);
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli("Exact EMD: CPU and GPU solvers side by side");
  std::string sizes = "1000x200,6089x200,5089x555", batch_size = "6089x200", device = "both", json_path,
              block_scales = "1,4,16", cpu_block_scales = "1";
  int batch = 64, cpu_sample = 8;
  int64_t dim = 2048;
  cli.add_option("--sizes", sizes, "single problems, MxN, comma-separated");
  cli.add_option("--batch", batch, "targets in the batched case (0: none)");
  cli.add_option("--batch-size", batch_size, "source x target classes of each batched problem");
  cli.add_option("--cpu-sample", cpu_sample, "batched problems the CPU solves (its time is scaled to --batch)");
  cli.add_option("--dim", dim, "feature dimension (default 2048)");
  cli.add_option("--device", device, "cpu, cuda or both")->check(CLI::IsMember({"cpu", "cuda", "both"}));
  cli.add_option("--block-scales", block_scales, "GPU pricing blocks, as multiples of the default 2 sqrt(m n)");
  cli.add_option("--cpu-block-scales", cpu_block_scales,
                 "CPU pricing blocks, as multiples of the default (the first one is the table's CPU column)");
  std::string gpu_plans = "warp";
  cli.add_option("--gpu-plans", gpu_plans,
                 "who plans each GPU pivot: warp (warp 0, the solver's default), thread (thread 0), or warp,thread");
  std::string pricing = "block";
  cli.add_option("--pricing", pricing,
                 "block (the solvers' default), rows (each pass prices every cell, on the GPU for the GPU solver), "
                 "or block,rows");
  std::string row_candidates = "0";
  cli.add_option("--row-candidates", row_candidates,
                 "pricing by rows: candidates a pass hands the pivots (0: the solvers' defaults, -1: every row's); "
                 "comma-separated, the GPU solver runs each (the CPU the first)");
  cli.add_option("--json", json_path, "also write the rows here");
  CLI11_PARSE(cli, argc, argv);
  const bool cpu = device != "cuda", gpu = device != "cpu";
  if (gpu && !cuda_available()) {
    std::fprintf(stderr, "bench_emd: error: --device %s needs a CUDA device: %s\n", device.c_str(),
                 cuda_unavailable_reason().c_str());
    return 1;
  }
  auto parse_scales = [](const std::string& list) {
    std::vector<double> out;
    std::stringstream ss(list);
    for (std::string s; std::getline(ss, s, ',');) out.push_back(std::stod(s));
    return out;
  };
  const std::vector<double> scales = parse_scales(block_scales), cpu_scales = parse_scales(cpu_block_scales);
  std::vector<std::string> plans;
  {
    std::stringstream ss(gpu_plans);
    for (std::string p; std::getline(ss, p, ',');) {
      if (p != "warp" && p != "thread") {
        std::fprintf(stderr, "bench_emd: error: --gpu-plans takes warp and thread, got '%s'\n", p.c_str());
        return 2;
      }
      plans.push_back(p);
    }
  }
  bool by_blocks = false, by_rows = false;
  {
    std::stringstream ss(pricing);
    for (std::string p; std::getline(ss, p, ',');) {
      if (p != "block" && p != "rows") {
        std::fprintf(stderr, "bench_emd: error: --pricing takes block and rows, got '%s'\n", p.c_str());
        return 2;
      }
      (p == "block" ? by_blocks : by_rows) = true;
    }
  }
  emd::Options rows_options;
  rows_options.pricing = emd::Pricing::Rows;
  std::vector<int64_t> candidate_counts;
  {
    std::stringstream ss(row_candidates);
    for (std::string k; std::getline(ss, k, ',');) {
      try {
        candidate_counts.push_back(std::stoll(k));
      } catch (const std::exception&) {
        std::fprintf(stderr, "bench_emd: error: --row-candidates takes integers, got '%s'\n", k.c_str());
        return 2;
      }
    }
    if (candidate_counts.empty()) candidate_counts.push_back(0);
  }
  rows_options.row_candidates = candidate_counts[0];
  auto scaled_block = [](double scale, int64_t m, int64_t n) {
    return static_cast<int64_t>(scale * std::max(256.0, 2 * std::sqrt(double(m) * n)));  // x the default
  };
  nlohmann::json rows = nlohmann::json::array();
  // GPU answers more than 1e-9 from the CPU's (the bound): counted, and the exit status is 1.
  int disagreements = 0;
  auto check_agreement = [&](const std::string& what, double gpu_cost, double cpu_cost) {
    if (std::fabs(gpu_cost - cpu_cost) <= 1e-9 * std::max(std::fabs(cpu_cost), 1e-12)) return;  // (an optimum of 0 too)
    std::fprintf(stderr, "bench_emd: error: %s: the GPU's cost %.17g is %.2e from the CPU's %.17g\n", what.c_str(),
                 gpu_cost, gpu_cost / cpu_cost - 1, cpu_cost);
    ++disagreements;
  };
  // The JSON is rewritten after every solve (a temporary file renamed over the last), so a run
  // that a time limit cuts short keeps what it finished (scripts/gpu-check.sh relies on this).
  auto save = [&](const nlohmann::json* unfinished_row) {
    if (json_path.empty()) return;
    nlohmann::json all = rows;
    if (unfinished_row) all.push_back(*unfinished_row);
    const std::string tmp = json_path + ".tmp";
    std::ofstream(tmp) << all.dump(1) << "\n";
    std::rename(tmp.c_str(), json_path.c_str());
  };

  std::printf("%-11s %9s | %9s %9s | %-8s %9s %9s | %s\n", "m x n", "dist s", "CPU piv", "CPU s", "GPU blk", "GPU piv",
              "GPU s", "GPU / CPU cost - 1");
  std::stringstream size_list(sizes);
  for (std::string size; std::getline(size_list, size, ',');) {
    const auto [m, n] = parse_size(size);
    const Tensor s = class_means(m, dim, 1), t = class_means(n, dim, 2);
    double dist_s = 0;
    const Tensor cost = distances(s, t, gpu, &dist_s);
    const std::vector<double> a = zipf_counts(m, 3), b = zipf_counts(n, 5);
    nlohmann::json row{{"m", m}, {"n", n}, {"dim", dim}, {"distance_s", dist_s}};
    emd::Result c;
    if (cpu && by_rows) {
      const emd::Result r = emd::solve(cost.data<double>(), m, n, a, b, rows_options);
      std::printf("%-11s   CPU by rows: %lld pivots, %lld passes, %.3f s (start %.3f s, passes %.3f s, the pivots %.3f s)\n",
                  size.c_str(), (long long)r.iterations, (long long)r.pricing_passes, r.seconds, r.start_seconds,
                  r.pass_seconds, r.seconds - r.pass_seconds - r.start_seconds);
      row["cpu_rows"] = {{"pivots", r.iterations}, {"passes", r.pricing_passes}, {"seconds", r.seconds},
                         {"start_seconds", r.start_seconds}, {"pass_seconds", r.pass_seconds}, {"cost", r.cost}};
      if (!by_blocks) c = r;
      save(&row);
    }
    for (size_t k = 0; cpu && by_blocks && k < cpu_scales.size(); ++k) {
      emd::Options o;
      o.block_size = scaled_block(cpu_scales[k], m, n);
      const emd::Result r = emd::solve(cost.data<double>(), m, n, a, b, o);
      if (k == 0) {
        c = r;
        row["cpu"] = {{"pivots", c.iterations}, {"seconds", c.seconds}, {"cost", c.cost}, {"block", o.block_size}};
      } else {
        std::printf("%-11s   CPU block %lld: %lld pivots, %.3f s\n", size.c_str(), (long long)o.block_size,
                    (long long)r.iterations, r.seconds);
        row["cpu_blocks"].push_back({{"block", o.block_size}, {"pivots", r.iterations}, {"seconds", r.seconds}});
      }
      save(&row);
    }
    std::printf("%-11s %9.3f | %9lld %9.3f |", size.c_str(), dist_s, cpu ? (long long)c.iterations : -1LL,
                cpu ? c.seconds : -1.0);
    if (!gpu) std::printf("\n");
    for (size_t k = 0; gpu && by_rows && k < candidate_counts.size(); ++k) {
      emd::Options o = rows_options;
      o.row_candidates = candidate_counts[k] == 0 ? emd::kGpuRowCandidates : candidate_counts[k];  // as solve_cuda resolves it
      const emd::Result g = emd::solve_cuda(cost.data<double>(), m, n, a, b, o);
      if (k > 0) std::printf("%-11s %9s | %9s %9s |", "", "", "", "");
      std::printf(" %-8s %9lld %9.3f | %.2e  (by rows, %lld candidates: start and upload %.3f s; %lld passes, %.3f s"
                  " with their round trips, %.3f s of them on the GPU; the host's pivots %.3f s)\n",
                  "rows", (long long)g.iterations, g.seconds, cpu ? g.cost / c.cost - 1 : NAN,
                  (long long)o.row_candidates, g.start_seconds, (long long)g.pricing_passes, g.pass_seconds,
                  g.gpu_kernel_seconds, g.seconds - g.pass_seconds - g.start_seconds);
      if (cpu) check_agreement(size + " by rows", g.cost, c.cost);
      row["gpu"].push_back({{"pricing", "rows"}, {"candidates", o.row_candidates}, {"pivots", g.iterations},
                            {"passes", g.pricing_passes}, {"seconds", g.seconds}, {"start_seconds", g.start_seconds},
                            {"pass_seconds", g.pass_seconds}, {"cost", g.cost},
                            {"kernel_seconds", g.gpu_kernel_seconds}});
      save(&row);
    }
    for (size_t run = 0; gpu && by_blocks && run < scales.size() * plans.size(); ++run) {
      const size_t k = run % scales.size();
      const std::string& plan = plans[run / scales.size()];
      emd::Options o;
      o.block_size = scaled_block(scales[k], m, n);
      o.gpu_one_thread_plan = plan == "thread";
      const emd::Result g = emd::solve_cuda(cost.data<double>(), m, n, a, b, o);
      const double agree = cpu ? g.cost / c.cost - 1 : NAN;
      if (cpu) check_agreement(size + " block " + std::to_string(o.block_size), g.cost, c.cost);
      if (run > 0 || by_rows) std::printf("%-11s %9s | %9s %9s |", "", "", "", "");
      std::printf(" %-8lld %9lld %9.3f | %.2e", (long long)o.block_size, (long long)g.iterations, g.seconds, agree);
      if (g.gpu_phases.size() == 4)
        std::printf("  (%s plan; kernel %.3f s, %.2f us per pivot: pricing %.0f%%, plan %.0f%%, passes %.0f%%,"
                    " potentials %.0f%%; shared-memory tier %d)",
                    plan.c_str(), g.gpu_kernel_seconds, 1e6 * g.gpu_kernel_seconds / std::max<int64_t>(1, g.iterations),
                    100 * g.gpu_phases[0], 100 * g.gpu_phases[1], 100 * g.gpu_phases[2], 100 * g.gpu_phases[3],
                    g.gpu_shared_tier);
      std::printf("\n");
      row["gpu"].push_back({{"block", o.block_size}, {"pivots", g.iterations}, {"seconds", g.seconds}, {"cost", g.cost},
                            {"kernel_seconds", g.gpu_kernel_seconds}, {"phases", g.gpu_phases},
                            {"shared_tier", g.gpu_shared_tier}, {"plan", plan}});
      save(&row);
    }
    rows.push_back(row);
    save(nullptr);
    std::fflush(stdout);
  }

  if (batch > 0) {
    const auto [m, n] = parse_size(batch_size);
    const Tensor s = gpu ? class_means(m, dim, 11).cuda() : class_means(m, dim, 11);  // the source goes up once
    const std::vector<double> a = zipf_counts(m, 3);
    std::vector<Tensor> costs, device_costs;  // on the host; on the GPU too, as fgvc-similarity keeps them
    std::vector<std::vector<double>> bs;
    double dist_s = 0;
    for (int q = 0; q < batch; ++q) {
      const Tensor t = class_means(n, dim, 100 + q);
      const auto t0 = Clock::now();
      if (gpu) device_costs.push_back(emd::pairwise_distances(s, t.cuda()));
      costs.push_back(gpu ? device_costs.back().cpu() : emd::pairwise_distances(s, t));
      dist_s += since(t0);
      bs.push_back(zipf_counts(n, 7 + q));
    }
    nlohmann::json row{{"batch", batch}, {"m", m}, {"n", n}, {"distance_s", dist_s}};
    std::printf("\nbatched: %d targets of %lld classes against one source of %lld (distances %.3f s)\n", batch,
                (long long)n, (long long)m, dist_s);
    std::vector<double> cpu_cost;
    if (cpu) {
      const int sample = std::min(cpu_sample, batch);
      double seconds = 0;
      int64_t pivots = 0;
      for (int q = 0; q < sample; ++q) {
        const emd::Result r = emd::solve(costs[q].data<double>(), m, n, a, bs[q]);
        seconds += r.seconds, pivots += r.iterations;
        cpu_cost.push_back(r.cost);
      }
      std::printf("  CPU, one at a time: %.4f s per problem (%lld pivots), %.2f s for %d (from %d solved)\n",
                  seconds / sample, (long long)(pivots / sample), seconds / sample * batch, batch, sample);
      row["cpu"] = {{"seconds_per_problem", seconds / sample}, {"pivots_per_problem", pivots / sample}, {"sample", sample}};
      save(&row);
    }
    if (gpu) {
      std::vector<emd::Problem> problems;
      for (int q = 0; q < batch; ++q)
        problems.push_back({costs[q].data<double>(), m, n, a, bs[q], device_costs[q].data<double>()});
      const std::vector<emd::Result> g = emd::solve_batch_cuda(problems);
      int64_t pivots = 0;
      double worst = 0;
      for (int q = 0; q < batch; ++q) {
        pivots += g[q].iterations;
        if (q < static_cast<int>(cpu_cost.size())) {
          worst = std::max(worst, std::fabs(g[q].cost / cpu_cost[q] - 1));
          check_agreement("batched problem " + std::to_string(q), g[q].cost, cpu_cost[q]);
        }
      }
      std::printf("  GPU, one launch:    %.3f s for %d (kernel %.3f s; %.4f s per problem, %lld pivots each on average)",
                  g[0].seconds, batch, g[0].gpu_kernel_seconds, g[0].seconds / batch, (long long)(pivots / batch));
      if (!cpu_cost.empty()) std::printf("; cost agreement with the CPU %.1e", worst);
      std::printf("\n");
      row["gpu"] = {{"seconds", g[0].seconds}, {"kernel_seconds", g[0].gpu_kernel_seconds},
                    {"pivots_per_problem", pivots / batch}};
    }
    rows.push_back(row);
    save(nullptr);
  }
  save(nullptr);
  if (disagreements > 0) {
    std::fprintf(stderr, "bench_emd: error: %d GPU answers differ from the CPU's by more than 1e-9\n", disagreements);
    return 1;
  }
  return 0;
}
