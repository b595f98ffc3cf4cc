// Files that are replaced atomically: written to a temporary file in the same folder, flushed
// to disk (fsync) and renamed over the target, so a reader (or a run killed at any moment)
// sees either the old file or the new one, never a part. Checkpoints, weights, lists, CSV
// and JSON outputs are all written this way.
#pragma once
#include <cstddef>
#include <string>

namespace fgvc {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);  // creates the temporary file; throws naming `path`
  ~AtomicFile();                          // removes the temporary file unless committed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);
  void write(const std::string& s) { write(s.data(), s.size()); }
  void commit();  // fsync, close, rename over the target

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

// The whole file at once.
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace fgvc
