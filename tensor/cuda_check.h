// One check macro per CUDA library (STYLE.md 7): the failing expression, file:line and the
// library's message, thrown as fgvc::Error. *_NOTHROW variants are for destructors.
// Internal header: only CUDA-enabled translation units include it.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdio>

#include "tensor/error.h"

#define FGVC_CUDA_CHECK(expr)                                                                 \
  do {                                                                                        \
    cudaError_t fgvc_err_ = (expr);                                                           \
    if (fgvc_err_ != cudaSuccess) {                                                           \
      cudaGetLastError();                                                                     \
      throw ::fgvc::Error(::fgvc::detail::concat("CUDA error: ", #expr, " failed at ", __FILE__, \
                                                 ":", __LINE__, ": ",                        \
                                                 cudaGetErrorString(fgvc_err_)));            \
    }                                                                                         \
  } while (0)

#define FGVC_CUDA_CHECK_NOTHROW(expr)                                                       \
  do {                                                                                      \
    cudaError_t fgvc_err_ = (expr);                                                         \
    if (fgvc_err_ != cudaSuccess)                                                           \
      std::fprintf(stderr, "fgvc: CUDA error: %s failed at %s:%d: %s\n", #expr, __FILE__,   \
                   __LINE__, cudaGetErrorString(fgvc_err_));                                \
  } while (0)

// After every kernel launch.
#define FGVC_CHECK_LAUNCH() FGVC_CUDA_CHECK(cudaGetLastError())
