// Errors: one exception type and one check macro for the whole library.
// Public entry points validate shapes, dtypes and devices here, once, and throw an
// fgvc::Error whose message starts with the op's name (STYLE.md, "check, then call").
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace fgvc {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// The device's memory ran out (tensor/cuda_allocator.cpp): a caller with a smaller way to do
// its work (a cuDNN algorithm with less workspace) catches this one.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

// Runs `f` with `context` put before the message of any Error it throws: for a call that
// reads the file a flag names, "--weights: safetensors: w.safetensors: cannot open", so that
// the message says which flag to fix where two flags take the same kind of file.
template <class F>
auto prefix_errors(const std::string& context, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const OutOfMemory&) {
    throw;  // kept as it is: callers catch it by type
  } catch (const Error& e) {
    throw Error(context + ": " + e.what());
  }
}

}  // namespace fgvc

// FGVC_CHECK(cond, "op", "message ", value, ...) throws fgvc::Error("op: message value...").
#define FGVC_CHECK(cond, op, ...)                                            \
  do {                                                                       \
    if (!(cond)) throw ::fgvc::Error(::fgvc::detail::concat(op, ": ", __VA_ARGS__)); \
  } while (0)
