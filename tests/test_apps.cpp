// The fgvc-* binaries as a user runs them: exit codes (0 success, 2 usage, 1 other), the
// one-line "fgvc-NAME: error: ..." message, and --json output, on domain files written here.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "emd/domain.h"
#include "test_util.h"

namespace fgvc {
namespace {

struct Outcome {
  int code;
  std::string out, err;
};

// A folder of the current test's own: ctest runs the tests of this file in parallel.
std::string test_dir() {
  const std::string dir = ::testing::TempDir() + "/fgvc_apps_" +
                          ::testing::UnitTest::GetInstance()->current_test_info()->name();
  std::filesystem::create_directories(dir);
  return dir;
}

Outcome run(const std::string& args) {
  const std::string dir = test_dir();
  const std::string cmd = std::string(FGVC_BIN_DIR) + "/" + args + " >" + dir + "/out.txt 2>" + dir + "/err.txt";
  const int status = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream f(p);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir + "/out.txt"), slurp(dir + "/err.txt")};
}

nlohmann::json last_json_line(const std::string& out) {
  const size_t end = out.find_last_not_of('\n');
  const size_t start = out.rfind('\n', end);
  return nlohmann::json::parse(out.substr(start == std::string::npos ? 0 : start + 1, end + 1));
}

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
  std::string dir, source, target, target2;
};

TEST_F(Apps, SimilarityPrintsEmdAndJson) {
  const Outcome r = run("fgvc-similarity --device cpu --source " + source + " --target " + target + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = last_json_line(r.out);
  const double emd_value = j.at("emd");
  const emd::Similarity want = emd::domain_similarity(emd::load_domain(source), emd::load_domain(target));
  EXPECT_NEAR(emd_value, want.emd, 1e-12);
  EXPECT_NEAR(j.at("similarity").get<double>(), std::exp(-0.01 * want.emd), 1e-12);
  EXPECT_TRUE(j.contains("iterations"));
  EXPECT_TRUE(j.contains("seconds"));
  const Outcome plain = run("fgvc-similarity --device cpu --source " + source + " --target " + target + " --gamma 0.1");
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_NE(plain.out.find("similarity"), std::string::npos);
}

TEST_F(Apps, SelectWritesTheClassList) {
  const std::string out = dir + "/classes.txt";
  const Outcome r = run("fgvc-select --device cpu --source " + source + " --target " + target + " --target " + target2 +
                    " --per-target-k 3,2 --out " + out + " --json");
  ASSERT_EQ(r.code, 0) << r.err;
  std::ifstream f(out);
  std::string line;
  int lines = 0;
  while (std::getline(f, line)) {
    ++lines;
    EXPECT_EQ(std::count(line.begin(), line.end(), '\t'), 2) << line;
    EXPECT_EQ(line.rfind("c1_", 0), 0u) << line;
  }
  EXPECT_GE(lines, 3);
  EXPECT_LE(lines, 5);
  EXPECT_EQ(last_json_line(r.out).at("selected").get<int>(), lines);
}

TEST_F(Apps, UsageErrorsExitTwo) {
  for (const std::string& args : std::vector<std::string>{"fgvc-similarity --source " + source, "fgvc-similarity --bogus",
                                 "fgvc-similarity --source a --target b --gamma -1",
                                 "fgvc-select --source " + source + " --target " + target + " --out x.txt",
                                 "fgvc-select --source " + source + " --target " + target +
                                     " --per-target-k 1,2 --out x.txt",
                                 "fgvc-similarity --device tpu --source " + source + " --target " + target}) {
    const Outcome r = run(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind(args.substr(0, args.find(' ')) + ": error: ", 0), 0u) << r.err;
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
}

TEST_F(Apps, HelpExitsZero) {
  for (const char* app : {"fgvc-similarity", "fgvc-select"}) {
    const Outcome r = run(std::string(app) + " --help");
    EXPECT_EQ(r.code, 0) << app;
    EXPECT_NE(r.out.find("--device"), std::string::npos) << r.out;
  }
}

}  // namespace
}  // namespace fgvc
