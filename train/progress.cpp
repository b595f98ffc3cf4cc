#include "train/progress.h"

#include <unistd.h>

#include <cmath>

namespace fgvc {
namespace train {

Progress::Progress(bool enabled, std::FILE* out)
    : enabled_(enabled), tty_(enabled && ::isatty(::fileno(out)) == 1), out_(out) {}

Progress::~Progress() {
  if (enabled_ && tty_ && shown_ > 0) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
}

void Progress::status(const std::string& text, bool log) {
  if (!enabled_) return;
  if (tty_) {
    std::fprintf(out_, "\r%s", text.c_str());
    if (text.size() < shown_) std::fprintf(out_, "%*s", static_cast<int>(shown_ - text.size()), "");
    shown_ = text.size();
  } else if (log) {
    std::fprintf(out_, "%s\n", text.c_str());
  }
  std::fflush(out_);
}

void Progress::line(const std::string& text) {
  if (!enabled_) return;
  if (tty_ && shown_ > 0) std::fprintf(out_, "\r%*s\r", static_cast<int>(shown_), "");
  shown_ = 0;
  std::fprintf(out_, "%s\n", text.c_str());
  std::fflush(out_);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

}  // namespace train
}  // namespace fgvc
