// Philox against the Random123 known-answer vectors, the deterministic log/sincos used for
// normals, and the properties the generator promises: same seed -> same numbers whatever
// the layout, thread count or device; the counter advances; sane statistics.
#include <omp.h>

#include <cmath>
#include <set>

#include "tensor/philox.h"
#include "tensor/random_value.h"
#include "test_util.h"

namespace fgvc {
namespace {

// Bit for bit: 0.0 and -0.0 compare equal as doubles, and the fills make both.
uint64_t bits(double x) { return __builtin_bit_cast(uint64_t, x); }

TEST(Philox, KnownAnswerVectors) {
  struct Kat {
    philox::U32x4 ctr;
    uint32_t k0, k1;
    philox::U32x4 want;
  };
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff, 0xffffffff,
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const Kat& k : kats) {
    const philox::U32x4 got = philox::philox4x32_10(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(got.v[i], k.want.v[i]) << "word " << i;
  }
}

TEST(Philox, DeterministicLogAndSincosAreAccurate) {
  for (double x : {1e-300, 5.9604644775390625e-08, 0.1, 0.5, 0.7071, 0.75, 1.0, 1.5, 2.0, 12345.678}) {
    EXPECT_NEAR(philox::log(x), std::log(x), 4e-16 * std::max(1.0, std::fabs(std::log(x)))) << x;
  }
  for (int i = 0; i < 4096; ++i) {
    const double u = i / 4096.0 + 1.0 / 65536;
    double s, c;
    philox::sincos_turns(u, &s, &c);
    EXPECT_NEAR(s, std::sin(2 * M_PI * u), 1e-15) << u;
    EXPECT_NEAR(c, std::cos(2 * M_PI * u), 1e-15) << u;
  }
}

TEST(Random, SameSeedSameNumbersNewSeedNewNumbers) {
  const Tensor a = testing::randn_t({1000}, 42), b = testing::randn_t({1000}, 42), c = testing::randn_t({1000}, 43);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  EXPECT_NE(a.to_vector<float>(), c.to_vector<float>());
}

TEST(Random, CounterAdvancesAndCanBeRestored) {
  Generator gen(7);
  const Tensor first = randn({10}, gen);
  EXPECT_EQ(gen.offset(), 3u);  // ceil(10 / 4) blocks
  const Tensor second = randn({10}, gen);
  EXPECT_NE(first.to_vector<float>(), second.to_vector<float>());
  gen.set_state(7, 3);
  EXPECT_EQ(randn({10}, gen).to_vector<float>(), second.to_vector<float>());
}

TEST(Random, IndependentOfThreadCount) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> one = testing::randn_t({1 << 16}, 5).to_vector<float>();
  omp_set_num_threads(std::max(2, saved));
  const std::vector<float> many = testing::randn_t({1 << 16}, 5).to_vector<float>();
  omp_set_num_threads(saved);
  EXPECT_EQ(one, many);
}

TEST(Random, StridedTargetGetsTheContiguousSequence) {
  Generator g1(9), g2(9);
  Tensor t = Tensor::zeros({4, 3}).transpose(0, 1);  // non-contiguous [3, 4]
  normal_(t, 0.0, 1.0, g1);
  const Tensor ref = randn({3, 4}, g2);
  EXPECT_EQ(t.contiguous().to_vector<float>(), ref.to_vector<float>());
}

TEST(Random, Float32AndFloat64NormalsAgree) {
  // Both come from the same double-precision Box-Muller value.
  const std::vector<float> f = testing::randn_t({257}, 11).to_vector<float>();
  const std::vector<double> d = testing::randn_t({257}, 11, DType::Float64).to_vector<double>();
  for (size_t i = 0; i < f.size(); ++i) EXPECT_EQ(f[i], static_cast<float>(d[i]));
}

TEST(Random, NormalStatistics) {
  const std::vector<double> v = testing::randn_t({1 << 18}, 3, DType::Float64).to_vector<double>();
  double m = 0, m2 = 0, m4 = 0;
  for (double x : v) m += x;
  m /= v.size();
  for (double x : v) {
    m2 += (x - m) * (x - m);
    m4 += std::pow(x - m, 4);
  }
  m2 /= v.size();
  m4 /= v.size();
  EXPECT_NEAR(m, 0.0, 0.01);
  EXPECT_NEAR(m2, 1.0, 0.01);
  EXPECT_NEAR(m4 / (m2 * m2), 3.0, 0.05);  // kurtosis of a normal
  // Independent neighbours: Box-Muller makes the numbers in pairs, and a pair that shared its
  // uniforms wrongly would be correlated, or its squared radius (chi-square with 2 degrees of
  // freedom: median 2 ln 2) off. Lag 1 over all neighbours, and within the pairs. (Standard
  // errors: 0.002 for the correlations, 0.0014 for the fraction.)
  double lag1 = 0, within = 0;
  int64_t below_median = 0;
  for (size_t i = 0; i + 1 < v.size(); ++i) lag1 += (v[i] - m) * (v[i + 1] - m);
  for (size_t i = 0; i + 1 < v.size(); i += 2) {
    within += (v[i] - m) * (v[i + 1] - m);
    below_median += v[i] * v[i] + v[i + 1] * v[i + 1] < 2 * std::log(2.0);
  }
  EXPECT_LT(std::abs(lag1 / (v.size() - 1) / m2), 0.01);
  EXPECT_LT(std::abs(within / (v.size() / 2) / m2), 0.01);
  EXPECT_NEAR(static_cast<double>(below_median) / (v.size() / 2), 0.5, 0.007);
  EXPECT_EQ(std::set<double>(v.begin(), v.end()).size(), v.size());  // no value twice in float64
}

TEST(Random, UniformRangeAndMean) {
  Generator gen(1);
  Tensor t = Tensor::empty({1 << 16});
  uniform_(t, -2.0, 3.0, gen);
  double m = 0;
  for (float x : t.to_vector<float>()) {
    ASSERT_GE(x, -2.0f);
    ASSERT_LT(x, 3.0f);
    m += x;
  }
  EXPECT_NEAR(m / t.numel(), 0.5, 0.03);
  Tensor d = Tensor::empty({1 << 12}, DType::Float64);
  uniform_(d, 0.0, 1.0, gen);
  std::vector<double> dv = d.to_vector<double>();
  std::sort(dv.begin(), dv.end());
  EXPECT_EQ(std::adjacent_find(dv.begin(), dv.end()), dv.end());  // 53-bit values: no ties
}

// The CPU fills block by block, the GPU element by element (random_value): the same bits.
TEST(Random, BlockFillIsTheElementwiseValue) {
  for (detail::Distribution dist : {detail::Distribution::Uniform, detail::Distribution::Normal})
    for (DType dt : {DType::Float32, DType::Float64})
      for (int64_t n : {1, 2, 3, 5, 7, 255, 256, 257, 4099, 100003}) {
        const detail::RandomFill f{dist, 1234, 77, -0.5, 2.5};
        Tensor t = Tensor::empty({n}, dt);
        detail::random_fill_cpu(t, f);
        const std::vector<double> got = t.to_vector<double>();
        for (int64_t i = 0; i < n; ++i) {
          const double want = dt == DType::Float32 ? detail::random_value<float>(dist, 1234, 77, i, -0.5, 2.5)
                                                   : detail::random_value<double>(dist, 1234, 77, i, -0.5, 2.5);
          ASSERT_EQ(bits(got[i]), bits(want)) << got[i] << " vs " << want << ", element " << i << " of " << n;
        }
      }
}

// The CPU's vectorised Box-Muller against philox::normal_pair (the GPU's, element by element),
// bit for bit: the smallest and largest radius words, those either side of m = sqrt(1/2) in
// the log, the angle words either side of each octant boundary (where sincos_turns's
// quadrant changes), and random words.
TEST(Random, VectorisedBoxMullerIsPhiloxsNormalPair) {
  std::vector<uint32_t> radius = {0u, 1u, (1u << 23) - 1, 1u << 23, 11863281u, 11863282u, 11863283u, 11863284u,
                                  (1u << 24) - 2, (1u << 24) - 1};
  std::vector<uint32_t> angle = {0u, (1u << 24) - 1, 1u << 22, 1u << 23, 3u << 22};  // quarter turns: signed zeros
  for (int octant = 1; octant < 8; octant += 2)
    for (int d = -1; d <= 1; ++d) angle.push_back(static_cast<uint32_t>((octant << 21) + d));
  for (int k = 0; k < 64; ++k) {
    const philox::U32x4 noise = philox::block(99, static_cast<uint64_t>(k));
    radius.push_back(noise.v[0] >> 8);
    angle.push_back(noise.v[1] >> 8);
  }
  std::vector<uint32_t> words;
  for (uint32_t x : radius)
    for (uint32_t y : angle) {  // each word's low 8 bits are dropped: fill them to make sure
      words.push_back((x << 8) | 0xa5u);
      words.push_back((y << 8) | 0x5au);
    }
  const int pairs = static_cast<int>(words.size() / 2);
  for (detail::VectorIsa isa : {detail::VectorIsa::Sse2, detail::VectorIsa::Avx2, detail::VectorIsa::Avx512}) {
    if (!detail::cpu_supports(isa)) {
      std::printf("instruction set %d: not on this CPU, not checked\n", static_cast<int>(isa));
      continue;
    }
    std::vector<double> r(pairs), s(pairs), c(pairs);
    detail::normal_pairs(words.data(), pairs, r.data(), s.data(), c.data(), isa);
    for (int p = 0; p < pairs; ++p) {
      const philox::U32x4 b{{words[2 * p], words[2 * p + 1], 0u, 0u}};
      double want_r, want_s, want_c;
      philox::normal_pair(b, 0, &want_r, &want_s, &want_c);
      ASSERT_EQ(bits(r[p]), bits(want_r)) << "instruction set " << static_cast<int>(isa) << ", radius word " << (words[2 * p] >> 8);
      ASSERT_EQ(bits(s[p]), bits(want_s)) << "instruction set " << static_cast<int>(isa) << ", angle word " << (words[2 * p + 1] >> 8);
      ASSERT_EQ(bits(c[p]), bits(want_c)) << "instruction set " << static_cast<int>(isa) << ", angle word " << (words[2 * p + 1] >> 8);
    }
  }
}

TEST(Random, RejectsIntegerTensors) {
  Tensor t = Tensor::zeros({3}, DType::Int64);
  EXPECT_THROW(normal_(t), Error);
}

}  // namespace
}  // namespace fgvc
