// What every fgvc-* binary shares (SPEC.md section 4): --help, --device, --json; exit 0 on
// success, 2 on a usage error, 1 on any other error, with one line
// "fgvc-NAME: error: ..." on stderr.
#pragma once
#include <CLI/CLI.hpp>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "data/dataset.h"
#include "tensor/device.h"
#include "tensor/error.h"  // fgvc::Error (exit 1), prefix_errors for the files flags name

namespace fgvc {
namespace app {

struct Common {
  std::string device = "";  // "" = cuda when available, else cpu
  bool json = false;
  // The exit status when `body` returns (its output written): fgvc-train stopped by a signal
  // before its total prints its summary and exits 1.
  mutable int exit_code = 0;
  // --device, checked (a CUDA device this machine has). make_current: a CUDA device becomes the
  // process's home (cuda_set_home_device) before anything touches CUDA; otherwise each op's
  // device guard would go back to device 0 after it and make a context there (hundreds of MB,
  // refused on a GPU in exclusive-process mode). fgvc-train passes false: under mpirun each
  // rank takes its own GPU, and the trainer makes that one current.
  Device resolved_device(bool make_current = true) const;
};

// Parses the command line (after `add_options` has declared the binary's own options) and
// runs `body`, turning errors into the exit codes and the message above. `body` returns
// the JSON object printed as the last line with --json.
int run(const std::string& name, const std::string& description, int argc, char** argv,
        const std::function<void(CLI::App&)>& add_options,
        const std::function<nlohmann::json(const Common&)>& body);

// Number checks for options, with a message a user reads ("must be > 0, got 0") rather than
// CLI11's range of 0 to the largest double. Every check refuses what is not a finite number
// (CLI11's Range lets "nan" through: it fails both of its comparisons). `integer`: whole
// numbers written as such (CLI11 cannot read "1e3" or "2.0" into an integer, and would only
// say "Could not convert").
inline std::string finite_number(const std::string& text, bool integer, double* v) {
  size_t used = 0;
  try {
    *v = std::stod(text, &used);
  } catch (const std::out_of_range&) {  // 1e400, or 1e-320 (below a double's normal range)
    return "out of a double's range: " + text;
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || used == 0 || !std::isfinite(*v)) return "not a finite number: " + text;
  // Signs first: "-5" is a number below the range, not a number that is not whole.
  if (integer && text.find_first_not_of("+-0123456789") != std::string::npos) return "not a whole number: " + text;
  return std::string();
}
inline CLI::Validator number_check(bool allow_zero, double at_most = INFINITY, bool integer = false) {
  return CLI::Validator(
      [allow_zero, at_most, integer](std::string& text) -> std::string {
        double v = 0;
        if (std::string e = finite_number(text, integer, &v); !e.empty()) return e;
        if (allow_zero ? v < 0 : v <= 0) return std::string(allow_zero ? "must be >= 0" : "must be > 0") + ", got " + text;
        if (v > at_most) return "must be at most " + std::to_string(static_cast<long long>(at_most)) + ", got " + text;
        return std::string();
      },
      std::isinf(at_most) ? std::string(integer ? "INTEGER" : "NUMBER") + (allow_zero ? " >= 0" : " > 0")
                          : std::string("INTEGER in ") + (allow_zero ? "0.." : "1..") +
                                std::to_string(static_cast<long long>(at_most)));
}
// A closed range [lo, hi] of finite numbers (whole ones with `integer`).
inline CLI::Validator range_check(double lo, double hi, bool integer = false) {
  std::ostringstream range;
  range << "[" << lo << ", " << hi << "]";
  return CLI::Validator(
      [lo, hi, integer, r = range.str()](std::string& text) -> std::string {
        double v = 0;
        if (std::string e = finite_number(text, integer, &v); !e.empty()) return e;
        if (v < lo || v > hi) return "must be in " + r + ", got " + text;
        return std::string();
      },
      std::string(integer ? "INTEGER in " : "NUMBER in ") + range.str());
}
inline const CLI::Validator Positive = number_check(false);
inline const CLI::Validator NonNegative = number_check(true);
// Sizes a user types, bounded far beyond any real use: a typo is a usage error, not a
// terabyte allocation or a shape whose element count wraps.
inline const CLI::Validator InputSize = number_check(false, 8192, true);      // --input-size (pixels)
inline const CLI::Validator ClassCount = number_check(false, 1000000, true);  // --num-classes
inline const CLI::Validator Threads = number_check(false, 1024, true);        // --workers
inline const CLI::Validator BatchSize = number_check(false, 1 << 20, true);   // --batch-size (images)
// --batch-size of a training run (fgvc-train, fgvc-demo): batch norm in training needs two
// values per channel, so a process's batch holds 2 images at least.
inline const CLI::Validator TrainingBatchSize(
    [](std::string& text) -> std::string {
      double v = 0;
      if (std::string e = finite_number(text, true, &v); !e.empty()) return e;
      if (v < 2 || v > (1 << 20))
        return "must be 2.." + std::to_string(1 << 20) +
               " (training takes at least 2 images per process: batch norm needs two values per channel), got " + text;
      return std::string();
    },
    "INTEGER in 2..1048576");
inline const CLI::Validator Count = number_check(false, 1e12, true);          // --epochs, --steps, --images
inline const CLI::Validator Repeats = number_check(false, 1000000, true);     // --repeats (an int)
inline const CLI::Validator CountOrZero = number_check(true, 1e12, true);     // --top-k, --save-every
// --seed: 0..2^64-1, read as an integer. CLI11 would store a larger number as 2^64-1 (another
// seed than the one typed, the same for all of them), and a double cannot tell the two apart.
inline const CLI::Validator Seed(
    [](std::string& text) -> std::string {
      double v = 0;
      if (std::string e = finite_number(text, true, &v); !e.empty()) return e;
      if (v < 0) return "must be >= 0, got " + text;
      errno = 0;
      std::strtoull(text.c_str(), nullptr, 10);
      if (errno == ERANGE) return "must be at most 18446744073709551615, got " + text;
      return std::string();
    },
    "INTEGER in 0..18446744073709551615");
inline const CLI::Validator Fraction = range_check(0.0, 1.0);                  // decays, momentum, smoothing

// A usage error found after parsing (exit 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An output file's folder, made where it is missing (as fgvc-train makes its --out), and
// checked to take new files: called once the flags and inputs are known to be good, before
// the long work, so that a bad call leaves no empty folder and a long evaluation is not lost
// to a folder it cannot write. Errors name `flag`. "" does nothing. An output that is one of
// the `inputs` (flag, path), the same file by any name, is a usage error: it would be replaced.
void prepare_output_file(const std::string& flag, const std::string& path,
                         const std::vector<std::pair<std::string, std::string>>& inputs = {});
// A data set's own files as inputs of prepare_output_file: `path` itself, and a list file's
// class names beside it (data::list_classes_path), which loading read too.
std::vector<std::pair<std::string, std::string>> data_inputs(const std::string& flag, const std::string& path);
// An output that is one of the images of `data` (loaded from `flag`), by any name: a usage error,
// before the work (the output would replace an image the run reads; fgvc-eval scored it).
void refuse_data_image(const std::string& flag, const std::string& path, const std::string& data_flag,
                       const data::Dataset& data);

// Path options, checked as they are parsed (a usage error, exit 2): OutputFile is not empty
// and not an existing folder, OutputFolder not empty and not an existing file; NonEmptyPath
// for inputs (an empty --data would be read as the current folder).
extern const CLI::Validator OutputFile;
extern const CLI::Validator OutputFolder;
extern const CLI::Validator NonEmptyPath;

// --model NAME: a usage error (exit 2) for a name the registry does not know, listing those
// it does; a known model that cannot be made (too many classes for memory) is an ordinary
// error (exit 1).
void check_model_name(const std::string& model);
// The same check on --model as it is parsed, so that a bad name is reported before any file
// is read (a missing --data would otherwise be the error a user sees first).
extern const CLI::Validator ModelName;

// --input-size against the model's minimum (nn::min_input_size): a usage error naming the
// flag, rather than a convolution's complaint deep inside the network.
void check_input_size(const std::string& model, int size, bool aux_classifier_in_training = false);

}  // namespace app
}  // namespace fgvc
