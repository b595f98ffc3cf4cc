#include "train/plots.h"

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>

namespace fgvc {
namespace train {

namespace fs = std::filesystem;

std::string plot_script() {
  if (const char* env = std::getenv("FGVC_PLOT_SCRIPT")) return env;
  for (const char* candidate : {FGVC_SOURCE_SCRIPTS "/plot_run.py", FGVC_INSTALLED_SCRIPTS "/plot_run.py"})
    if (fs::exists(candidate)) return candidate;
  return FGVC_INSTALLED_SCRIPTS "/plot_run.py";
}

namespace {
std::string quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}
}  // namespace

std::string make_plots(const std::string& run_dir) { return make_plots(std::vector<std::string>{run_dir}, run_dir); }

std::string make_plots(const std::vector<std::string>& run_dirs, const std::string& out_dir) {
  const std::string script = plot_script();
  // Debian's interpreter first: python3-matplotlib installs for it, whatever else is on PATH.
  const std::string python = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  std::string by_hand = python + " " + quoted(script) + " --out " + quoted(out_dir);
  for (const std::string& run : run_dirs) by_hand += " " + quoted(run);
  if (!fs::exists(script)) return "plots: " + script + " not found; the metrics are in " + run_dirs.front();
  // Exit 3 from the script: matplotlib is missing.
  const int status = std::system((by_hand + " >/dev/null 2>&1").c_str());
  const int code = status == -1 ? -1 : (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  if (code == 0) return "";
  if (code == 3 || code == 127)
    return "plots: python3-matplotlib is not installed (apt-get install python3-matplotlib), then: " + by_hand;
  return "plots: the plotting script failed (exit " + std::to_string(code) + "); run: " + by_hand;
}

}  // namespace train
}  // namespace fgvc
