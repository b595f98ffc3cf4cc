// fgvc-similarity: the EMD between two domain files and the paper's domain similarity.
//   fgvc-similarity --source imagenet.safetensors --target cub200.safetensors [--gamma 0.01]
// Several --target files: one line each; with --device cuda they are solved in one batched
// launch of the GPU solver (with --pricing rows: one after another, passes on the GPU).
#include <chrono>
#include <cstdio>

#include "apps/app.h"
#include "emd/domain.h"

int main(int argc, char** argv) {
  std::string source;
  std::vector<std::string> targets;
  double gamma = 0.01;
  std::string pricing = "block";
  return fgvc::app::run(
      "fgvc-similarity", "Domain similarity exp(-gamma * EMD) between the class means of two domain files", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--source", source, "source domain (.safetensors: features, counts)")->required()->check(fgvc::app::NonEmptyPath);
        cli.add_option("--target", targets, "target domain (.safetensors: features, counts); repeat for several")
            ->required()
            ->allow_extra_args(false)  // one file each time: a stray argument is not a target
            ->check(fgvc::app::NonEmptyPath);
        cli.add_option("--gamma", gamma, "similarity scale (default 0.01)")->check(fgvc::app::Positive);
        cli.add_option("--pricing", pricing,
                       "how the solver finds entering cells: block (default) or rows (emd/transport_simplex.h; "
                       "with --device cuda each target is solved by passes on the GPU and pivots on the host, "
                       "not in the batched kernel)")
            ->check(CLI::IsMember({"block", "rows"}));
      },
      [&](const fgvc::app::Common& common) {
        const fgvc::Device device = common.resolved_device();
        const auto t0 = std::chrono::steady_clock::now();  // end to end: load, distances, solve
        const fgvc::emd::Domain s = fgvc::prefix_errors("--source", [&] { return fgvc::emd::load_domain(source); });
        std::vector<fgvc::emd::Domain> t;
        for (const std::string& path : targets) t.push_back(fgvc::prefix_errors("--target", [&] { return fgvc::emd::load_domain(path); }));
        fgvc::emd::Options options;
        options.pricing = pricing == "rows" ? fgvc::emd::Pricing::Rows : fgvc::emd::Pricing::Block;
        const std::vector<fgvc::emd::Similarity> r = fgvc::emd::domain_similarities(s, t, gamma, device, options);
        const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        auto row = [&](size_t q) {
          return nlohmann::json{{"target", targets[q]},        {"emd", r[q].emd},
                                {"similarity", r[q].similarity}, {"iterations", r[q].iterations},
                                {"seconds", r[q].seconds},       {"solve_seconds", r[q].solve_seconds}};
        };
        if (t.size() == 1) {
          if (!common.json) {
            std::printf("source      %s (%lld classes)\n", source.c_str(), static_cast<long long>(s.features.size(0)));
            std::printf("target      %s (%lld classes)\n", targets[0].c_str(),
                        static_cast<long long>(t[0].features.size(0)));
            std::printf("emd         %.12g\n", r[0].emd);
            std::printf("similarity  %.12g  (gamma %g)\n", r[0].similarity, gamma);
            std::printf("iterations  %lld\n", static_cast<long long>(r[0].iterations));
            std::printf("seconds     %.4f  (solve %.4f; %.4f with loading the files)\n", r[0].seconds,
                        r[0].solve_seconds, total);
          }
          nlohmann::json j = row(0);
          j.erase("target");
          j["gamma"] = gamma, j["device"] = device.str(), j["total_seconds"] = total;
          return j;
        }
        nlohmann::json rows = nlohmann::json::array();
        if (!common.json)
          std::printf("source %s (%lld classes), gamma %g\n%-40s %14s %14s %10s\n", source.c_str(),
                      static_cast<long long>(s.features.size(0)), gamma, "target", "emd", "similarity", "iterations");
        for (size_t q = 0; q < t.size(); ++q) {
          if (!common.json)
            std::printf("%-40s %14.9g %14.9g %10lld\n", targets[q].c_str(), r[q].emd, r[q].similarity,
                        static_cast<long long>(r[q].iterations));
          rows.push_back(row(q));
        }
        if (!common.json)
          std::printf("seconds %.4f for %zu targets (%.4f with loading the files)\n", r[0].seconds, t.size(), total);
        // SPEC's keys with several targets: one value each, in --target order; `targets` has each in full.
        nlohmann::json emd = nlohmann::json::array(), similarity = nlohmann::json::array(),
                       iterations = nlohmann::json::array();
        for (size_t q = 0; q < t.size(); ++q)
          emd.push_back(r[q].emd), similarity.push_back(r[q].similarity), iterations.push_back(r[q].iterations);
        return nlohmann::json{{"emd", emd},       {"similarity", similarity}, {"iterations", iterations},
                              {"targets", rows},  {"gamma", gamma},           {"device", device.str()},
                              {"seconds", r[0].seconds}, {"total_seconds", total}};
      });
}
