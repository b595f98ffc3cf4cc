// fgvc-similarity: the EMD between two domain files and the paper's domain similarity.
//   fgvc-similarity --source imagenet.safetensors --target cub200.safetensors [--gamma 0.01]
#include <cstdio>

#include "apps/app.h"
#include "emd/domain.h"

int main(int argc, char** argv) {
  std::string source, target;
  double gamma = 0.01;
  return fgvc::app::run(
      "fgvc-similarity", "Domain similarity exp(-gamma * EMD) between the class means of two domain files", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--source", source, "source domain (.safetensors: features, counts)")->required();
        cli.add_option("--target", target, "target domain (.safetensors: features, counts)")->required();
        cli.add_option("--gamma", gamma, "similarity scale (default 0.01)")->check(CLI::PositiveNumber);
      },
      [&](const fgvc::app::Common& common) {
        const fgvc::Device device = common.resolved_device();
        const fgvc::emd::Domain s = fgvc::emd::load_domain(source), t = fgvc::emd::load_domain(target);
        const fgvc::emd::Similarity r = fgvc::emd::domain_similarity(s, t, gamma, device);
        if (!common.json) {
          std::printf("source      %s (%lld classes)\n", source.c_str(), static_cast<long long>(s.features.size(0)));
          std::printf("target      %s (%lld classes)\n", target.c_str(), static_cast<long long>(t.features.size(0)));
          std::printf("emd         %.12g\n", r.emd);
          std::printf("similarity  %.12g  (gamma %g)\n", r.similarity, gamma);
          std::printf("iterations  %lld\n", static_cast<long long>(r.iterations));
          std::printf("seconds     %.4f  (solve %.4f)\n", r.seconds, r.solve_seconds);
        }
        return nlohmann::json{{"emd", r.emd},       {"similarity", r.similarity}, {"iterations", r.iterations},
                              {"seconds", r.seconds}, {"solve_seconds", r.solve_seconds}, {"gamma", gamma},
                              {"device", device.str()}};
      });
}
