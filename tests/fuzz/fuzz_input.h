// Shared by the fuzz targets: the input as a file (the readers under test take paths), and the
// rule that every failure must be fgvc's Error with a message, never a crash, a sanitizer
// report or any other exception (a json or std exception escaping would reach the user as an
// unexplained "terminate called").
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

#include "tensor/error.h"

namespace fgvc {
namespace fuzz {

// Writes the input to a file of this process named with `suffix` (the readers look at the
// name's extension) and returns its path. /dev/shm where it exists: no disk I/O per input.
// The files are removed when the process exits normally (libFuzzer's time limit, the replay's
// end); a crash leaves them, beside the input libFuzzer saves.
inline std::string as_file(const uint8_t* data, size_t size, const std::string& suffix) {
  static const std::string dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  static std::set<std::string>* made = [] {
    static std::set<std::string> paths;
    std::atexit([] {
      for (const std::string& p : paths) std::remove(p.c_str());
    });
    return &paths;
  }();
  const std::string path = dir + "/fgvc-fuzz-" + std::to_string(getpid()) + suffix;
  made->insert(path);
  FILE* f = std::fopen(path.c_str(), "wb");
  // (fwrite's pointer must not be null, even for 0 bytes: an empty input has none)
  if (!f || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) std::abort();
  return path;
}

// Runs `body`; an fgvc::Error is an accepted outcome if it says something.
template <class Body>
void expect_clean(Body body) {
  try {
    body();
  } catch (const Error& e) {
    if (std::string(e.what()).empty()) std::abort();
  }
}

}  // namespace fuzz
}  // namespace fgvc
