#include "tensor/random.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "fgvc/config.h"
#include "tensor/dispatch.h"
#include "tensor/random_value.h"

namespace fgvc {

Generator& default_generator() {
  static Generator gen(0);
  return gen;
}

void manual_seed(uint64_t seed) { default_generator().set_state(seed, 0); }

namespace detail {

namespace {

// Box-Muller for many pairs at once: philox::normal_pair's operations (philox::log,
// philox::sincos_turns) in the same order, so the same bits, with frexp read off the
// exponent's bits and the floor of a positive number taken by truncation, so that the
// compiler can compute neighbouring pairs side by side in vector registers (this file is
// built without trapping maths and errno, CMakeLists.txt, which lets GCC turn the selects
// into blends; neither changes a value). One pair at a time, each pair's 19 divisions (one
// in the log, two chains of 9 in the sine's and cosine's series) waited on the divider: 90%
// of the time to build a ResNet went there.
// Inlined into one copy per instruction set below; correctly rounded operations and no
// contraction give every copy the same bits.
inline __attribute__((always_inline)) void box_muller(const uint32_t* words, int pairs, double* r, double* s,
                                                      double* c) {
  constexpr double kTwoPowMinus24 = 5.9604644775390625e-08, kLn2 = 0.69314718055994530942;
  constexpr double kTwoPi = 6.28318530717958647692;
#pragma omp simd
  for (int p = 0; p < pairs; ++p) {
    // Both words have 24 random bits: exact as int, then as double.
    const double u1 = static_cast<double>(static_cast<int>((words[2 * p] >> 8) + 1u)) * kTwoPowMinus24;  // (0, 1]
    const double u2 = static_cast<double>(static_cast<int>(words[2 * p + 1] >> 8)) * kTwoPowMinus24;     // [0, 1)
    // philox::log(u1): u1 = m 2^e with m in [1/2, 1) (u1 is a normal number), then in [sqrt(1/2), sqrt(2)).
    const uint64_t bits = __builtin_bit_cast(uint64_t, u1);
    int e = static_cast<int>(bits >> 52) - 1022;
    double m = __builtin_bit_cast(double, (bits & 0x000fffffffffffffull) | (1022ull << 52));
    const bool low = m < 0.70710678118654752;
    m = low ? m * 2.0 : m;
    e = low ? e - 1 : e;
    const double t = (m - 1.0) / (m + 1.0);
    const double t2 = t * t;
    double poly = 1.0 / 23.0;
#pragma GCC unroll 16
    for (int k = 21; k >= 1; k -= 2) poly = poly * t2 + 1.0 / k;
    r[p] = std::sqrt(-2.0 * (static_cast<double>(e) * kLn2 + 2.0 * (t * poly)));
    // philox::sincos_turns(u2)
    const int q = static_cast<int>(u2 * 4.0 + 0.5);
    const double x = (u2 + -0.25 * q) * kTwoPi;
    const double x2 = x * x;
    double sp = 1.0, cp = 1.0;
#pragma GCC unroll 16
    for (int k = 18; k >= 2; k -= 2) {
      sp = 1.0 + -(sp * x2) / ((k + 1.0) * k);
      cp = 1.0 + -(cp * x2) / (k * (k - 1.0));
    }
    const double sn = x * sp;
    const int quadrant = q & 3;
    s[p] = quadrant == 0 ? sn : quadrant == 1 ? cp : quadrant == 2 ? -sn : -cp;
    c[p] = quadrant == 0 ? cp : quadrant == 1 ? -sn : quadrant == 2 ? -cp : sn;
  }
}

// Measured on the development VM's AVX-512 cores, 16M normals on 2 threads: 237 ms one
// pair at a time, 111 ms with SSE2 vectors, 65 ms AVX2, 53 ms AVX-512 (PyTorch's normal_: 51 ms).
#if defined(__x86_64__)  // elsewhere (aarch64) the compiler's own vectors, one copy
__attribute__((target("avx512f"))) void box_muller_avx512(const uint32_t* w, int pairs, double* r, double* s,
                                                          double* c) {
  box_muller(w, pairs, r, s, c);
}
__attribute__((target("avx2"))) void box_muller_avx2(const uint32_t* w, int pairs, double* r, double* s, double* c) {
  box_muller(w, pairs, r, s, c);
}
#endif
void box_muller_sse2(const uint32_t* w, int pairs, double* r, double* s, double* c) { box_muller(w, pairs, r, s, c); }

}  // namespace

bool cpu_supports(VectorIsa isa) {
#if defined(__x86_64__)  // both also ask whether the OS saves the wider registers (XCR0)
  switch (isa) {
    case VectorIsa::Avx512: return __builtin_cpu_supports("avx512f");
    case VectorIsa::Avx2: return __builtin_cpu_supports("avx2");
    default: return true;
  }
#else
  return isa == VectorIsa::Sse2;
#endif
}

namespace {

// The copy for `isa`, which the CPU is known to have.
void box_muller_for(VectorIsa isa, const uint32_t* words, int pairs, double* r, double* s, double* c) {
#if defined(__x86_64__)
  if (isa == VectorIsa::Avx512) return box_muller_avx512(words, pairs, r, s, c);
  if (isa == VectorIsa::Avx2) return box_muller_avx2(words, pairs, r, s, c);
#endif
  box_muller_sse2(words, pairs, r, s, c);
}

}  // namespace

void normal_pairs(const uint32_t* words, int pairs, double* r, double* s, double* c, VectorIsa isa) {
  FGVC_CHECK(cpu_supports(isa), "normal_pairs", "this CPU lacks the instruction set asked for");
  box_muller_for(isa, words, pairs, r, s, c);
}

namespace {

// Normals a chunk of Philox blocks at a time: the blocks' words, then their pairs at once.
template <class T>
void normal_fill_cpu(T* out, int64_t n, const RandomFill& f) {
  constexpr int kBlocks = 64;  // 256 values a chunk
  const int64_t chunks = (n + 4 * kBlocks - 1) / (4 * kBlocks);
  static const VectorIsa isa = cpu_supports(VectorIsa::Avx512) ? VectorIsa::Avx512
                               : cpu_supports(VectorIsa::Avx2) ? VectorIsa::Avx2
                                                               : VectorIsa::Sse2;
#pragma omp parallel for if (n > (1 << 14)) schedule(static)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t first = chunk * 4 * kBlocks;
    const int count = static_cast<int>(std::min<int64_t>(4 * kBlocks, n - first));
    const int blocks = (count + 3) / 4;
    uint32_t words[4 * kBlocks];
    for (int k = 0; k < blocks; ++k) {
      const philox::U32x4 blk = philox::block(f.seed, f.first_block + static_cast<uint64_t>(chunk * kBlocks + k));
      std::memcpy(words + 4 * k, blk.v, sizeof blk.v);
    }
    double r[2 * kBlocks], s[2 * kBlocks], c[2 * kBlocks];
    box_muller_for(isa, words, 2 * blocks, r, s, c);  // isa was checked once, above
    T* o = out + first;
    for (int p = 0; 2 * p < count; ++p) {  // lane 2p takes the cosine, lane 2p + 1 the sine
      o[2 * p] = static_cast<T>(philox::add(f.a, philox::mul(f.b, philox::mul(r[p], c[p]))));
      if (2 * p + 1 < count) o[2 * p + 1] = static_cast<T>(philox::add(f.a, philox::mul(f.b, philox::mul(r[p], s[p]))));
    }
  }
}

// Uniforms block by block (uniform_block): each Philox block once, where the GPU kernel
// computes each element on its own; the values are the same bits.
template <class T>
void random_fill_cpu_typed(const Tensor& t, const RandomFill& f) {
  const int64_t n = t.numel();
  T* p = static_cast<T*>(t.data_ptr());
  if (f.dist == Distribution::Normal) return normal_fill_cpu(p, n, f);
  const int per_block = sizeof(T) == 8 ? 2 : 4;
  const int64_t blocks = (n + per_block - 1) / per_block;
#pragma omp parallel for if (n > (1 << 14)) schedule(static)
  for (int64_t k = 0; k < blocks; ++k)
    uniform_block<T>(f.seed, f.first_block, k, f.a, f.b, p + k * per_block,
                     static_cast<int>(std::min<int64_t>(per_block, n - k * per_block)));
}
}  // namespace

void random_fill_cpu(const Tensor& t, const RandomFill& f) {
  FGVC_DISPATCH_FLOAT(t.dtype(), "random", T, random_fill_cpu_typed<T>(t, f));
}

}  // namespace detail

