#include "tensor/warning.h"

#include <cstdarg>
#include <cstdio>
#include <vector>

namespace fgvc {

namespace {
std::string& name_storage() {
  static std::string name = "fgvc";
  return name;
}
}  // namespace

void set_program_name(const std::string& name) { name_storage() = name; }
const std::string& program_name() { return name_storage(); }

void warn(const char* format, ...) {
  va_list args;
  va_start(args, format);
  va_list again;
  va_copy(again, args);
  const int n = std::vsnprintf(nullptr, 0, format, args);
  va_end(args);
  std::string line = program_name() + ": warning: ";
  if (n > 0) {
    std::vector<char> text(static_cast<size_t>(n) + 1);
    std::vsnprintf(text.data(), text.size(), format, again);
    line.append(text.data(), static_cast<size_t>(n));
  }
  va_end(again);
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace fgvc
