// Exceptions inside an OpenMP parallel region. One that leaves the region ends the process
// (std::terminate): a host allocation that fails inside a convolution would kill a training
// run with "terminate called ...", where it should be an fgvc::Error that the run reports,
// as it does outside a region. Work that can throw runs through RegionErrors::run, which keeps
// the first exception; the threads then skip what is left of their work, and the caller
// rethrows once the region is over.
//
//   RegionErrors errors;
//   #pragma omp parallel for
//   for (int64_t i = 0; i < n; ++i) errors.run([&] { work(i); });
//   errors.rethrow();
#pragma once
#include <atomic>
#include <exception>
#include <mutex>

namespace fgvc {

class RegionErrors {
 public:
  // Runs f() unless a call has failed already; what it throws is kept, not thrown. Whether
  // f() ran to its end (a thread's setup that failed leaves that thread's share undone).
  template <class F>
  bool run(F&& f) noexcept {
    if (failed()) return false;
    try {
      f();
      return true;
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!first_) first_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
      return false;
    }
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  // After the region: throws the first exception kept, if any.
  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::mutex mu_;
  std::exception_ptr first_;
  std::atomic<bool> failed_{false};
};

}  // namespace fgvc
