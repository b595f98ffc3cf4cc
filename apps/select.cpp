// fgvc-select: greedy selection of the source classes most similar to one or more target
// domains (the paper's section 4.2), written as class<TAB>similarity<TAB>target lines.
//   fgvc-select --source inat.safetensors --target cub.safetensors --target cars.safetensors
//               --top-k 200 [--per-target-k 100,50] --out classes.txt
#include <algorithm>
#include <cstdio>
#include <sstream>

#include "apps/app.h"
#include "tensor/atomic_file.h"
#include "emd/domain.h"

int main(int argc, char** argv) {
  std::string source, out;
  std::vector<std::string> targets;
  std::vector<int64_t> per_target;
  std::string per_target_text;
  CLI::Option* per_target_option = nullptr;
  int64_t top_k = -1;
  double gamma = 0.01;
  return fgvc::app::run(
      "fgvc-select", "Select the source classes most similar to the target domain(s)", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--source", source, "source domain (.safetensors)")->required()->check(fgvc::app::NonEmptyPath);
        cli.add_option("--target", targets, "target domain(s) (.safetensors); repeat for several")->required()->allow_extra_args(false)->check(fgvc::app::NonEmptyPath);
        cli.add_option("--top-k", top_k, "classes selected per target")->check(fgvc::app::CountOrZero);
        per_target_option = cli.add_option("--per-target-k", per_target_text,
                       "k for each target, in --target order (K1,K2,...); overrides --top-k");
        cli.add_option("--out", out, "output file: class<TAB>similarity<TAB>target per line")->required()->check(fgvc::app::OutputFile);
        cli.add_option("--gamma", gamma, "similarity scale (default 0.01)")->check(fgvc::app::Positive);
      },
      [&](const fgvc::app::Common& common) {
        // Each comma-separated field a count: an empty one (2,,3) is a typo, not a value less.
        if (per_target_option->count() > 0) {
          std::string rest = per_target_text + ",";
          for (size_t at; (at = rest.find(',')) != std::string::npos; rest.erase(0, at + 1)) {
            std::string field = rest.substr(0, at);
            const std::string problem = fgvc::app::CountOrZero(field);
            if (!problem.empty())
              throw fgvc::app::UsageError("--per-target-k " + per_target_text + ": " +
                                          (field.empty() ? std::string("an empty value") : problem));
            per_target.push_back(std::stoll(field));
          }
        }
        const bool per_target_given = !per_target.empty();
        if (per_target.empty()) {
          if (top_k < 0) throw fgvc::app::UsageError("give --top-k or --per-target-k");
          per_target.assign(targets.size(), top_k);
        } else if (per_target.size() != targets.size()) {
          throw fgvc::app::UsageError("--per-target-k has " + std::to_string(per_target.size()) + " values for " +
                                      std::to_string(targets.size()) + " targets");
        }
        // k = 0 for one target of several is a union that leaves it out; k = 0 everywhere writes
        // an empty list, which a later fgvc-subset would take as "no classes": refused here.
        if (std::all_of(per_target.begin(), per_target.end(), [](int64_t k) { return k == 0; }))
          throw fgvc::app::UsageError(std::string(per_target_given ? "--per-target-k" : "--top-k") +
                                      ": every k is 0, so nothing would be selected");
        const fgvc::Device device = common.resolved_device();
        for (const std::string& t : targets)  // it is the third field of every line written
          if (t.find_first_of("\t\r\n") != std::string::npos)
            throw fgvc::app::UsageError("--target: '" + t + "' holds a tab or a line break");
        const fgvc::emd::Domain s = fgvc::prefix_errors("--source", [&] { return fgvc::emd::load_domain(source); });
        // Classes without images are never selected (sim({(s_i, 1)}, T) needs the class).
        const int64_t m = std::count_if(s.counts.begin(), s.counts.end(), [](double c) { return c > 0; });
        for (size_t t = 0; t < per_target.size(); ++t)
          if (per_target[t] > m)
            throw fgvc::app::UsageError(std::string(per_target_given ? "--per-target-k" : "--top-k") + ": k = " +
                                        std::to_string(per_target[t]) + " for " + targets[t] + ", but the source " +
                                        source + " has " + std::to_string(m) + " classes with images");
        std::vector<fgvc::emd::Domain> ts;
        for (const std::string& t : targets) ts.push_back(fgvc::prefix_errors("--target", [&] { return fgvc::emd::load_domain(t); }));
        std::vector<std::pair<std::string, std::string>> inputs = {{"--source", source}};
        for (const std::string& t : targets) inputs.push_back({"--target", t});
        fgvc::app::prepare_output_file("--out", out, inputs);
        const std::vector<fgvc::emd::Selected> sel = fgvc::emd::select_source_classes(s, ts, per_target, gamma, device);
        std::ostringstream f;
        f.precision(12);
        // (load_domain refuses class names with a tab or a line break; --target was checked above.)
        for (const auto& x : sel) f << x.name << '\t' << x.similarity << '\t' << x.target << '\n';
        fgvc::write_file_atomic(out, f.str());
        if (!common.json) std::printf("selected %zu source classes into %s\n", sel.size(), out.c_str());
        nlohmann::json classes = nlohmann::json::array();
        for (const auto& x : sel) classes.push_back({{"class", x.name}, {"similarity", x.similarity}, {"emd", x.emd}, {"target", x.target}});
        return nlohmann::json{{"selected", classes.size()}, {"classes", classes}, {"out", out}};
      });
}
