// Contiguous element-by-element kernels that move 16 bytes per operand per thread (4 floats,
// 2 doubles, 8 halves): one 128-bit load or store instead of four 32-bit ones, which is what
// lets a streaming kernel reach the memory's bandwidth (one float per thread reached 50-70% of
// PyTorch's on an H200, bench/results/gpu-2026-11-27.md). Every pointer must be 16-byte aligned
// (`packable`); the n % K elements of the tail are done one by one by the first threads.
#pragma once
#include <cstdint>

#include "tensor/cuda_context.h"

namespace fgvc {
namespace detail {

template <class T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

inline bool packable(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Threads for n elements in packs (at least one per element of the tail).
template <class T>
unsigned packed_blocks(int64_t n, int threads = 256) {
  const int64_t packs = n / Pack<T>::kSize;
  return cuda::blocks_for(packs > Pack<T>::kSize ? packs : Pack<T>::kSize, threads);
}

// out[i] = f(i, x[i]) for i < n; f also gets the index (for operands indexed otherwise).
template <class T, class F>
__global__ void map1_packed(T* out, const T* x, int64_t n, F f) {
  constexpr int K = Pack<T>::kSize;
  const int64_t packs = n / K, first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t p = first; p < packs; p += int64_t(gridDim.x) * blockDim.x) {
    Pack<T> r = reinterpret_cast<const Pack<T>*>(x)[p];
#pragma unroll
    for (int k = 0; k < K; ++k) r.v[k] = f(p * K + k, r.v[k]);
    reinterpret_cast<Pack<T>*>(out)[p] = r;
  }
  const int64_t i = packs * K + first;
  if (i < n) out[i] = f(i, x[i]);
}

// out[i] = f(a[i], b[i]) for i < n.
template <class T, class F>
__global__ void map2_packed(T* out, const T* a, const T* b, int64_t n, F f) {
  constexpr int K = Pack<T>::kSize;
  const int64_t packs = n / K, first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t p = first; p < packs; p += int64_t(gridDim.x) * blockDim.x) {
    Pack<T> r = reinterpret_cast<const Pack<T>*>(a)[p];
    const Pack<T> y = reinterpret_cast<const Pack<T>*>(b)[p];
#pragma unroll
    for (int k = 0; k < K; ++k) r.v[k] = f(r.v[k], y.v[k]);
    reinterpret_cast<Pack<T>*>(out)[p] = r;
  }
  const int64_t i = packs * K + first;
  if (i < n) out[i] = f(a[i], b[i]);
}

// out[i] = value for i < n.
template <class T>
__global__ void fill_packed(T* out, T value, int64_t n) {
  constexpr int K = Pack<T>::kSize;
  const int64_t packs = n / K, first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  Pack<T> r;
#pragma unroll
  for (int k = 0; k < K; ++k) r.v[k] = value;
  for (int64_t p = first; p < packs; p += int64_t(gridDim.x) * blockDim.x) reinterpret_cast<Pack<T>*>(out)[p] = r;
  const int64_t i = packs * K + first;
  if (i < n) out[i] = value;
}

}  // namespace detail
}  // namespace fgvc
