#include "apps/app.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <unistd.h>

#include "nn/models/registry.h"
#include "tensor/cuda_runtime.h"
#include "tensor/atomic_file.h"
#include "tensor/error.h"
#include "tensor/warning.h"

namespace fgvc {
namespace app {

Device Common::resolved_device(bool make_current) const {
  if (device.empty()) return cuda_available() ? Device::cuda() : Device::cpu();
  Device d;
  try {
    d = Device::parse(device);
  } catch (const Error&) {
    throw UsageError("--device: expected cpu, cuda or cuda:N, got '" + device + "'");
  }
  if (d.is_cuda() && !cuda_available())
    throw Error("--device " + device + ": no CUDA device (" + cuda_unavailable_reason() + ")");
  const int count = d.is_cuda() ? cuda_device_count() : 0;
  if (d.is_cuda() && d.index >= count)
    throw Error("--device " + device + ": no such CUDA device (this machine has " +
                (count == 1 ? std::string("one: cuda:0") : std::to_string(count) + ": cuda:0 to cuda:" + std::to_string(count - 1)) +
                ")");
  if (d.is_cuda() && make_current) cuda_set_home_device(d.index);
  return d;
}

void prepare_output_file(const std::string& flag, const std::string& path,
                         const std::vector<std::pair<std::string, std::string>>& inputs) {
  if (path.empty()) return;
  for (const auto& [input_flag, input] : inputs) {
    std::error_code ec;
    if (!input.empty() && std::filesystem::equivalent(path, input, ec))
      throw UsageError(flag + " " + path + " is the file " + input_flag + " reads (" + input +
                       "): the output would replace it; write it elsewhere");
  }
  const std::string file = atomic_target(path);
  if (file.empty()) return;  // a pipe or a device (/dev/stdout): written in place, nothing beside it
  std::error_code ec;
  std::filesystem::path folder = std::filesystem::path(file).parent_path();
  if (!folder.empty()) std::filesystem::create_directories(folder, ec);
  if (ec) throw Error(flag + " " + path + ": cannot make its folder " + folder.string() + ": " + ec.message());
  // A file made and removed at once: the folder takes new files (the atomic writers put a
  // temporary beside the target and rename it).
  if (folder.empty()) folder = ".";
  std::string probe = (folder / ".fgvc-write-test-XXXXXX").string();
  const int fd = ::mkstemp(probe.data());
  if (fd < 0) throw Error(flag + " " + path + ": cannot write in " + folder.string() + ": " + std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

std::vector<std::pair<std::string, std::string>> data_inputs(const std::string& flag, const std::string& path) {
  std::vector<std::pair<std::string, std::string>> inputs = {{flag, path}};
  std::error_code ec;
  if (!path.empty() && std::filesystem::is_regular_file(path, ec) && std::filesystem::path(path).extension() == ".txt")
    inputs.push_back({flag + " (its class names)", data::list_classes_path(path)});
  return inputs;
}

void refuse_data_image(const std::string& flag, const std::string& path, const std::string& data_flag,
                       const data::Dataset& data) {
  std::error_code ec;
  if (path.empty() || !std::filesystem::exists(path, ec)) return;  // a new file replaces nothing
  // By name first: one stat per image of the same file name, not one per image.
  const std::filesystem::path name = std::filesystem::path(path).filename();
  for (const data::Sample& s : data.samples)
    if (std::filesystem::path(s.path).filename() == name && std::filesystem::equivalent(path, s.path, ec))
      throw UsageError(flag + " " + path + " is an image of " + data_flag + " " + data.source +
                       ": the output would replace it; write it elsewhere");
}

namespace {
std::string output_path_problem(const std::string& path, bool folder) {
  if (path.empty()) return "an empty path";
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!folder && std::filesystem::is_directory(status)) return "'" + path + "' is a folder; name a file";
  if (folder && std::filesystem::exists(status) && !std::filesystem::is_directory(status))
    return "'" + path + "' is a file; name a folder";
  return "";
}
}  // namespace

const CLI::Validator OutputFile([](std::string& path) { return output_path_problem(path, false); }, "FILE");
const CLI::Validator OutputFolder([](std::string& path) { return output_path_problem(path, true); }, "FOLDER");
const CLI::Validator NonEmptyPath([](std::string& path) { return path.empty() ? std::string("an empty path") : ""; },
                                  "PATH");

namespace {
// "" for a model the registry knows, else what is wrong with the name.
std::string unknown_model(const std::string& model) {
  const std::vector<std::string> names = nn::model_names();
  if (std::find(names.begin(), names.end(), model) != names.end()) return "";
  std::string known;
  for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
  return "unknown model '" + model + "' (known: " + known + ")";
}
}  // namespace

void check_model_name(const std::string& model) {
  if (const std::string e = unknown_model(model); !e.empty()) throw UsageError("--model: " + e);
}

const CLI::Validator ModelName([](std::string& name) { return unknown_model(name); }, "MODEL");

void check_input_size(const std::string& model, int size, bool aux_classifier_in_training) {
  const int least = nn::min_input_size(model, aux_classifier_in_training);
  if (size >= least) return;
  std::string why = model + " needs at least " + std::to_string(least);
  if (aux_classifier_in_training && least > nn::min_input_size(model))
    why += " for its auxiliary classifier in training (--aux-weight 0 trains without it, from " +
           std::to_string(nn::min_input_size(model)) + ")";
  throw UsageError("--input-size " + std::to_string(size) + ": " + why);
}

int run(const std::string& name, const std::string& description, int argc, char** argv,
        const std::function<void(CLI::App&)>& add_options,
        const std::function<nlohmann::json(const Common&)>& body) {
  CLI::App cli(description, name);
  set_program_name(name);  // the library's warnings say which binary warned
  Common common;
  // Checked while parsing, so that a binary that runs on the CPU alone (fgvc-subset) still
  // rejects a misspelt device.
  cli.add_option("--device", common.device, "cpu, cuda or cuda:N (default: cuda when available)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            try {
              Device::parse(text);
              return std::string();
            } catch (const Error&) {
              return "expected cpu, cuda or cuda:N, got '" + text + "'";
            }
          },
          "DEVICE"));
  cli.add_flag("--json", common.json, "print one JSON object on stdout as the last line");
  add_options(cli);
  // One line, whatever a file or class name in the message holds.
  auto error_line = [&](const std::string& message) {
    std::string line;
    for (char c : message) line += c == '\n' ? "\\n" : c == '\r' ? "\\r" : std::string(1, c);
    std::cerr << name << ": error: " << line << "\n";
  };
  // "--data=" with nothing after the "=": CLI11 would take the next argument as its value (so
  // "--source= --target T" reads as --source --target, and then complains of a missing
  // --target). Refused by name instead.
  for (int k = 1; k < argc; ++k) {
    const std::string arg = argv[k];
    if (arg == "--") break;
    if (arg.size() > 3 && arg.compare(0, 2, "--") == 0 && arg.find('=') == arg.size() - 1) {
      error_line(arg.substr(0, arg.size() - 1) + " has no value after its '=' (give one, or leave the option out)");
      return 2;
    }
  }
  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return cli.exit(e);
  } catch (const CLI::RequiredError& e) {
    // CLI11 checks for required options before it checks for unknown ones; a misspelt option
    // is the likelier mistake (`--modle resnet50` leaves --model missing), so it is named first.
    // CLI11 has already set aside what it could not match (an option's value that begins with
    // "--" stays the option's); whatever follows "--" is positional.
    for (const std::string& arg : cli.remaining()) {
      if (arg == "--") break;
      if (arg.size() < 2 || arg[0] != '-') continue;
      error_line("unknown option " + arg.substr(0, arg.find('=')) + " (and " + e.what() + ")");
      return 2;
    }
    error_line(e.what());
    return 2;
  } catch (const CLI::ExtrasError& e) {
    // Worded as above: the first unknown option, else the first stray argument.
    bool after_dashes = false;
    for (const std::string& arg : cli.remaining()) {
      if (arg == "--" && !after_dashes) {
        after_dashes = true;
        continue;
      }
      if (!after_dashes && arg.size() >= 2 && arg[0] == '-') {
        error_line("unknown option " + arg.substr(0, arg.find('=')));
        return 2;
      }
    }
    for (const std::string& arg : cli.remaining())
      if (arg != "--") {
        error_line("unexpected argument '" + arg + "' (" + name + " takes options only; see --help)");
        return 2;
      }
    error_line(e.what());
    return 2;
  } catch (const CLI::ParseError& e) {
    // CLI11's "--device: At Most 1 required but received 2": an option given twice.
    const std::string what = e.what(), twice = ": At Most 1 required but received ";
    const size_t at = what.find(twice);
    if (at != std::string::npos && what.compare(0, 2, "--") == 0) {
      error_line(what.substr(0, at) + " is given " + what.substr(at + twice.size()) + " times; give it once");
      return 2;
    }
    error_line(e.what());
    return 2;
  } catch (const std::exception& e) {  // a validator or conversion that threw: still a usage error
    error_line(e.what());
    return 2;
  }
  try {
    const nlohmann::json out = body(common);
    // A path that is not UTF-8 (a Latin-1 folder name) is printed with U+FFFD for its odd bytes.
    if (common.json) std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    // Output that could not be written (a full disk, a closed pipe) is a failure, not success.
    errno = 0;
    std::cout.flush();
    if (!std::cout || std::fflush(stdout) != 0 || std::ferror(stdout)) {
      const int why = errno;  // 0 where the stream failed without a system error to name
      error_line(std::string("cannot write the output") + (why ? std::string(": ") + std::strerror(why) : ""));
      return 1;
    }
    return common.exit_code;
  } catch (const UsageError& e) {
    error_line(e.what());
    return 2;
  } catch (const std::exception& e) {
    error_line(e.what());
    return 1;
  }
}

}  // namespace app
}  // namespace fgvc
