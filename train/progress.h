// The training progress on stderr: on a terminal, one line redrawn in place (step, loss,
// images/s, ETA); otherwise (a log file, CI) plain lines, one per call of line().
#pragma once
#include <cstdio>
#include <string>

namespace fgvc {
namespace train {

class Progress {
 public:
  explicit Progress(bool enabled, std::FILE* out = stderr);
  // A status line left on a terminal is ended, so that what is printed next (the summary,
  // an error line after Ctrl-C or a failure) starts on a line of its own.
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  // The status; on a terminal it replaces the previous one, else it is printed only when
  // `log` (so a log gets one line per logging interval).
  void status(const std::string& text, bool log);
  // A line that stays (epoch results, messages).
  void line(const std::string& text);
  bool terminal() const { return tty_; }

 private:
  bool enabled_, tty_;
  std::FILE* out_;
  size_t shown_ = 0;  // width of the status line on screen
};

// "1:02:03" / "4:05".
std::string format_duration(double seconds);

}  // namespace train
}  // namespace fgvc
