// Counter-based random numbers (Philox4x32-10, tensor/philox.h). A Generator is a seed and
// a counter of 128-bit blocks used so far; each fill takes the next blocks and advances the
// counter by the same amount on every device, so the same seed gives the same tensor on the
// CPU and on the GPU, bit for bit, whatever the thread count.
//
// Element i of a fill uses block (counter + i/4), word i%4 (uniform float32, normal),
// or block (counter + i/2), words 2(i%2) and 2(i%2)+1 (uniform float64: 53 random bits).
#pragma once
#include <cstdint>

#include "tensor/tensor.h"

namespace fgvc {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
  }
  // Reserves `blocks` blocks and returns the first one's index.
  uint64_t take(uint64_t blocks) {
    const uint64_t first = offset_;
    offset_ += blocks;
    return first;
  }

 private:
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
};

Generator& default_generator();
void manual_seed(uint64_t seed);  // resets the default generator

// In-place fills of a floating tensor (any device, any strides).
void uniform_(Tensor& t, double low = 0.0, double high = 1.0, Generator& gen = default_generator());
void normal_(Tensor& t, double mean = 0.0, double stddev = 1.0, Generator& gen = default_generator());

Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::Float32, Device device = Device::cpu());
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::Float32, Device device = Device::cpu());

namespace detail {
enum class Distribution { Uniform, Normal };
struct RandomFill {
  Distribution dist;
  uint64_t seed, first_block;
  double a, b;  // low/high or mean/stddev
};
void random_fill_cpu(const Tensor& t, const RandomFill& f);
// The CPU fill's Box-Muller for many pairs at once (pair p from words 2p and 2p + 1): radius,
// sine and cosine, the same bits as philox::normal_pair's (and so as the GPU's), in a copy
// compiled for each of these instruction sets (the fill takes the best the CPU has).
enum class VectorIsa { Sse2, Avx2, Avx512 };
bool cpu_supports(VectorIsa isa);
void normal_pairs(const uint32_t* words, int pairs, double* r, double* s, double* c, VectorIsa isa);
void random_fill_cuda(const Tensor& t, const RandomFill& f);
}  // namespace detail

}  // namespace fgvc
