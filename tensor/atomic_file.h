// Files that are replaced atomically: written to a temporary file in the same folder, flushed
// to disk (fsync) and renamed over the target, so a reader (or a run killed at any moment)
// sees either the old file or the new one, never a part. Checkpoints, weights, lists, CSV
// and JSON outputs are all written this way. A target that exists and is neither a regular
// file nor a folder (a pipe, /dev/stdout, a device) is written directly instead; a symbolic
// link keeps pointing at the file it names, which is the one replaced.
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
  std::string path_, file_, tmp_;  // as given (for messages); atomic_target(path_); the temporary
  int fd_ = -1;
  bool direct_ = false;  // writing the target itself (a pipe or a device)
};

// The regular file that AtomicFile(path) replaces (path, or the file a link names), or "" when
// it writes `path` in place (a pipe, a device, /dev/stdout).
std::string atomic_target(const std::string& path);

// The temporary's suffix for process `pid` on this machine: ".tmp.HOST.PID". The host makes
// it unique on a file system that several machines share (a run folder on NFS), and lets the
// tidying below judge only this machine's processes.
std::string atomic_temporary_suffix(long pid);

// The whole file at once.
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace fgvc