namespace {

void random_fill(Tensor& t, detail::Distribution dist, double a, double b, Generator& gen, const char* op) {
  FGVC_CHECK(t.defined() && (t.dtype() == DType::Float32 || t.dtype() == DType::Float64), op,
             "needs a float32 or float64 tensor, got ", describe(t));
  const int64_t n = t.numel();
  const uint64_t per_block = (dist == detail::Distribution::Uniform && t.dtype() == DType::Float64) ? 2 : 4;
  const detail::RandomFill f{dist, gen.seed(), gen.take(static_cast<uint64_t>((n + per_block - 1) / per_block)), a, b};
  // Fill a contiguous tensor in element order, then lay it into t's strides if needed.
  Tensor dst = t.is_contiguous() ? t : Tensor::empty(t.shape(), t.dtype(), t.device());
  if (dst.device().is_cpu()) {
    detail::random_fill_cpu(dst, f);
  } else {
    detail::random_fill_cuda(dst, f);
  }
  if (dst.same(t)) {
    t.bump_version();
  } else {
    t.copy_(dst);
  }
}

}  // namespace

void uniform_(Tensor& t, double low, double high, Generator& gen) {
  random_fill(t, detail::Distribution::Uniform, low, high, gen, "uniform_");
}
void normal_(Tensor& t, double mean, double stddev, Generator& gen) {
  random_fill(t, detail::Distribution::Normal, mean, stddev, gen, "normal_");
}

Tensor rand(const Shape& shape, Generator& gen, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  uniform_(t, 0.0, 1.0, gen);
  return t;
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  normal_(t, 0.0, 1.0, gen);
  return t;
}

#if !FGVC_WITH_CUDA
void detail::random_fill_cuda(const Tensor& t, const RandomFill&) {
  throw Error("random: cannot fill " + describe(t) + ": fgvc was built without CUDA");
}
#endif

}  // namespace fgvc
