// PNG plots of a run folder (SPEC.md section 5) by scripts/plot_run.py with Debian's
// python3-matplotlib: loss.png (training loss), accuracy.png (validation top-1/top-5 per
// epoch) and per_class.png (per-class accuracy against training images per class, classes
// sorted by frequency, as the paper's Figs. 2 and 4).
#pragma once
#include <string>
#include <vector>

namespace fgvc {
namespace train {

// The plotting script: $FGVC_PLOT_SCRIPT, else the source tree's, else the installed copy.
std::string plot_script();
// Runs the script on run_dir. Returns "" on success, else a line saying what is missing and
// the command to run by hand.
std::string make_plots(const std::string& run_dir);
// Several runs in one set of plots (a curve each, e.g. stage 1 and stage 2), into out_dir.
std::string make_plots(const std::vector<std::string>& run_dirs, const std::string& out_dir);

}  // namespace train
}  // namespace fgvc
