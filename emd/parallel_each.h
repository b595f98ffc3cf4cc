// A loop over independent problems spread over the OpenMP threads, for the library's .cpp
// files (compiled with OpenMP): the GPU solver's host-side starts, several CPU solves.
#pragma once
#include <cstdint>
#include <exception>
#include <utility>
#include <vector>

namespace fgvc {
namespace emd {
namespace detail {

// Runs body(q) for q in [0, count). An exception must not leave a parallel region, so each
// is kept; the lowest failing index and its exception come back (-1 and null when all
// succeeded).
template <class Body>
std::pair<int64_t, std::exception_ptr> parallel_each(int64_t count, Body body) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(count));
#pragma omp parallel for schedule(dynamic) if (count > 1)
  for (int64_t q = 0; q < count; ++q) {
    try {
      body(q);
    } catch (...) {
      errors[q] = std::current_exception();
    }
  }
  for (int64_t q = 0; q < count; ++q)
    if (errors[q]) return {q, errors[q]};
  return {-1, nullptr};
}

}  // namespace detail
}  // namespace emd
}  // namespace fgvc
