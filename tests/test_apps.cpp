// The fgvc-* binaries as a user runs them: exit codes (0 success, 2 usage, 1 other), the
// one-line "fgvc-NAME: error: ..." message, and --json output, on domain files written here.
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>

#include "autograd/grad_mode.h"
#include "data/dataset.h"
#include "data/decode.h"
#include "data/loader.h"
#include "emd/domain.h"
#include "emd/ground_distance.h"
#include "nn/models/registry.h"
#include "tensor/safetensors.h"
#include "app_runner.h"
#include "image_files.h"
#include "test_util.h"

namespace fgvc {
namespace {

using testing::last_json_line;
using testing::Outcome;
using testing::test_dir;

Outcome run(const std::string& args) { return testing::run_app(args, test_dir()); }

class Apps : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = test_dir();
    source = dir + "/source.safetensors";
    target = dir + "/target.safetensors";
    target2 = dir + "/target2.safetensors";
    emd::save_domain(source, make(40, 8, 1));
    emd::save_domain(target, make(10, 8, 2));
    emd::save_domain(target2, make(5, 8, 3));
    emd::Domain three = make(3, 8, 4);  // one of its classes has no images: 2 to select from
    three.counts[1] = 0;
    zero_class = dir + "/zero_class.safetensors";
    emd::save_domain(zero_class, three);
  }
  static emd::Domain make(int64_t m, int64_t d, uint64_t seed) {
    emd::Domain dom;
    dom.features = testing::randn_t({m, d}, seed);
    for (int64_t i = 0; i < m; ++i) {
      dom.counts.push_back(static_cast<double>(1 + i % 5));
      dom.classes.push_back("c" + std::to_string(seed) + "_" + std::to_string(i));
    }
    return dom;
  }
  std::string dir, source, target, target2, zero_class;
};

