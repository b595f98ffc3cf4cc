// PNG plots of a run folder (SPEC.md section 5), drawn by train/chart.h from the run's
// metrics.jsonl and per_class.csv:
//   loss.png       training loss per logged step
//   accuracy.png   each epoch's training top-1 (its batches as trained on) and, when the run
//                  had --val, validation top-1 (and top-5, dashed)
//   per_class.png  per-class validation top-1 against training images per class (bars), the
//                  classes sorted by their number of training images (the paper's Figs. 2, 4)
#pragma once
#include <istream>
#include <string>
#include <vector>

namespace fgvc {
namespace train {

// The plots of run_dir, written into it. Returns "" on success, else a line saying what failed.
std::string make_plots(const std::string& run_dir);
// How several runs share a set of plots.
struct PlotOptions {
  // Each run's steps follow the one before's (stage 2 fine-tuning after stage 1), rather than
  // every run starting at step 0 (runs compared side by side).
  bool one_after_another = false;
  std::string evaluated_on = "validation";  // what the evaluation set is called in the labels
};
// Several runs in one set of plots (a curve each, e.g. stage 1 and stage 2), into out_dir.
std::string make_plots(const std::vector<std::string>& run_dirs, const std::string& out_dir,
                       const PlotOptions& options = {});

// CSV records as per_class.csv is written (train/evaluate.h): fields split at unquoted
// commas, records at unquoted line ends; a quoted field may hold commas, "" for a quote,
// and line breaks.
std::vector<std::vector<std::string>> read_csv(std::istream& in);

}  // namespace train
}  // namespace fgvc
