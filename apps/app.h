// What every fgvc-* binary shares (SPEC.md section 4): --help, --device, --json; exit 0 on
// success, 2 on a usage error, 1 on any other error, with one line
// "fgvc-NAME: error: ..." on stderr.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "tensor/device.h"

namespace fgvc {
namespace app {

struct Common {
  std::string device = "";  // "" = cuda when available, else cpu
  bool json = false;
  Device resolved_device() const;
};

// Parses the command line (after `add_options` has declared the binary's own options) and
// runs `body`, turning errors into the exit codes and the message above. `body` returns
// the JSON object printed as the last line with --json.
int run(const std::string& name, const std::string& description, int argc, char** argv,
        const std::function<void(CLI::App&)>& add_options,
        const std::function<nlohmann::json(const Common&)>& body);

// A usage error found after parsing (exit 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace app
}  // namespace fgvc
