// Running the fgvc-* binaries from tests as a user would: the exit code, stdout and stderr,
// and the --json line; each test gets a folder of its own (ctest runs tests in parallel).
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace fgvc {
namespace testing {

struct Outcome {
  int code;
  std::string out, err;
};

inline std::string test_dir(const std::string& prefix = "fgvc_apps_") {
  const std::string dir =
      ::testing::TempDir() + "/" + prefix + ::testing::UnitTest::GetInstance()->current_test_info()->name();
  std::filesystem::create_directories(dir);
  return dir;
}

inline std::string slurp(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Runs FGVC_BIN_DIR/args through the shell.
inline Outcome run_app(const std::string& args, const std::string& dir) {
  const std::string cmd = std::string(FGVC_BIN_DIR) + "/" + args + " >" + dir + "/out.txt 2>" + dir + "/err.txt";
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir + "/out.txt"), slurp(dir + "/err.txt")};
}

inline nlohmann::json last_json_line(const std::string& out) {
  const size_t end = out.find_last_not_of('\n');
  const size_t start = out.rfind('\n', end);
  return nlohmann::json::parse(out.substr(start == std::string::npos ? 0 : start + 1, end + 1));
}

}  // namespace testing
}  // namespace fgvc