TEST_F(Apps, SimilarityPrintsEmdAndJson) {
  const Outcome r = run("fgvc-similarity --device cpu --source " + source + " --target " + target + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = last_json_line(r.out);
  const double emd_value = j.at("emd");
  const emd::Similarity want = emd::domain_similarity(emd::load_domain(source), emd::load_domain(target));
  EXPECT_NEAR(emd_value, want.emd, 1e-12);
  EXPECT_NEAR(j.at("similarity").get<double>(), std::exp(-0.01 * want.emd), 1e-12);
  EXPECT_EQ(j.at("iterations").get<int64_t>(), want.iterations);
  EXPECT_TRUE(j.contains("seconds"));
  // The same EMD from the parts, not through domain_similarity: the class means' distances
  // and the solver on the class counts (which it normalises).
  const emd::Domain s = emd::load_domain(source), t = emd::load_domain(target);
  const Tensor cost = emd::pairwise_distances(s.features, t.features);
  const emd::Result direct = emd::solve(cost.data<double>(), cost.size(0), cost.size(1), s.counts, t.counts);
  EXPECT_NEAR(emd_value, direct.cost, 1e-12 * direct.cost);
  // Another gamma: its similarity, in the JSON and in the line a user reads.
  const Outcome other = run("fgvc-similarity --device cpu --source " + source + " --target " + target + " --gamma 0.1 --json");
  ASSERT_EQ(other.code, 0) << other.err;
  EXPECT_NEAR(last_json_line(other.out).at("similarity").get<double>(), std::exp(-0.1 * direct.cost), 1e-12);
  const Outcome plain = run("fgvc-similarity --device cpu --source " + source + " --target " + target + " --gamma 0.1");
  ASSERT_EQ(plain.code, 0) << plain.err;
  char shown[64];
  std::snprintf(shown, sizeof shown, "%.4f", std::exp(-0.1 * direct.cost));
  EXPECT_NE(plain.out.find(shown), std::string::npos) << plain.out << " (wanted " << shown << ")";
}

// Pricing by rows on the CPU: the same optimum as block pricing.
TEST_F(Apps, SimilarityPricingByRows) {
  const std::string args = " --device cpu --source " + source + " --target " + target + " --json";
  const Outcome block = run("fgvc-similarity" + args), rows = run("fgvc-similarity --pricing rows" + args);
  ASSERT_EQ(block.code, 0) << block.err;
  ASSERT_EQ(rows.code, 0) << rows.err;
  const double want = last_json_line(block.out).at("emd");
  EXPECT_NEAR(last_json_line(rows.out).at("emd").get<double>(), want, 1e-9 * want);
  EXPECT_EQ(run("fgvc-similarity --pricing diagonal" + args).code, 2);
}

TEST_F(Apps, SimilarityWithSeveralTargets) {
  const Outcome r =
      run("fgvc-similarity --device cpu --source " + source + " --target " + target + " --target " + target2 + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = last_json_line(r.out);
  ASSERT_EQ(j.at("targets").size(), 2u);
  const emd::Domain s = emd::load_domain(source);
  for (int q = 0; q < 2; ++q) {
    const std::string path = q == 0 ? target : target2;
    EXPECT_EQ(j["targets"][q].at("target"), path);
    EXPECT_NEAR(j["targets"][q].at("emd").get<double>(), emd::domain_similarity(s, emd::load_domain(path)).emd, 1e-12);
    // SPEC's keys are there too, one value per target in --target order.
    EXPECT_EQ(j.at("emd")[q], j["targets"][q].at("emd"));
    EXPECT_EQ(j.at("similarity")[q], j["targets"][q].at("similarity"));
    EXPECT_EQ(j.at("iterations")[q], j["targets"][q].at("iterations"));
  }
  EXPECT_TRUE(j.at("seconds").is_number());
}

// The GPU path of fgvc-similarity (cuBLAS distances, the batched GPU solver) gives the CPU's EMD.
TEST_F(Apps, SimilarityOnTheGpuMatchesTheCpu) {
  FGVC_REQUIRE_CUDA();
  const std::string args = " --source " + source + " --target " + target + " --target " + target2 + " --json";
  const Outcome gpu = run("fgvc-similarity --device cuda" + args), cpu = run("fgvc-similarity --device cpu" + args);
  ASSERT_EQ(gpu.code, 0) << gpu.err;
  ASSERT_EQ(cpu.code, 0) << cpu.err;
  const nlohmann::json g = last_json_line(gpu.out), c = last_json_line(cpu.out);
  const Outcome by_rows = run("fgvc-similarity --device cuda --pricing rows" + args);
  ASSERT_EQ(by_rows.code, 0) << by_rows.err;
  const nlohmann::json rows = last_json_line(by_rows.out);
  for (int q = 0; q < 2; ++q) {
    const double want = c["targets"][q].at("emd");
    EXPECT_NEAR(g["targets"][q].at("emd").get<double>(), want, 1e-9 * want) << q;
    EXPECT_NEAR(rows["targets"][q].at("emd").get<double>(), want, 1e-9 * want) << q;
  }
}

TEST_F(Apps, SelectWritesTheClassList) {
  const std::string out = dir + "/classes.txt";
  const Outcome r = run("fgvc-select --device cpu --source " + source + " --target " + target + " --target " + target2 +
                        " --per-target-k 3,2 --out " + out + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  // What the file must hold, computed here from the definitions (SPEC section 7): for each
  // target, EMD({(s_i, 1)}, T) = sum_j w_j ||s_i - t_j|| (the closed form for one source
  // class), its k smallest; the union, each class with its most similar selecting target,
  // ordered by EMD.
  const emd::Domain s = emd::load_domain(source);
  const std::vector<float> sf = s.features.contiguous().to_vector<float>();
  const int64_t d = s.features.size(1);
  const std::vector<std::pair<std::string, int64_t>> targets = {{target, 3}, {target2, 2}};
  std::map<int64_t, std::pair<double, std::string>> want;  // source class -> (EMD, target)
  for (const auto& [path, k] : targets) {
    const emd::Domain t = emd::load_domain(path);
    const std::vector<float> tf = t.features.contiguous().to_vector<float>();
    double total = 0;
    for (double c : t.counts) total += c;
    std::vector<std::pair<double, int64_t>> ranked;
    for (int64_t i = 0; i < s.features.size(0); ++i) {
      double e = 0;
      for (int64_t j = 0; j < t.features.size(0); ++j) {
        double sq = 0;
        for (int64_t c = 0; c < d; ++c) {
          const double diff = double(sf[i * d + c]) - double(tf[j * d + c]);
          sq += diff * diff;
        }
        e += t.counts[j] / total * std::sqrt(sq);
      }
      ranked.push_back({e, i});
    }
    std::sort(ranked.begin(), ranked.end());
    for (int64_t q = 0; q < k; ++q) {
      const auto [e, i] = ranked[q];
      if (!want.count(i) || e < want[i].first) want[i] = {e, path};
    }
  }
  std::vector<std::tuple<double, std::string, std::string>> lines_wanted;  // EMD, class, target
  for (const auto& [i, v] : want) lines_wanted.push_back({v.first, s.classes[i], v.second});
  std::sort(lines_wanted.begin(), lines_wanted.end());
  ASSERT_GE(lines_wanted.size(), 3u);  // the two targets' choices must overlap at most partly to test the union
  std::ifstream f(out);
  std::string line;
  size_t n = 0;
  const nlohmann::json j = last_json_line(r.out);
  while (std::getline(f, line)) {
    ASSERT_LT(n, lines_wanted.size()) << "an extra line: " << line;
    const auto& [e, name, tgt] = lines_wanted[n];
    std::istringstream fields(line);
    std::string got_name, got_sim, got_target;
    std::getline(fields, got_name, '\t');
    std::getline(fields, got_sim, '\t');
    std::getline(fields, got_target);
    EXPECT_EQ(got_name, name) << "line " << n;
    EXPECT_NEAR(std::stod(got_sim), std::exp(-0.01 * e), 1e-11) << "line " << n;
    EXPECT_EQ(got_target, tgt) << "line " << n;
    EXPECT_EQ(j.at("classes")[n].at("class"), name);
    EXPECT_NEAR(j.at("classes")[n].at("emd").get<double>(), e, 1e-12 * e) << "line " << n;
    ++n;
  }
  EXPECT_EQ(n, lines_wanted.size());
  EXPECT_EQ(j.at("selected").get<size_t>(), n);
}

// k = 0 for one target of several leaves that target out of the union (k = 0 everywhere is a
// usage error, in UsageErrorsExitTwo).
TEST_F(Apps, SelectWithKZeroForOneTargetTakesOnlyTheOthers) {
  const std::string out = dir + "/classes_k0.txt";
  const Outcome r = run("fgvc-select --device cpu --source " + source + " --target " + target + " --target " + target2 +
                        " --per-target-k 0,2 --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  std::ifstream f(out);
  std::string line;
  int n = 0;
  for (; std::getline(f, line); ++n) EXPECT_EQ(line.substr(line.rfind('\t') + 1), target2) << line;
  EXPECT_EQ(n, 2);
}

TEST_F(Apps, UsageErrorsExitTwo) {
  for (const std::string& args : std::vector<std::string>{"fgvc-similarity --source " + source, "fgvc-similarity --bogus",
                                 "fgvc-similarity --source a --target b --gamma -1",
                                 "fgvc-select --source " + source + " --target " + target + " --out x.txt",
                                 "fgvc-select --source " + source + " --target " + target +
                                     " --per-target-k 1,2 --out x.txt",
                                 "fgvc-similarity --device tpu --source " + source + " --target " + target,
                                 "fgvc-similarity --source " + source + " --target " + target + " --gamma nan",
                                 "fgvc-similarity --source " + source + " --target " + target + " --gamma 1e-320",
                                 "fgvc-select --source " + source + " --target " + target + " --top-k 1000 --out x.txt",
                                 "fgvc-select --source " + source + " --target " + target + " --top-k 1 --out x.txt --target 'a\tb'",
                                 "fgvc-select --source " + zero_class + " --target " + target + " --top-k 3 --out x.txt",
                                 "fgvc-select --source " + source + " --target " + target +
                                     " --per-target-k -1 --out x.txt",
                                 "fgvc-select --source " + source + " --target " + target + " --target " + target2 +
                                     " --per-target-k 2,,3 --out x.txt",
                                 "fgvc-select --source " + source + " --target " + target + " --target " + target2 +
                                     " --per-target-k 2,3, --out x.txt",
                                 "fgvc-select --source " + source + " --target " + target + " --per-target-k '' --out x.txt",
                                 "fgvc-select --source " + source + " --target " + target + " --top-k 0 --out x.txt",
                                 "fgvc-select --source " + source + " --target " + target + " --target " + target2 +
                                     " --per-target-k 0,0 --out x.txt",
                                 "fgvc-select --source " + source + " --target " + target +
                                     " --top-k 99999999999999999999 --out x.txt",
                                 "fgvc-subset --device gpu --data " + dir + " --max-per-class 2 --out x.txt",
                                 "fgvc-model-info --device cpu --model inception_v3 --input-size 32",
                                 // sizes far beyond any real use: refused by the flag, not a crash
                                 "fgvc-model-info --device cpu --model resnet20 --input-size 1073741824",
                                 "fgvc-model-info --device cpu --model resnet20 --num-classes 4611686018427387904",
                                 "fgvc-loader-bench --device cpu --data " + dir + " --workers 100000",
                                 "fgvc-loader-bench --device cpu --data " + dir + " --crop inception",
                                 "fgvc-model-info --device cpu --model no_such_net",
                                 // a device index or a count that would overflow: a usage error, not an abort
                                 "fgvc-similarity --device cuda:99999999999 --source " + source + " --target " + target,
                                 "fgvc-train --model resnet20 --data missing/ --out run_x --epochs 4611686018427387904",
                                 "fgvc-train --model resnet20 --data missing/ --out run_x --steps 99999999999999999999",
                                 "fgvc-train --model resnet20 --data missing/ --out run_x --epochs 1 --batch-size 9223372036854775807",
                                 // batch norm in training needs two images a process
                                 "fgvc-train --model resnet20 --data missing/ --out run_x --epochs 1 --batch-size 1",
                                 "fgvc-demo --device cpu --batch-size 1",
                                 // fgvc-subset writes a .txt list, the one kind every binary reads back
                                 "fgvc-subset --data " + dir + " --max-per-class 2 --out " + dir,
                                 "fgvc-subset --data " + dir + " --max-per-class 2 --out subset.csv",
                                 // an unknown model is named before any file is read (a missing one here)
                                 "fgvc-eval --model no_such_net --weights missing.safetensors --data missing/",
                                 "fgvc-infer --model no_such_net --weights missing.safetensors --input x --output y",
                                 "fgvc-extract --model no_such_net --weights missing.safetensors --data missing/ --out z",
                                 "fgvc-train --model no_such_net --data missing/ --out run_x",
                                 // empty paths, a folder where a file is written, a file where a folder;
                                 // found as the flags are read, before any work
                                 "fgvc-train --model resnet20 --data '' --out run_x --steps 1",
                                 "fgvc-train --model resnet20 --data missing/ --out '' --steps 1",
                                 "fgvc-train --model resnet20 --data missing/ --out " + source + " --steps 1",
                                 "fgvc-eval --model resnet20 --weights missing.safetensors --data missing/ --per-class " + dir,
                                 "fgvc-eval --model resnet20 --weights missing.safetensors --data missing/ --per-class ''",
                                 "fgvc-infer --model resnet20 --weights missing.safetensors --input x --output " + dir,
                                 "fgvc-loader-bench --data " + dir + " --save-grid " + dir,
                                 "fgvc-loader-bench --data " + dir + " --save-grid grid.jpg",  // a PNG grid
                                 "fgvc-select --source " + source + " --target '' --top-k 1 --out x.txt",
                                 // integers written otherwise: a clear refusal, not "Could not convert"
                                 "fgvc-train --model resnet20 --data missing/ --out run_x --steps 1e1",
                                 "fgvc-model-info --device cpu --model resnet20 --time --repeats 3000000000"}) {
    const Outcome r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind(args.substr(0, args.find(' ')) + ": error: ", 0), 0u) << r.err;
    // One line, naming the flag to fix (every case here has one at fault).
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(" --"), std::string::npos) << args << "\n" << r.err;
    EXPECT_TRUE(r.out.empty()) << args << "\n" << r.out;
  }
}

// A number a double cannot hold is named so, not as "not a finite number".
TEST_F(Apps, NumbersOutOfADoublesRangeAreNamedSo) {
  for (const char* gamma : {"1e-320", "1e400"}) {
    const Outcome r = run("fgvc-similarity --source " + source + " --target " + target + " --gamma " + gamma);
    EXPECT_EQ(r.code, 2);
    EXPECT_EQ(r.err, std::string("fgvc-similarity: error: --gamma: out of a double's range: ") + gamma + "\n");
  }
}

// A misspelt option is named, not the required one it leaves missing (CLI11 checks those first).
TEST_F(Apps, MisspeltOptionIsNamedBeforeAMissingRequiredOne) {
  const Outcome r = run("fgvc-train --modle resnet20 --data missing/ --out run_x --steps 1");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(r.err.rfind("fgvc-train: error: unknown option --modle (and --model is required", 0), 0u) << r.err;
  const Outcome eq = run("fgvc-similarity --sorce=" + source + " --target " + target);
  EXPECT_EQ(eq.code, 2) << eq.err;
  EXPECT_NE(eq.err.find("unknown option --sorce"), std::string::npos) << eq.err;
  const Outcome short_option = run("fgvc-train -q --data missing/ --out run_x --steps 1");
  EXPECT_EQ(short_option.code, 2);
  EXPECT_NE(short_option.err.find("unknown option -q"), std::string::npos) << short_option.err;
  // An option's value that begins with "--" is the value, not an unknown option.
  const Outcome value = run("fgvc-train --data --x --out run_x --steps 1");
  EXPECT_EQ(value.code, 2);
  EXPECT_EQ(value.err, "fgvc-train: error: --model is required\n");
  const Outcome missing = run("fgvc-train --data missing/ --out run_x --steps 1");  // nothing misspelt
  EXPECT_EQ(missing.code, 2);
  EXPECT_EQ(missing.err, "fgvc-train: error: --model is required\n");
  // With nothing required missing: worded the same, and a stray argument named as one.
  // "--source=" with nothing after it: CLI11 would take the next argument as its value.
  const Outcome empty = run("fgvc-similarity --source= --gamma 1 --target " + target);
  EXPECT_EQ(empty.code, 2);
  EXPECT_EQ(empty.err, "fgvc-similarity: error: --source has no value after its '=' (give one, or leave the option out)\n");
  // A seed beyond 2^64 - 1 is refused (CLI11 would store 2^64 - 1 for every such number).
  const Outcome seed = run("fgvc-subset --data missing/ --max-per-class 2 --out x.txt --seed 18446744073709551616");
  EXPECT_EQ(seed.code, 2);
  EXPECT_EQ(seed.err, "fgvc-subset: error: --seed: must be at most 18446744073709551615, got 18446744073709551616\n");
  // A training step of one image where a batch norm sees a 1 x 1 grid: --batch-size is named.
  const Outcome one = run("fgvc-model-info --device cpu --model resnet50 --input-size 32 --time --batch-size 1 --repeats 1");
  EXPECT_EQ(one.code, 2);
  EXPECT_EQ(one.err.rfind("fgvc-model-info: error: --batch-size 1: a training step of resnet50 at 32 px needs 2 or more", 0), 0u)
      << one.err;
  // Timing options without --time did nothing, silently: named.
  for (const char* option : {"--batch-size 4", "--optimizer sgd", "--whole-model", "--repeats 2"}) {
    const Outcome untimed = run(std::string("fgvc-model-info --device cpu --model resnet20 ") + option);
    EXPECT_EQ(untimed.code, 2) << option;
    EXPECT_EQ(untimed.err, "fgvc-model-info: error: " + std::string(option).substr(0, std::string(option).find(' ')) +
                               " requires --time\n");
  }
  const Outcome demo = run("fgvc-demo --bogus-flag=1");
  EXPECT_EQ(demo.code, 2);
  EXPECT_EQ(demo.err, "fgvc-demo: error: unknown option --bogus-flag\n");
  const Outcome stray = run("fgvc-model-info --model resnet20 extra");
  EXPECT_EQ(stray.code, 2);
  EXPECT_EQ(stray.err, "fgvc-model-info: error: unexpected argument 'extra' (fgvc-model-info takes options only; see --help)\n");
  // An option that may be repeated takes one value each time: a stray word after it is not a
  // second target (it was read as one, and failed as a file, exit 1).
  const Outcome extra_target = run("fgvc-similarity --device cpu --source " + source + " --target " + target + " extra");
  EXPECT_EQ(extra_target.code, 2);
  EXPECT_EQ(extra_target.err,
            "fgvc-similarity: error: unexpected argument 'extra' (fgvc-similarity takes options only; see --help)\n");
  const Outcome twice = run("fgvc-model-info --model resnet20 --device cpu --device cuda");
  EXPECT_EQ(twice.code, 2);
  EXPECT_EQ(twice.err, "fgvc-model-info: error: --device is given 2 times; give it once\n");
}

// fgvc-train --gpus N starts N processes, one per GPU: more than the machine has, or one GPU
// named with it, is a usage error before mpirun starts (NCCL would refuse two ranks on a GPU).
// Without a GPU, --gpus N is a usage error that says how to run several CPU processes.
TEST_F(Apps, GpusWithoutAGpuAreAUsageError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is here: GpusBeyondTheMachineAreAUsageErrorOnTheGpu covers it";
  for (const char* n : {"2", "1000"}) {
    const Outcome r = run("fgvc-train --model resnet20 --data " + dir + "/missing/ --out " + dir + "/run_x --steps 1 --gpus " + n);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_EQ(r.err, std::string("fgvc-train: error: --gpus ") + n +
                         " needs CUDA devices; for several CPU processes run: mpirun -np N fgvc-train --device cpu ...\n");
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/run_x"));
}

// --device cuda:N beyond the machine's devices: one line naming the flag and the devices there
// are (it was the allocator's "invalid device ordinal" at the first tensor), in every binary.
TEST_F(Apps, DeviceIndexBeyondTheMachineIsNamed) {
  FGVC_REQUIRE_CUDA();
  const std::string beyond = "cuda:" + std::to_string(cuda_device_count());
  const std::vector<std::string> commands = {"fgvc-model-info --model resnet20",
                                             "fgvc-similarity --source " + source + " --target " + target,
                                             "fgvc-train --model resnet20 --data missing/ --out run_x --steps 1"};
  for (const std::string& name : commands) {
    const Outcome r = run(name + " --device " + beyond);
    EXPECT_EQ(r.code, 1) << name << "\n" << r.err;
    EXPECT_NE(r.err.find(": error: --device " + beyond + ": no such CUDA device (this machine has "), std::string::npos)
        << r.err;
  }
}

TEST_F(Apps, GpusBeyondTheMachineAreAUsageErrorOnTheGpu) {
  FGVC_REQUIRE_CUDA();
  for (const std::string& args : {std::string("fgvc-train --model resnet20 --data missing/ --out run_x --steps 1 --gpus 1000"),
                                  std::string("fgvc-train --device cuda:0 --model resnet20 --data missing/ --out run_x "
                                              "--steps 1 --gpus ") + std::to_string(cuda_device_count())}) {
    if (cuda_device_count() < 2 && args.find("cuda:0") != std::string::npos) continue;  // --gpus 1 starts no mpirun
    const Outcome r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("fgvc-train: error: --gpus", 0), 0u) << r.err;
  }
}

TEST_F(Apps, BadFilesExitOneNamingTheFile) {
  const std::string bad = dir + "/bad.safetensors";
  { std::ofstream(bad) << "garbage garbage garbage"; }
  const Outcome r = run("fgvc-similarity --device cpu --source " + bad + " --target " + target);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("fgvc-similarity: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(bad), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  emd::save_domain(dir + "/other_dim.safetensors", make(4, 3, 9));
  const Outcome d = run("fgvc-similarity --device cpu --source " + source + " --target " + dir + "/other_dim.safetensors");
  EXPECT_EQ(d.code, 1);
  EXPECT_NE(d.err.find("feature dimensions differ"), std::string::npos) << d.err;
  const Outcome folder = run("fgvc-similarity --device cpu --source " + dir + " --target " + target);
  EXPECT_EQ(folder.code, 1);
  EXPECT_NE(folder.err.find(dir + ": is a directory"), std::string::npos) << folder.err;
  // Output that cannot be written (a full disk) is a failure, not success.
  if (std::filesystem::exists("/dev/full")) {
    const std::string cmd = std::string(FGVC_BIN_DIR) + "/fgvc-similarity --device cpu --source " + source +
                            " --target " + target + " --json >/dev/full 2>" + dir + "/full_err.txt";
    const int status = std::system(cmd.c_str());
    EXPECT_EQ(WIFEXITED(status) ? WEXITSTATUS(status) : -1, 1);
    EXPECT_NE(testing::slurp(dir + "/full_err.txt").find("cannot write the output"), std::string::npos);
  }
}

// A small ImageFolder: 3 classes of 6, 3 and 1 JPEGs, plus one broken file.
std::string make_images(const std::string& dir) {
  const std::string root = dir + "/images";
  std::filesystem::remove_all(root);
  const int counts[] = {6, 3, 1};
  for (int c = 0; c < 3; ++c) {
    std::filesystem::create_directories(root + "/c" + std::to_string(c));
    for (int i = 0; i < counts[c]; ++i)
      testing::write_bytes(root + "/c" + std::to_string(c) + "/" + std::to_string(i) + ".jpg",
                           testing::encode_jpeg(testing::test_picture(80 + i, 60), testing::JpegKind::Baseline));
  }
  testing::write_bytes(root + "/c0/broken.jpg", std::vector<uint8_t>(50, 1));
  return root;
}

// An output in a folder that takes no new files fails before the work, naming the flag; a
// run folder that cannot be made names itself.
TEST_F(Apps, UnwritableOutputsFailBeforeTheWork) {
  if (std::filesystem::exists("/proc/self")) {
    const Outcome r = run("fgvc-select --device cpu --source " + source + " --target " + target +
                          " --top-k 2 --out /proc/fgvc_select.txt");
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err.rfind("fgvc-select: error: --out /proc/fgvc_select.txt: cannot write in /proc", 0), 0u) << r.err;
    const Outcome t =
        run("fgvc-train --device cpu --model resnet20 --data " + make_images(dir) + " --out /proc/fgvc_run --steps 1");
    EXPECT_EQ(t.code, 1);
    EXPECT_EQ(t.err.rfind("fgvc-train: error: train: run folder /proc/fgvc_run: cannot make it", 0), 0u) << t.err;
  }
  // fgvc-subset validates --device like every binary.
  if (!cuda_available()) {
    const Outcome r = run("fgvc-subset --device cuda --data " + dir + " --max-per-class 2 --out " + dir + "/s.txt");
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(r.err.find("--device cuda: no CUDA device"), std::string::npos) << r.err;
  }
}

TEST_F(Apps, SubsetWritesABalancedList) {
  const std::string images = make_images(dir), out = dir + "/subset.txt";
  const Outcome r = run("fgvc-subset --data " + images + " --max-per-class 2 --out " + out + " --seed 3 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = last_json_line(r.out);
  EXPECT_EQ(j.at("images").get<int>(), 2 + 2 + 1);
  EXPECT_EQ(j.at("head_threshold"), 100);  // fgvc-eval's default, SPEC.md section 4
  EXPECT_EQ(j.at("counts"), nlohmann::json({2, 2, 1}));
  const data::Dataset back = data::load_dataset(out);
  EXPECT_EQ(back.samples.size(), 5u);
  for (const auto& s : back.samples) EXPECT_TRUE(std::filesystem::exists(s.path)) << s.path;
  // The file itself holds those counts, each sample under its own class's label, no file twice.
  const data::Dataset full = data::load_dataset(images);
  EXPECT_EQ(back.classes, full.classes);
  std::vector<int> per_class(full.classes.size(), 0);
  std::set<std::string> seen;
  for (const auto& s : back.samples) {
    ++per_class[static_cast<size_t>(s.label)];
    EXPECT_TRUE(seen.insert(s.path).second) << s.path;
    const auto it = std::find_if(full.samples.begin(), full.samples.end(), [&](const data::Sample& f) {
      return std::filesystem::equivalent(f.path, s.path);
    });
    ASSERT_NE(it, full.samples.end()) << s.path;
    EXPECT_EQ(it->label, s.label) << s.path;
  }
  EXPECT_EQ(per_class, (std::vector<int>{2, 2, 1}));
  // Head and tail by the full set's counts (7 with the broken file, 3, 1), and what the subset
  // keeps of each; the same seed writes the same file.
  const std::string again = dir + "/subset_again.txt";
  const Outcome h = run("fgvc-subset --data " + images + " --max-per-class 2 --out " + again +
                        " --seed 3 --head-threshold 3 --json");
  ASSERT_EQ(h.code, 0) << h.err;
  const nlohmann::json hj = last_json_line(h.out);
  EXPECT_EQ(hj.at("head_classes"), 2);
  EXPECT_EQ(hj.at("tail_classes"), 1);
  EXPECT_EQ(hj.at("head_images_full"), 10);
  EXPECT_EQ(hj.at("tail_images_full"), 1);
  EXPECT_EQ(hj.at("head_images"), 4);
  EXPECT_EQ(hj.at("tail_images"), 1);
  const auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(slurp(again), slurp(out));
  const Outcome bad = run("fgvc-subset --data " + dir + "/nowhere --max-per-class 2 --out " + out);
  EXPECT_EQ(bad.code, 1);
  EXPECT_EQ(bad.err.rfind("fgvc-subset: error: ", 0), 0u) << bad.err;
  EXPECT_EQ(run("fgvc-subset --data " + images + " --max-per-class 0 --out " + out).code, 2);
  // A bad call makes no folder; an --out in a folder that is not there yet is made, as
  // fgvc-train makes its run folder.
  EXPECT_EQ(run("fgvc-subset --data " + dir + "/nowhere --max-per-class 2 --out " + dir + "/not_made/s.txt").code, 1);
  EXPECT_FALSE(std::filesystem::exists(dir + "/not_made"));
  const std::string nested = dir + "/new_folder/deeper/subset.txt";
  std::filesystem::remove_all(dir + "/new_folder");
  ASSERT_EQ(run("fgvc-subset --data " + images + " --max-per-class 2 --out " + nested).code, 0);
  EXPECT_EQ(data::load_dataset(nested).samples.size(), 5u);
  // Files that are empty or not images by their first bytes are passed over, each named, and
  // another of the class drawn (c0: 6 images and broken.jpg; c1: 3 and an empty file).
  testing::write_bytes(images + "/c1/empty.jpg", {});
  const Outcome all = run("fgvc-subset --data " + images + " --max-per-class 7 --out " + dir + "/readable.txt --json");
  ASSERT_EQ(all.code, 0) << all.err;
  EXPECT_EQ(last_json_line(all.out).at("counts"), nlohmann::json({6, 3, 1}));
  EXPECT_EQ(last_json_line(all.out).at("passed_over"), 2);
  EXPECT_NE(all.err.find(images + "/c0/broken.jpg is not an image: passed over, another image of class 'c0' drawn"),
            std::string::npos)
      << all.err;
  EXPECT_NE(all.err.find(images + "/c1/empty.jpg is empty: passed over"), std::string::npos) << all.err;
}

TEST_F(Apps, LoaderBenchCountsSkippedFilesAndSavesAGrid) {
  const std::string images = make_images(dir), grid = dir + "/grid.png";
  const Outcome r = run("fgvc-loader-bench --device cpu --data " + images +
                        " --input-size 32 --images 10 --batch-size 4 --workers 2 --save-grid " + grid + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = last_json_line(r.out);
  EXPECT_GE(j.at("images").get<int>(), 10);
  EXPECT_EQ(j.at("skipped").get<int>(), 1);
  EXPECT_GT(j.at("images_per_sec").get<double>(), 0);
  EXPECT_NE(r.err.find("broken.jpg"), std::string::npos) << r.err;  // one warning naming the file
  // The library's warnings are named after the binary that warned, as its errors are.
  EXPECT_NE(r.err.find("fgvc-loader-bench: warning: skipped "), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("fgvc: warning"), std::string::npos) << r.err;
  // Several epochs to reach --images: the same bad file is still one skipped file.
  const Outcome many = run("fgvc-loader-bench --device cpu --data " + images +
                           " --input-size 32 --images 60 --batch-size 4 --workers 2 --json");
  ASSERT_EQ(many.code, 0) << many.err;
  EXPECT_EQ(last_json_line(many.out).at("skipped").get<int>(), 1) << many.out;
  std::vector<uint8_t> png;
  std::string error;
  ASSERT_TRUE(data::read_file(grid, &png, &error)) << error;
  const data::Decoded d = data::decode_image(png, grid);
  ASSERT_TRUE(d.ok()) << d.error;
  EXPECT_EQ(d.image.width, 4 * 32);
  for (const char* mode : {"eval", "eval12"})
    EXPECT_EQ(run("fgvc-loader-bench --device cpu --data " + images + " --input-size 24 --images 4 --mode " + mode).code, 0);
  { std::ofstream(dir + "/bad.txt") << "c0/0.jpg 0\nno_label_here\n"; }
  const Outcome bad = run("fgvc-loader-bench --device cpu --data " + dir + "/bad.txt");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("bad.txt:2"), std::string::npos) << bad.err;
  EXPECT_EQ(run("fgvc-loader-bench --data " + images + " --mode sideways").code, 2);
}

TEST_F(Apps, ModelInfoCountsParametersAndMacs) {
  const Outcome r = run("fgvc-model-info --device cpu --model resnet50 --input-size 224 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = last_json_line(r.out);
  EXPECT_EQ(j.at("params").get<int64_t>(), 25557032);
  EXPECT_EQ(j.at("buffers").get<int64_t>(), 53173);  // running mean/var and num_batches_tracked
  EXPECT_NEAR(j.at("macs").get<double>(), 4.089e9, 0.01e9);
  EXPECT_EQ(j.at("output_shape"), nlohmann::json({1, 1000}));
  EXPECT_EQ(j.at("params_without_aux").get<int64_t>(), 25557032);
  // Inception-v3's count without its auxiliary classifier, as SPEC.md and torchvision quote it.
  const Outcome v3 = run("fgvc-model-info --device cpu --model inception_v3 --input-size 75 --json");
  ASSERT_EQ(v3.code, 0) << v3.err;
  EXPECT_EQ(last_json_line(v3.out).at("params").get<int64_t>(), 27161264);
  EXPECT_EQ(last_json_line(v3.out).at("params_without_aux").get<int64_t>(), 23834568);
  // A training step below the auxiliary classifier's 299: timed without the auxiliary loss.
  const Outcome v3_time =
      run("fgvc-model-info --device cpu --model inception_v3 --input-size 75 --time --whole-model --batch-size 2 --repeats 1 --json");
  ASSERT_EQ(v3_time.code, 0) << v3_time.err;
  EXPECT_EQ(last_json_line(v3_time.out).at("aux_loss"), false);
  EXPECT_GT(last_json_line(v3_time.out).at("step_ms").get<double>(), 0.0);
  // --time per layer: every layer row timed forward and backward, the totals their sums, the
  // rows the same as without --time.
  const Outcome timed = run("fgvc-model-info --device cpu --model resnet20 --time --layers --repeats 1 --json");
  ASSERT_EQ(timed.code, 0) << timed.err;
  const nlohmann::json tj = last_json_line(timed.out);
  const Outcome untimed = run("fgvc-model-info --device cpu --model resnet20 --layers --json");
  ASSERT_EQ(untimed.code, 0) << untimed.err;
  const nlohmann::json uj = last_json_line(untimed.out);
  ASSERT_EQ(tj.at("layers").size(), uj.at("layers").size());
  EXPECT_EQ(tj.at("whole_model"), false);
  double forward = 0, backward = 0;
  for (size_t i = 0; i < tj.at("layers").size(); ++i) {
    const nlohmann::json& row = tj.at("layers")[i];
    EXPECT_EQ(row.at("name"), uj.at("layers")[i].at("name"));
    EXPECT_EQ(row.at("params"), uj.at("layers")[i].at("params"));
    EXPECT_GE(row.at("forward_ms").get<double>(), 0.0) << row.at("name");
    EXPECT_GE(row.at("backward_ms").get<double>(), 0.0) << row.at("name");
    forward += row.at("forward_ms").get<double>(), backward += row.at("backward_ms").get<double>();
  }
  EXPECT_NEAR(tj.at("layers_forward_ms").get<double>(), forward, 1e-6 * forward + 1e-9);
  EXPECT_NEAR(tj.at("layers_backward_ms").get<double>(), backward, 1e-6 * backward + 1e-9);
  EXPECT_EQ(tj.at("batch_size"), 2);  // the default: batch norm in a training step needs two
  const Outcome layers = run("fgvc-model-info --device cpu --model resnet50 --num-classes 10 --input-size 64 --layers --json");
  ASSERT_EQ(layers.code, 0) << layers.err;
  const nlohmann::json lj = last_json_line(layers.out);
  int64_t params = 0;
  for (const auto& row : lj.at("layers")) params += row.at("params").get<int64_t>();
  EXPECT_EQ(params, lj.at("params").get<int64_t>());  // every parameter sits in some layer row
  // The pools inside Inception blocks are rows of their own, named as in the references
  // (timm's branch3.0, torchvision's branch_pool), not one unnamed row for all of them.
  const Outcome v3_layers = run("fgvc-model-info --device cpu --model inception_v3 --input-size 75 --layers --json");
  ASSERT_EQ(v3_layers.code, 0) << v3_layers.err;
  std::set<std::string> pools;
  const nlohmann::json v3j = last_json_line(v3_layers.out);
  for (const auto& row : v3j.at("layers")) {
    EXPECT_FALSE(row.at("name").get<std::string>().empty()) << row.dump();
    if (row.at("type").get<std::string>().find("Pool") != std::string::npos) pools.insert(row.at("name"));
  }
  // The auxiliary classifier does not run in eval mode: its layers are rows that say so, and the
  // rows' parameters still add up to the model's.
  int64_t v3_params = 0, aux_rows = 0;
  for (const auto& row : v3j.at("layers")) {
    v3_params += row.at("params").get<int64_t>();
    const bool aux = row.at("name").get<std::string>().rfind("AuxLogits.", 0) == 0;
    EXPECT_EQ(row.at("ran").get<bool>(), !aux) << row.dump();
    if (!aux) continue;
    aux_rows++;
    EXPECT_TRUE(row.at("output_shape").is_null()) << row.dump();
  }
  EXPECT_EQ(v3_params, v3j.at("params").get<int64_t>());
  EXPECT_EQ(aux_rows, 5);  // conv0 and conv1, each with its batch norm, and fc
  EXPECT_EQ(pools.size(), 2u + 9u + 2u);  // the stem's two, the nine blocks' average pools, Mixed_6a's and Mixed_7a's
  EXPECT_EQ(pools.count("Mixed_5b.pool"), 1u);
  EXPECT_EQ(pools.count("Mixed_6a.branch_pool"), 1u);
  EXPECT_EQ(run("fgvc-model-info --model resnet51").code, 2);
  // The models issue's check: Inception-v4 at 560 is about 45.8 G multiply-accumulates.
  const Outcome v4 = run("fgvc-model-info --device cpu --model inception_v4 --input-size 560 --json");
  ASSERT_EQ(v4.code, 0) << v4.err;
  EXPECT_EQ(last_json_line(v4.out).at("params").get<int64_t>(), 42679816);
  EXPECT_NEAR(last_json_line(v4.out).at("macs").get<double>(), 45.8e9, 0.05e9);
}

// An output that names an input file (by any path) is refused before anything is written: it
// would replace the file it was made from.
TEST_F(Apps, AnOutputThatIsAnInputIsRefused) {
  const std::string images = make_images(dir), list = dir + "/inputs.txt";
  ASSERT_EQ(run("fgvc-subset --data " + images + " --max-per-class 2 --out " + list).code, 0);
  const std::string before = testing::slurp(list);
  const Outcome same = run("fgvc-subset --data " + list + " --max-per-class 1 --out " + dir + "/./inputs.txt");
  EXPECT_EQ(same.code, 2);
  EXPECT_NE(same.err.find("--out " + dir + "/./inputs.txt is the file --data reads (" + list + ")"), std::string::npos)
      << same.err;
  EXPECT_EQ(testing::slurp(list), before);
  manual_seed(3);
  write_safetensors(dir + "/w20.safetensors", nn::create_model("resnet20", 3)->state_dict());
  write_safetensors(dir + "/x20.safetensors", {{"input", testing::randn_t({1, 3, 32, 32}, 4)}});
  for (const char* output : {"/x20.safetensors", "/w20.safetensors"}) {
    const Outcome r = run("fgvc-infer --device cpu --model resnet20 --weights " + dir + "/w20.safetensors --input " + dir +
                          "/x20.safetensors --output " + dir + output);
    EXPECT_EQ(r.code, 2) << output;
    EXPECT_NE(r.err.find("the output would replace it"), std::string::npos) << r.err;
  }
  EXPECT_EQ(read_safetensors(dir + "/w20.safetensors").tensors.count("conv1.weight") +
                read_safetensors(dir + "/x20.safetensors").tensors.count("input"),
            2u);
  // One of the data set's images (by another path), or the class names beside a list file that
  // --data or --train-counts names: refused, the file kept (fgvc-eval replaced an image it was
  // scoring; a replaced class-names file made the next training run's classes CSV rows).
  const std::string image = images + "/c1/0.jpg", image_bytes = testing::slurp(image);
  const std::string counted = images + "/c0/5.jpg", counted_bytes = testing::slurp(counted);
  const std::string names = list.substr(0, list.size() - 4) + ".classes.txt", names_before = testing::slurp(names);
  const std::string eval = "fgvc-eval --device cpu --model resnet20 --weights " + dir + "/w20.safetensors --input-size 32 ";
  const std::vector<std::pair<std::string, std::string>> refused = {
      {eval + "--data " + images + " --per-class " + images + "/c0/../c1/0.jpg", "is an image of --data " + images},
      {eval + "--data " + list + " --per-class " + names, "is the file --data (its class names) reads"},
      {eval + "--data " + images + " --train-counts " + list + " --per-class " + names,
       "is the file --train-counts (its class names) reads"},
      {eval + "--data " + list + " --train-counts " + images + " --per-class " + images + "/c0/5.jpg",
       "is an image of --train-counts " + images},
      {"fgvc-extract --device cpu --model resnet20 --weights " + dir + "/w20.safetensors --input-size 32 --data " + list +
           " --out " + images + "/c2/0.jpg",
       "is an image of --data " + list},
      {"fgvc-loader-bench --data " + images + " --input-size 32 --images 4 --batch-size 2 --save-grid " + images +
           "/c2/0.png",
       "is an image of --data " + images}};
  testing::write_bytes(images + "/c2/0.png", testing::encode_png(testing::test_picture(40, 30)));
  const std::string png_bytes = testing::slurp(images + "/c2/0.png"), jpeg_bytes = testing::slurp(images + "/c2/0.jpg");
  for (const auto& [command, says] : refused) {
    const Outcome r = run(command);
    EXPECT_EQ(r.code, 2) << command << "\n" << r.err;
    EXPECT_NE(r.err.find(says), std::string::npos) << command << "\n" << r.err;
    EXPECT_NE(r.err.find("the output would replace it"), std::string::npos) << r.err;
  }
  // fgvc-train's run folder among the images it reads: in an image folder (a class folder, or a
  // new folder that would be read as a class of plots) or a folder of a list's images. Its
  // loss.png replaced a class's image of that name.
  const std::string train = "fgvc-train --device cpu --model resnet20 --batch-size 2 --input-size 32 --quiet ";
  const std::vector<std::pair<std::string, std::string>> run_folders = {
      {train + "--steps 1 --data " + images + " --out " + images + "/c0", "--out " + images + "/c0 is inside --data " + images},
      {train + "--steps 1 --data " + images + " --out " + images + "/runs/a", "is inside --data " + images + ", an image folder"},
      {train + "--steps 1 --data " + images + " --out " + images + "/.", "--out " + images + "/. is --data " + images},
      {train + "--steps 1 --data " + list + " --val " + images + " --out " + images + "/runs/v", "is inside --val " + images},
      {train + "--steps 1 --data " + list + " --out " + images + "/c1/", "holds images of --data " + list}};
  for (const auto& [command, says] : run_folders) {
    const Outcome r = run(command);
    EXPECT_EQ(r.code, 1) << command << "\n" << r.err;
    EXPECT_NE(r.err.find(says), std::string::npos) << command << "\n" << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(images + "/runs"));
  // Resumed with a total it has passed: nothing to do, and the run's own step said as such.
  const std::string run_folder = dir + "/run_done";
  std::filesystem::remove_all(run_folder);
  ASSERT_EQ(run(train + "--data " + images + " --out " + run_folder + " --steps 2").code, 0);
  const Outcome done = run(train + "--data " + images + " --out " + run_folder + " --steps 1 --resume");
  EXPECT_EQ(done.code, 0) << done.err;
  EXPECT_EQ(done.out, "nothing to do: the run in " + run_folder + " is already at step 2 (0 epoch(s)); --steps 1 asks for no more\n");
  EXPECT_FALSE(std::filesystem::exists(images + "/c0/config.json"));
  EXPECT_EQ(testing::slurp(image), image_bytes);
  EXPECT_EQ(testing::slurp(counted), counted_bytes);
  EXPECT_EQ(testing::slurp(names), names_before);
  EXPECT_EQ(testing::slurp(images + "/c2/0.png"), png_bytes);
  EXPECT_EQ(testing::slurp(images + "/c2/0.jpg"), jpeg_bytes);
}

TEST_F(Apps, InferMatchesTheLibraryForward) {
  manual_seed(7);
  auto model = nn::create_model("resnet50", 5);
  write_safetensors(dir + "/w.safetensors", model->state_dict());
  const Tensor x = testing::randn_t({2, 3, 64, 64}, 8);
  write_safetensors(dir + "/x.safetensors", {{"input", x}});
  const Outcome r = run("fgvc-infer --device cpu --model resnet50 --weights " + dir + "/w.safetensors --input " + dir +
                        "/x.safetensors --output " + dir + "/y.safetensors");
  ASSERT_EQ(r.code, 0) << r.err;
  const SafetensorsFile y = read_safetensors(dir + "/y.safetensors");
  model->eval();
  NoGradGuard no_grad;
  EXPECT_LT(testing::rel_error(y.tensors.at("logits"), model->forward(x)), 1e-6);
  EXPECT_EQ(y.tensors.at("features").shape(), (Shape{2, 2048}));
  EXPECT_LT(testing::rel_error(y.tensors.at("features"), model->features(x)), 1e-6);
  // Weights of another architecture: a strict load lists the problem and exits 1.
  const Outcome bad = run("fgvc-infer --device cpu --model inception_v3 --num-classes 5 --weights " + dir +
                          "/w.safetensors --input " + dir + "/x.safetensors --output " + dir + "/z.safetensors");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("missing"), std::string::npos) << bad.err;
  // Another class count than the weights' classifier: named, with the count that fits (exit 2).
  const Outcome count = run("fgvc-infer --device cpu --model resnet50 --num-classes 7 --weights " + dir +
                            "/w.safetensors --input " + dir + "/x.safetensors --output " + dir + "/z.safetensors");
  EXPECT_EQ(count.code, 2);
  EXPECT_NE(count.err.find("--num-classes 7: the classifier of --weights " + dir + "/w.safetensors has 5 classes"),
            std::string::npos)
      << count.err;
  EXPECT_NE(count.err.find("give 5, or leave --num-classes out"), std::string::npos) << count.err;
  // An input in 8-bit floats is named with its type (not "no tensor named 'input'").
  {
    const std::string header = R"({"input":{"dtype":"F8_E4M3","shape":[1,3,64,64],"data_offsets":[0,12288]}})";
    std::ofstream f(dir + "/x8.safetensors", std::ios::binary);
    for (int i = 0; i < 8; ++i) f.put(static_cast<char>((header.size() >> (8 * i)) & 0xFF));
    f << header << std::string(12288, '\x38');
  }
  const Outcome f8 = run("fgvc-infer --device cpu --model resnet50 --weights " + dir + "/w.safetensors --input " + dir +
                         "/x8.safetensors --output " + dir + "/z8.safetensors");
  EXPECT_EQ(f8.code, 1);
  EXPECT_NE(f8.err.find("'input' must be float32 [N, 3, H, W], got F8_E4M3"), std::string::npos) << f8.err;
  // Inception-v3 weights without the auxiliary head (as timm's are) load: inference never
  // uses it. A partial head is still refused.
  auto inception = nn::create_model("inception_v3", 5);
  std::map<std::string, Tensor> no_aux, partial_aux;
  for (const auto& [name, t] : inception->state_dict()) {
    if (name.rfind("AuxLogits.", 0) != 0) no_aux[name] = t;
    if (name.rfind("AuxLogits.fc.", 0) != 0) partial_aux[name] = t;
  }
  write_safetensors(dir + "/no_aux.safetensors", no_aux);
  write_safetensors(dir + "/partial_aux.safetensors", partial_aux);
  const Tensor x299 = testing::randn_t({1, 3, 75, 75}, 9);
  write_safetensors(dir + "/x75.safetensors", {{"input", x299}});
  const Outcome no_aux_run = run("fgvc-infer --device cpu --model inception_v3 --weights " + dir +
                                 "/no_aux.safetensors --input " + dir + "/x75.safetensors --output " + dir + "/i.safetensors");
  EXPECT_EQ(no_aux_run.code, 0) << no_aux_run.err;
  const Outcome partial = run("fgvc-infer --device cpu --model inception_v3 --weights " + dir +
                              "/partial_aux.safetensors --input " + dir + "/x75.safetensors --output " + dir +
                              "/p.safetensors");
  EXPECT_EQ(partial.code, 1);
  EXPECT_NE(partial.err.find("AuxLogits.fc"), std::string::npos) << partial.err;
  // A backbone (weights without the classifier, as timm saves num_classes=0): its features
  // with --features-only, the same as the whole model's; without the flag, exit 1 naming it.
  std::map<std::string, Tensor> backbone = model->state_dict();
  backbone.erase("fc.weight");
  backbone.erase("fc.bias");
  write_safetensors(dir + "/backbone.safetensors", backbone);
  const std::string backbone_args = "fgvc-infer --device cpu --model resnet50 --weights " + dir +
                                    "/backbone.safetensors --input " + dir + "/x.safetensors --output " + dir + "/f.safetensors";
  const Outcome features_only = run(backbone_args + " --features-only --json");
  ASSERT_EQ(features_only.code, 0) << features_only.err;
  const SafetensorsFile f = read_safetensors(dir + "/f.safetensors");
  EXPECT_EQ(f.tensors.count("logits"), 0u);
  EXPECT_LT(testing::rel_error(f.tensors.at("features"), model->features(x)), 1e-6);
  EXPECT_EQ(last_json_line(features_only.out).count("logits_shape"), 0u);
  const Outcome no_classifier = run(backbone_args);
  EXPECT_EQ(no_classifier.code, 1);
  EXPECT_NE(no_classifier.err.find("backbone.safetensors: no classifier weight"), std::string::npos) << no_classifier.err;
  EXPECT_NE(no_classifier.err.find("--features-only"), std::string::npos) << no_classifier.err;
  // The whole model's file with --features-only: the same features, no logits.
  const Outcome whole = run("fgvc-infer --device cpu --features-only --model resnet50 --weights " + dir +
                            "/w.safetensors --input " + dir + "/x.safetensors --output " + dir + "/g.safetensors");
  ASSERT_EQ(whole.code, 0) << whole.err;
  const SafetensorsFile g = read_safetensors(dir + "/g.safetensors");
  EXPECT_EQ(g.tensors.count("logits"), 0u);
  EXPECT_LT(testing::rel_error(g.tensors.at("features"), model->features(x)), 1e-6);
}

TEST_F(Apps, ExtractWritesADomainFileOfClassMeans) {
  const std::string images = make_images(dir);
  manual_seed(9);
  auto model = nn::create_model("resnet50", 3);
  write_safetensors(dir + "/r.safetensors", model->state_dict());
  const Outcome r = run("fgvc-extract --device cpu --model resnet50 --weights " + dir + "/r.safetensors --data " +
                        images + " --input-size 64 --batch-size 4 --out " + dir + "/domain.safetensors --json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(last_json_line(r.out).at("images").get<int>(), 10);  // the broken file is skipped
  const emd::Domain d = emd::load_domain(dir + "/domain.safetensors");
  EXPECT_EQ(d.classes, (std::vector<std::string>{"c0", "c1", "c2"}));
  EXPECT_EQ(d.counts, (std::vector<double>{6, 3, 1}));
  EXPECT_EQ(d.features.shape(), (Shape{3, 2048}));
  // SPEC section 5's metadata: the classes, the model, the layer the features come from.
  const SafetensorsFile written = read_safetensors(dir + "/domain.safetensors");
  EXPECT_EQ(written.metadata.at("model"), "resnet50");
  EXPECT_EQ(written.metadata.at("layer"), "global average pool (penultimate)");
  EXPECT_EQ(nlohmann::json::parse(written.metadata.at("classes")), nlohmann::json({"c0", "c1", "c2"}));
  // The means themselves: each image's features one at a time (batches of 1, not the app's 4),
  // averaged per class in float64 here.
  data::LoaderOptions o;
  o.mode = data::Mode::Eval, o.size = 64, o.batch_size = 1, o.normalization = data::Normalization::ImageNet;
  o.warn = false;
  data::Loader loader(data::load_dataset(images), o);
  model->eval();
  std::vector<double> expected(3 * 2048, 0.0);
  {
    NoGradGuard no_grad;
    loader.start_epoch(0);
    data::Batch b;
    while (loader.next(&b)) {
      if (b.indices.empty()) continue;
      const int64_t c = b.labels.to_vector<int64_t>()[0];
      const std::vector<double> f = model->features(b.images).to_vector<double>();
      for (int64_t k = 0; k < 2048; ++k) expected[c * 2048 + k] += f[k] / d.counts[c];
    }
  }
  EXPECT_LT(testing::rel_error(d.features, Tensor::from_vector(expected, {3, 2048})), 1e-5);
  EXPECT_GT(testing::rel_error(d.features.slice(0, 0, 1), d.features.slice(0, 1, 2)), 1e-3);  // classes differ
  // The domain file works with fgvc-similarity against itself: EMD 0.
  const Outcome s = run("fgvc-similarity --device cpu --source " + dir + "/domain.safetensors --target " + dir +
                        "/domain.safetensors --json");
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_NEAR(last_json_line(s.out).at("emd").get<double>(), 0.0, 1e-9);
  // A backbone's weights (no classifier, as timm saves num_classes=0) give the same means:
  // the features come before the classifier.
  std::map<std::string, Tensor> backbone = model->state_dict();
  backbone.erase("fc.weight");
  backbone.erase("fc.bias");
  write_safetensors(dir + "/backbone.safetensors", backbone);
  const Outcome b = run("fgvc-extract --device cpu --model resnet50 --weights " + dir + "/backbone.safetensors --data " +
                        images + " --input-size 64 --batch-size 4 --out " + dir + "/backbone_domain.safetensors");
  ASSERT_EQ(b.code, 0) << b.err;
  const emd::Domain bd = emd::load_domain(dir + "/backbone_domain.safetensors");
  EXPECT_EQ(bd.counts, d.counts);
  EXPECT_EQ(testing::rel_error(bd.features, d.features), 0.0);
  // A class whose only file is unreadable: named in a warning, count 0 and a zero mean in the
  // file, and never selected (asking for it is a usage error).
  std::filesystem::create_directories(images + "/c3");
  testing::write_bytes(images + "/c3/broken.jpg", std::vector<uint8_t>(40, 7));
  const Outcome z = run("fgvc-extract --device cpu --model resnet50 --weights " + dir + "/r.safetensors --data " +
                        images + " --input-size 64 --batch-size 4 --out " + dir + "/with_empty.safetensors");
  ASSERT_EQ(z.code, 0) << z.err;
  EXPECT_NE(z.err.find("fgvc-extract: warning: class 'c3' has no readable image: count 0, never selected"),
            std::string::npos) << z.err;
  const emd::Domain zd = emd::load_domain(dir + "/with_empty.safetensors");
  EXPECT_EQ(zd.counts, (std::vector<double>{6, 3, 1, 0}));
  EXPECT_EQ(zd.features.slice(0, 3, 4).to_vector<float>(), std::vector<float>(2048, 0.0f));
  const std::string select =
      "fgvc-select --device cpu --source " + dir + "/with_empty.safetensors --target " + dir + "/domain.safetensors";
  EXPECT_EQ(run(select + " --top-k 4 --out " + dir + "/sel4.txt").code, 2);
  const Outcome three = run(select + " --top-k 3 --out " + dir + "/sel3.txt --json");
  ASSERT_EQ(three.code, 0) << three.err;
  std::set<std::string> picked;
  const nlohmann::json chosen = last_json_line(three.out);
  for (const nlohmann::json& c : chosen.at("classes")) picked.insert(c.at("class").get<std::string>());
  EXPECT_EQ(picked, (std::set<std::string>{"c0", "c1", "c2"}));
}

TEST_F(Apps, HelpExitsZero) {
  for (const char* app : {"fgvc-similarity", "fgvc-select", "fgvc-subset", "fgvc-loader-bench", "fgvc-model-info",
                          "fgvc-infer", "fgvc-extract"}) {
    const Outcome r = run(std::string(app) + " --help");
    EXPECT_EQ(r.code, 0) << app;
    EXPECT_NE(r.out.find("--device"), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace fgvc
