#include "tensor/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "tensor/error.h"

namespace fgvc {

namespace {
[[noreturn]] void fail(const std::string& path, const std::string& why) { throw Error(path + ": " + why); }

// This machine's name as a file name's part (letters, digits, '-' and '_'; '.' would blur
// where the PID starts).
std::string host_tag() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  std::string tag(name);
  for (char& c : tag)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') c = '_';
  return tag.substr(0, 64);
}

// A process killed while writing (SIGKILL, the OOM killer, a preempted job) leaves its
// PATH.tmp.HOST.PID behind, as large as a checkpoint: the next write of PATH removes those of
// this machine's processes that no longer run. Another machine's (a shared run folder) are
// never judged here: its PIDs mean nothing on this one. Errors are ignored: this only tidies up.
void remove_stale_temporaries(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const std::string prefix = target.filename().string() + ".tmp." + host_tag() + ".";
  std::error_code ec;
  const fs::path folder = target.has_parent_path() ? target.parent_path() : fs::path(".");
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) fs::remove(it->path(), ec), ec.clear();
  }
}
}  // namespace

std::string atomic_temporary_suffix(long pid) { return ".tmp." + host_tag() + "." + std::to_string(pid); }

std::string atomic_target(const std::string& path) {
  namespace fs = std::filesystem;
  std::string file = path;
  struct stat st;
  // A link: the file it names is replaced and the link stays. One into /proc (/dev/stdout is
  // /proc/self/fd/1) names whatever a descriptor holds: written in place.
  if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    std::error_code ec;
    const fs::path link = fs::read_symlink(path, ec);
    if (ec || link.string().rfind("/proc/", 0) == 0) return "";
    file = fs::weakly_canonical(path, ec).string();
    if (ec) return "";
  }
  // A pipe, a device or a terminal: never replaced by a regular file (a rename would unlink
  // the node, and a reader would get nothing).
  if (::stat(file.c_str(), &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return "";
  return file;
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), file_(atomic_target(path_)) {
  if (file_.empty()) {
    direct_ = true;
    // One of this process's own descriptors (/dev/stdout is /proc/self/fd/1): written through
    // a duplicate, which shares its offset with what the process prints there (opened anew it
    // would start at 0 and overwrite a redirected file's text).
    std::error_code ec;
    const std::string link = std::filesystem::read_symlink(path_, ec).string();
    const std::string own = "/proc/self/fd/";
    if (!ec && link.rfind(own, 0) == 0 && link.size() > own.size() &&
        link.find_first_not_of("0123456789", own.size()) == std::string::npos) {
      std::fflush(nullptr);  // what stdio holds for that descriptor goes first
      fd_ = ::fcntl(std::stoi(link.substr(own.size())), F_DUPFD_CLOEXEC, 0);
    } else {
      fd_ = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
    }
    if (fd_ < 0) fail(path_, std::string("cannot open it for writing: ") + std::strerror(errno));
    return;
  }
  remove_stale_temporaries(file_);
  tmp_ = file_ + atomic_temporary_suffix(::getpid());
  // A new file of our own (O_EXCL, O_NOFOLLOW): a link planted under the temporary's name is
  // removed, never followed.
  ::unlink(tmp_.c_str());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd_ < 0) {  // named by its folder: the temporary file's name says nothing to a user
    const std::string why = std::strerror(errno);
    const size_t slash = file_.find_last_of('/');
    fail(path_, "cannot create a file in " + (slash == std::string::npos ? std::string(".") : file_.substr(0, slash + 1)) +
                    ": " + why);
  }
  // The file it replaces keeps its permissions (a private checkpoint stays private).
  struct stat st;
  if (::stat(file_.c_str(), &st) == 0) ::fchmod(fd_, st.st_mode & 07777);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    if (!direct_) ::unlink(tmp_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t bytes) {
  FGVC_CHECK(fd_ >= 0, "AtomicFile", path_, ": already committed");
  const char* c = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t w = ::write(fd_, c, bytes);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail(path_, std::string("write failed: ") + std::strerror(errno));
    c += w;
    bytes -= static_cast<size_t>(w);
  }
}

void AtomicFile::commit() {
  FGVC_CHECK(fd_ >= 0, "AtomicFile", path_, ": already committed");
  const int fd = fd_;
  fd_ = -1;
  if (direct_) {  // nothing to sync or rename; a failed close still loses data
    if (::close(fd) != 0) fail(path_, std::string("close failed: ") + std::strerror(errno));
    return;
  }
  const bool synced = ::fsync(fd) == 0;
  const int sync_errno = errno;
  const bool closed = ::close(fd) == 0;  // always closed, whether fsync worked or not
  if (!synced || !closed) {
    const std::string why = std::strerror(synced ? errno : sync_errno);
    ::unlink(tmp_.c_str());
    fail(path_, "fsync/close failed: " + why);
  }
  if (::rename(tmp_.c_str(), file_.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp_.c_str());
    fail(path_, "rename failed: " + why);
  }
  // The rename is durable once its folder is synced: without it a power cut could bring back
  // the old file after a run logged the new one. (EINVAL: a file system that cannot sync a
  // folder; nothing more to do there.)
  const size_t slash = file_.find_last_of('/');
  const std::string folder = slash == std::string::npos ? "." : slash == 0 ? "/" : file_.substr(0, slash);
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    const bool ok = ::fsync(dir) == 0 || errno == EINVAL;
    const std::string why = std::strerror(errno);
    ::close(dir);
    if (!ok) fail(path_, "fsync of its folder failed: " + why);
  }
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  AtomicFile f(path);
  f.write(contents);
  f.commit();
}

}  // namespace fgvc
