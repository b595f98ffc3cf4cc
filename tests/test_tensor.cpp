// Tensor metadata, views, copies, dtype conversion and factories.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "tensor/block_pool.h"
#include "tensor/half.h"
#include "test_util.h"

namespace fgvc {
namespace {

using testing::randn_t;

TEST(Tensor, FactoriesAndMetadata) {
  Tensor t = Tensor::full({2, 3, 4}, 1.5);
  EXPECT_EQ(t.shape(), (Shape{2, 3, 4}));
  EXPECT_EQ(t.strides(), (Strides{12, 4, 1}));
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.dim(), 3);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.dtype(), DType::Float32);
  EXPECT_TRUE(t.device().is_cpu());
  for (float v : t.to_vector<float>()) EXPECT_EQ(v, 1.5f);
  EXPECT_EQ(Tensor::arange(5).to_vector<float>(), (std::vector<float>{0, 1, 2, 3, 4}));
  EXPECT_EQ(Tensor::scalar(3.0, DType::Int64).item<int64_t>(), 3);
  EXPECT_EQ(Tensor::zeros({0, 3}).numel(), 0);
  // A size from a flag or a file that overflows is an error, not a wrapped count.
  EXPECT_THROW(numel({int64_t(1) << 40, int64_t(1) << 40}), Error);
  EXPECT_THROW(Tensor::empty({int64_t(1) << 31, int64_t(1) << 31}, DType::Float32), Error);
  EXPECT_EQ(numel({int64_t(1) << 31, int64_t(1) << 31}), int64_t(1) << 62);
  EXPECT_FALSE(Tensor().defined());
}

TEST(Tensor, StorageIsSharedByViewsAndCopiedByClone) {
  Tensor a = Tensor::arange(6).reshape({2, 3});
  Tensor v = a.view({3, 2});
  Tensor c = a.clone();
  a.fill_(7.0);
  EXPECT_EQ(v.to_vector<float>(), std::vector<float>(6, 7.0f));
  EXPECT_EQ(c.to_vector<float>(), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(a.storage().get(), v.storage().get());
  EXPECT_NE(a.storage().get(), c.storage().get());
}

TEST(Tensor, TransposePermuteAndContiguous) {
  Tensor a = Tensor::arange(24).reshape({2, 3, 4});
  Tensor p = a.permute({2, 0, 1});  // [4, 2, 3]
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_FALSE(p.is_contiguous());
  const std::vector<float> pv = p.contiguous().to_vector<float>();
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t k = 0; k < 3; ++k) EXPECT_EQ(pv[(i * 2 + j) * 3 + k], static_cast<float>(j * 12 + k * 4 + i));
  Tensor t = a.transpose(0, 2);
  EXPECT_EQ(t.shape(), (Shape{4, 3, 2}));
  EXPECT_EQ(t.contiguous().to_vector<float>()[1], 12.0f);  // t[0,0,1] = a[1,0,0]
  EXPECT_THROW(p.view({24}), Error);                       // view needs contiguity
  EXPECT_EQ(p.reshape({24}).to_vector<float>(), pv);       // reshape copies
}

TEST(Tensor, SliceSelectExpandSqueeze) {
  Tensor a = Tensor::arange(20).reshape({4, 5});
  Tensor s = a.slice(1, 1, 5, 2);  // columns 1, 3
  EXPECT_EQ(s.shape(), (Shape{4, 2}));
  EXPECT_EQ(s.contiguous().to_vector<float>(), (std::vector<float>{1, 3, 6, 8, 11, 13, 16, 18}));
  EXPECT_EQ(a.slice(0, -2, 100).shape(), (Shape{2, 5}));
  EXPECT_EQ(a.select(0, 2).to_vector<float>(), (std::vector<float>{10, 11, 12, 13, 14}));
  EXPECT_EQ(a.select(1, -1).to_vector<float>(), (std::vector<float>{4, 9, 14, 19}));
  Tensor row = Tensor::arange(3).reshape({1, 3});
  Tensor e = row.expand({2, 3});
  EXPECT_EQ(e.strides()[0], 0);
  EXPECT_EQ(e.contiguous().to_vector<float>(), (std::vector<float>{0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(row.squeeze(0).shape(), (Shape{3}));
  EXPECT_EQ(row.unsqueeze(2).shape(), (Shape{1, 3, 1}));
  EXPECT_EQ(Tensor::arange(3).unsqueeze(0).shape(), (Shape{1, 3}));
  EXPECT_THROW(row.expand({2, 4}), Error);
  EXPECT_THROW(a.select(0, 4), Error);
}

TEST(Tensor, ReshapeInfersOneAxis) {
  Tensor a = randn_t({2, 3, 4}, 1);
  EXPECT_EQ(a.reshape({-1, 4}).shape(), (Shape{6, 4}));
  EXPECT_THROW(a.reshape({-1, -1}), Error);
  EXPECT_THROW(a.reshape({5, -1}), Error);
  EXPECT_THROW(a.reshape({7}), Error);
  // Its errors under its own name, also on a strided tensor (which reshape copies first).
  for (const Tensor& t : {a, a.transpose(0, 2)}) {
    try {
      t.reshape({7});
      ADD_FAILURE() << "reshape to 7 elements";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind("Tensor::reshape: ", 0), 0u) << e.what();
    }
  }
}

TEST(Tensor, CastsBetweenAllDtypes) {
  Tensor x = Tensor::from_vector(std::vector<double>{-2.75, -1.0, 0.0, 0.5, 3.25, 254.6}, {6});
  EXPECT_EQ(x.to(DType::Int64).to_vector<int64_t>(), (std::vector<int64_t>{-2, -1, 0, 0, 3, 254}));
  EXPECT_EQ(x.to(DType::UInt8).to_vector<uint8_t>(), (std::vector<uint8_t>{0, 0, 0, 0, 3, 254}));  // saturates
  EXPECT_EQ(x.to(DType::Float32).to(DType::Float64).to_vector<double>(),
            (std::vector<double>{-2.75, -1.0, 0.0, 0.5, 3.25, static_cast<float>(254.6)}));
  // bf16/fp16 keep values they can represent exactly.
  Tensor exact = Tensor::from_vector(std::vector<float>{-2.75f, 0.5f, 3.25f, 1024.0f}, {4});
  EXPECT_EQ(exact.to(DType::BFloat16).to(DType::Float32).to_vector<float>(), exact.to_vector<float>());
  EXPECT_EQ(exact.to(DType::Float16).to(DType::Float32).to_vector<float>(), exact.to_vector<float>());
  Tensor big = Tensor::from_vector(std::vector<double>{1e30, -1e30, NAN}, {3});
  const std::vector<int64_t> sat = big.to(DType::Int64).to_vector<int64_t>();
  EXPECT_GT(sat[0], 0);
  EXPECT_LT(sat[1], 0);
  EXPECT_EQ(sat[2], 0);
}

TEST(Tensor, HalfConversionsRoundToNearestEven) {
  // bfloat16: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> even (1); 1 + 3*2^-8 -> 1 + 2^-6.
  EXPECT_EQ(float_to_bf16(1.0f + 1.0f / 256), 0x3F80);
  EXPECT_EQ(float_to_bf16(1.0f + 3.0f / 256), 0x3F82);
  EXPECT_EQ(bf16_to_float(0x3F82), 1.0f + 1.0f / 64);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  // float16: exact normal, max, overflow, the smallest subnormal, underflow, halfway ties.
  EXPECT_EQ(float_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(float_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(float_to_fp16(65520.0f), 0x7C00);
  EXPECT_EQ(float_to_fp16(65519.0f), 0x7BFF);
  EXPECT_EQ(float_to_fp16(5.9604644775390625e-08f), 0x0001);
  EXPECT_EQ(float_to_fp16(2.98023223876953125e-08f), 0x0000);  // 2^-25: tie, rounds to even 0
  EXPECT_EQ(float_to_fp16(-2.0f), 0xC000);
  EXPECT_EQ(float_to_fp16(1.0f + 1.0f / 2048), 0x3C00);  // tie -> even
  EXPECT_EQ(float_to_fp16(1.0f + 3.0f / 2048), 0x3C02);
  EXPECT_EQ(float_to_fp16(INFINITY), 0x7C00);
  EXPECT_TRUE(std::isnan(fp16_to_float(float_to_fp16(NAN))));
  // Every finite float16 survives the round trip.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00) continue;
    ASSERT_EQ(float_to_fp16(fp16_to_float(static_cast<uint16_t>(h))), h) << h;
  }
  EXPECT_EQ(fp16_to_float(0x0001), 5.9604644775390625e-08f);
  EXPECT_EQ(fp16_to_float(0x3555), 0.333251953125f);
}

TEST(Tensor, StridedCopyIntoAView) {
  Tensor dst = Tensor::zeros({3, 4});
  Tensor src = Tensor::arange(6).reshape({3, 2});
  dst.slice(1, 1, 3).copy_(src);
  EXPECT_EQ(dst.to_vector<float>(), (std::vector<float>{0, 0, 1, 0, 0, 2, 3, 0, 0, 4, 5, 0}));
  Tensor dst64 = Tensor::zeros({2, 3}, DType::Float64);
  dst64.copy_(src.transpose(0, 1));  // strided source, converting copy
  EXPECT_EQ(dst64.to_vector<double>(), (std::vector<double>{0, 2, 4, 1, 3, 5}));
  EXPECT_THROW(dst.copy_(src), Error);  // shapes differ
}

// An expanded destination names one element many times: which write would land is up to the
// threads, so the copy is refused (a size-1 axis with stride 0 is fine).
TEST(Tensor, CopyIntoAnExpandedDestinationIsAnError) {
  Tensor base = Tensor::zeros({3}, DType::Float32);
  Tensor wide = base.expand({4, 3});
  EXPECT_THROW(wide.copy_(testing::randn_t({4, 3}, 1)), Error);
  EXPECT_EQ(base.to_vector<float>(), std::vector<float>(3, 0.0f));
  Tensor one_row = base.expand({1, 3});  // stride 0 along a size-1 axis: no element shared
  ASSERT_EQ(one_row.strides()[0], 0);
  const Tensor src = testing::randn_t({1, 3}, 2);
  one_row.copy_(src);
  EXPECT_EQ(base.to_vector<float>(), src.to_vector<float>());
}

// Copies between views of one memory that overlap: through a snapshot of the source (the
// result a separate source would give), and a view onto itself is left as it is.
TEST(Tensor, CopyBetweenOverlappingViews) {
  Tensor x = Tensor::arange(16).reshape({2, 8});
  x.slice(1, 1, 8).copy_(x.slice(1, 0, 7));  // shift right by one
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{0, 0, 1, 2, 3, 4, 5, 6, 8, 8, 9, 10, 11, 12, 13, 14}));
  Tensor y = Tensor::arange(6);
  y.slice(0, 0, 5).copy_(y.slice(0, 1, 6));  // shift left, a contiguous (memcpy) copy
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 5}));
  Tensor z = Tensor::arange(4).reshape({2, 2});
  z.copy_(z.transpose(0, 1));  // the same bytes, another order
  EXPECT_EQ(z.to_vector<float>(), (std::vector<float>{0, 2, 1, 3}));
  z.copy_(z);
  EXPECT_EQ(z.to_vector<float>(), (std::vector<float>{0, 2, 1, 3}));
}

// Tensors without elements are contiguous, so they view and reshape like any other.
TEST(Tensor, EmptyTensorsAreContiguous) {
  const Tensor e = Tensor::zeros({2, 0, 3});
  EXPECT_TRUE(e.is_contiguous());
  EXPECT_EQ(e.reshape({0, 3}).shape(), (Shape{0, 3}));
  EXPECT_EQ(Tensor::empty({4, 0}).view({0}).shape(), (Shape{0}));
  EXPECT_TRUE(Tensor::zeros({3, 0}).transpose(0, 1).is_contiguous());
}

// Strides and steps so large that their products or sums wrap around are refused or counted
// right, never a view that reaches outside its memory.
TEST(Tensor, HugeStridesAndStepsDoNotWrapAround) {
  const Tensor x = Tensor::zeros({4});
  EXPECT_THROW(x.as_strided({5}, {int64_t(1) << 61}, 0), Error);
  EXPECT_THROW(x.as_strided({3, 2}, {INT64_MAX / 2, INT64_MAX / 2}, 0), Error);
  EXPECT_EQ(x.as_strided({0, 2}, {int64_t(1) << 62, 1}, 0).numel(), 0);  // no element: no reach
  EXPECT_EQ(x.slice(0, 0, 4, INT64_MAX).shape(), (Shape{1}));
  EXPECT_EQ(x.slice(0, 1, 4, 2).shape(), (Shape{2}));
  EXPECT_THROW(kernels::split(Tensor::zeros({0}), {INT64_MAX, INT64_MAX, 2}, 0), Error);
  // No signed overflow on the way (the sanitizer build aborts on one): a step past the end of
  // an axis with a stride above 1, an empty shape whose other sides multiply past 2^63, a
  // reshape to such sides.
  const Tensor m = Tensor::zeros({4, 2});
  EXPECT_EQ(m.slice(0, 0, 4, INT64_MAX).shape(), (Shape{1, 2}));
  EXPECT_EQ(m.slice(0, 1, 4, INT64_MAX).to_vector<float>(), (std::vector<float>{0, 0}));
  const Tensor empty = Tensor::zeros({0, int64_t(1) << 40, int64_t(1) << 40});
  EXPECT_EQ(empty.numel(), 0);
  EXPECT_EQ(empty.contiguous().numel(), 0);
  EXPECT_EQ(empty.slice(1, 3, int64_t(1) << 40, int64_t(1) << 30).shape(), (Shape{0, 1024, int64_t(1) << 40}));
  EXPECT_EQ(numel(Shape{int64_t(1) << 40, int64_t(1) << 40, 0}), 0);  // a side of 0 anywhere
  EXPECT_EQ(Tensor::zeros({0}).reshape({int64_t(1) << 40, int64_t(1) << 40, 0}).numel(), 0);
  EXPECT_THROW(m.reshape({int64_t(1) << 32, int64_t(1) << 32, -1}), Error);
  EXPECT_THROW(m.reshape({int64_t(1) << 32, int64_t(1) << 32, 8}), Error);
}

// int64 to float32 rounds once, to nearest: 2^60 + 2^36 + 1 is above the halfway point
// between 2^60 and 2^60 + 2^37 (through double it rounds to the halfway point, then down).
TEST(Tensor, Int64ToFloatRoundsOnce) {
  const int64_t v = (int64_t(1) << 60) + (int64_t(1) << 36) + 1;
  const float f = Tensor::from_vector(std::vector<int64_t>{v}, {1}).to(DType::Float32).to_vector<float>()[0];
  EXPECT_EQ(f, std::ldexp(1.0f, 60) + std::ldexp(1.0f, 37));
}

// float64 and int64 reach 16 bits through one rounding, to nearest even: through a float
// rounded to nearest first, values just off a 16-bit tie landed on it and went to the even
// side. Checked against the nearest of all 16-bit values found by search, at and around every
// tie of a range of binades, and on the three cases that were wrong.
TEST(Tensor, DoubleAndInt64ToSixteenBitsRoundOnce) {
  std::map<DType, std::vector<std::pair<double, uint16_t>>> tables;  // every finite value, sorted
  for (const DType type : {DType::Float16, DType::BFloat16}) {
    auto& all = tables[type];
    for (uint32_t b = 0; b < 0x10000; ++b) {
      const double x = type == DType::Float16 ? fp16_to_float(static_cast<uint16_t>(b)) : bf16_to_float(static_cast<uint16_t>(b));
      if (std::isfinite(x) && !(x == 0 && (b & 0x8000))) all.emplace_back(x, static_cast<uint16_t>(b));
    }
    std::sort(all.begin(), all.end());
  }
  const auto nearest = [&](double v, DType type) {  // the reference: by the definition
    const auto& all = tables.at(type);
    const auto hi = std::lower_bound(all.begin(), all.end(), std::make_pair(v, uint16_t(0)));
    if (hi == all.begin()) return hi->second;
    const auto lo = hi - 1;
    if (hi == all.end()) return lo->second;
    const double dl = v - lo->first, dh = hi->first - v;
    if (dl != dh) return dl < dh ? lo->second : hi->second;
    return (lo->second & 1) ? hi->second : lo->second;
  };
  const auto bits = [](const Tensor& t) {
    return t.dtype() == DType::Float16 ? t.data<FP16>()[0].bits : t.data<BF16>()[0].bits;
  };
  for (const DType type : {DType::Float16, DType::BFloat16}) {
    const int mantissa = type == DType::Float16 ? 10 : 7;
    std::vector<double> values;
    for (int e = -6; e <= 14; e += 4)
      for (int k = 0; k < (1 << mantissa); k += 37) {
        const double ulp = std::ldexp(1.0, e - mantissa);
        const double tie = std::ldexp(1.0, e) + (k + 0.5) * ulp;
        for (const double off : {0.0, 1e-9, -1e-9, std::ldexp(1.0, -30), -std::ldexp(1.0, -30)})
          values.push_back(tie + off * ulp), values.push_back(-(tie + off * ulp));
      }
    for (const double v : values) {
      const Tensor t = Tensor::from_vector(std::vector<double>{v}, {1}).to(type);
      ASSERT_EQ(bits(t), nearest(v, type)) << std::hexfloat << v << " to " << dtype_name(type);
      Tensor filled = Tensor::empty({1}, type);
      filled.fill_(v);
      ASSERT_EQ(bits(filled), nearest(v, type)) << "fill_ " << std::hexfloat << v;
    }
  }
  // The cases that were wrong.
  const auto from_double = [](double v, DType type) { return Tensor::from_vector(std::vector<double>{v}, {1}).to(type); };
  EXPECT_EQ(bits(from_double(1 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40), DType::Float16)), 0x3C01);
  EXPECT_EQ(bf16_to_float(bits(from_double(1 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40), DType::BFloat16))),
            1 + std::ldexp(1.0f, -7));
  const int64_t big = (int64_t(1) << 40) + (int64_t(1) << 32) + 1;
  EXPECT_EQ(bf16_to_float(bits(Tensor::from_vector(std::vector<int64_t>{big}, {1}).to(DType::BFloat16))),
            std::ldexp(1.0f, 40) + std::ldexp(1.0f, 33));
  // Above 2^53 as well: 2^60 + 2^52 + 1 is just above a bfloat16 tie (2^60 + 2^52), whose
  // nearest double is the tie itself.
  const int64_t huge = (int64_t(1) << 60) + (int64_t(1) << 52) + 1;
  EXPECT_EQ(bf16_to_float(bits(Tensor::from_vector(std::vector<int64_t>{huge, -huge}, {2}).to(DType::BFloat16))),
            std::ldexp(1.0f, 60) + std::ldexp(1.0f, 53));
  EXPECT_EQ(bits(Tensor::from_vector(std::vector<int64_t>{INT64_MIN}, {1}).to(DType::BFloat16)), 0xDF00);  // -2^63
  EXPECT_EQ(bits(Tensor::from_vector(std::vector<int64_t>{INT64_MAX}, {1}).to(DType::BFloat16)), 0x5F00);  // 2^63
}

// The block pool behind large host tensors and CUDA memory: sizes rounded, a cached block
// reused for requests from half its size up, at most max_cached bytes kept, and a failed
// request retried once after the cache (flushed first) is handed back.
TEST(BlockPool, RoundsReusesCapsAndRetries) {
  std::set<void*> live;
  size_t obtained = 0, given_back = 0, flushes = 0, limit = SIZE_MAX, live_bytes = 0;
  std::map<void*, size_t> sizes;
  BlockPool pool(
      [&](size_t n) -> void* {
        if (live_bytes + n > limit) return nullptr;
        void* p = std::malloc(n);
        live.insert(p), sizes[p] = n, live_bytes += n, ++obtained;
        return p;
      },
      [&](void* p, size_t n) {
        EXPECT_EQ(sizes.at(p), n) << "given back with another size than obtained";
        live.erase(p), sizes.erase(p), live_bytes -= n, ++given_back;
        std::free(p);
      },
      [&] { ++flushes; }, size_t(8) << 20);
  EXPECT_EQ(BlockPool::round_size(0), 512u);
  EXPECT_EQ(BlockPool::round_size(513), 1024u);
  EXPECT_EQ(BlockPool::round_size(size_t(1) << 20), size_t(2) << 20);
  EXPECT_EQ(BlockPool::round_size((size_t(2) << 20) + 1), size_t(4) << 20);
  void* a = pool.allocate(size_t(3) << 20);  // 4 MiB
  pool.release(a);
  EXPECT_EQ(pool.allocate(size_t(2) << 20), a);  // 2 MiB: half of the cached 4, reused
  pool.release(a);
  void* small = pool.allocate(size_t(1) << 19);  // 512 KiB: less than half of 4 MiB, a new block
  EXPECT_NE(small, a);
  EXPECT_EQ(obtained, 2u);
  EXPECT_EQ(pool.stats().allocated, size_t(1) << 19);
  EXPECT_EQ(pool.stats().reserved, (size_t(4) << 20) + (size_t(1) << 19));
  // The cap: three 4 MiB blocks released, the third goes back (12 MiB cached is over 8).
  void* b = pool.allocate(size_t(4) << 20);
  void* c = pool.allocate(size_t(4) << 20);
  EXPECT_EQ(b, a);
  pool.release(b), pool.release(c);
  void* d = pool.allocate(size_t(4) << 20);
  void* e = pool.allocate(size_t(4) << 20);
  void* f = pool.allocate(size_t(4) << 20);
  pool.release(d), pool.release(e);
  const size_t back_before = given_back;
  pool.release(f);
  EXPECT_EQ(given_back, back_before + 1);
  EXPECT_LE(pool.stats().reserved - pool.stats().allocated, size_t(8) << 20);
  // A request the backend refuses is retried once after the cache is handed back.
  limit = live_bytes + (size_t(2) << 20);  // only 2 MiB more: the 8 MiB request fails at first
  const size_t flushes_before = flushes;
  void* g = pool.allocate(size_t(8) << 20);
  ASSERT_NE(g, nullptr);
  EXPECT_GT(flushes, flushes_before);
  limit = live_bytes;  // nothing at all: the request fails, the pool stays consistent
  EXPECT_EQ(pool.allocate(size_t(16) << 20), nullptr);
  limit = SIZE_MAX;
  pool.release(g), pool.release(small);
  pool.release(reinterpret_cast<void*>(0x1234));  // not the pool's: ignored
  EXPECT_EQ(pool.stats().allocated, 0u);
  pool.empty_cache();
  EXPECT_EQ(pool.stats().reserved, 0u);
  EXPECT_TRUE(live.empty());
}

// Several threads at once (the loader's workers and the training thread share the host pool):
// every block a thread holds keeps what it wrote, and the books balance at the end.
TEST(BlockPool, ThreadsShareItSafely) {
  std::atomic<size_t> live_bytes{0};
  BlockPool pool([&](size_t n) -> void* { live_bytes += n; return std::malloc(n); },
                 [&](void* p, size_t n) { live_bytes -= n; std::free(p); }, nullptr, size_t(32) << 20);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(t + 1);
      std::vector<std::pair<uint8_t*, size_t>> held;
      for (int i = 0; i < 400; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (held.size() < 6 && (x & 3) != 0) {
          const size_t n = 1 + (x >> 8) % (size_t(5) << 20);
          auto* p = static_cast<uint8_t*>(pool.allocate(n));
          std::memset(p, t + 1, n);
          held.emplace_back(p, n);
        } else if (!held.empty()) {
          const auto [p, n] = held[(x >> 20) % held.size()];
          for (size_t k = 0; k < n; k += 4093) bad += p[k] != t + 1;
          bad += p[n - 1] != t + 1;
          pool.release(p);
          held.erase(std::find(held.begin(), held.end(), std::make_pair(p, n)));
        }
      }
      for (const auto& [p, n] : held) pool.release(p);
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(pool.stats().allocated, 0u);
  EXPECT_EQ(pool.stats().reserved, live_bytes.load());
  pool.empty_cache();
  EXPECT_EQ(live_bytes.load(), 0u);
}

// Any rank: size-1 axes are skipped, so a rank-70 tensor of one element copies, fills and adds;
// more than 12 axes that cannot merge (a transposed rank-13 tensor) is a clear error.
TEST(Tensor, RanksBeyondTheIterationLimit) {
  const Tensor one = Tensor::full(Shape(70, 1), 2.5);
  EXPECT_EQ(one.dim(), 70);
  Tensor copy = Tensor::empty(Shape(70, 1));
  copy.copy_(one);
  EXPECT_EQ(copy.to_vector<float>(), (std::vector<float>{2.5f}));
  EXPECT_EQ(kernels::add(one, copy).to_vector<float>(), (std::vector<float>{5.0f}));
  Shape twos(13, 2);
  std::vector<int64_t> reversed;
  for (int64_t d = 12; d >= 0; --d) reversed.push_back(d);
  const Tensor t = Tensor::zeros(twos).permute(reversed);
  try {
    t.contiguous();
    ADD_FAILURE() << "no error for 13 axes that cannot merge";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-mergeable axes"), std::string::npos) << e.what();
  }
}

TEST(Tensor, FillOnAStridedView) {
  Tensor a = Tensor::zeros({3, 3}, DType::Int64);
  a.slice(0, 0, 3, 2).fill_(5);
  EXPECT_EQ(a.to_vector<int64_t>(), (std::vector<int64_t>{5, 5, 5, 0, 0, 0, 5, 5, 5}));
}

TEST(Tensor, DataChecksTheDtype) {
  Tensor a = Tensor::zeros({2});
  EXPECT_NO_THROW(a.data<float>());
  EXPECT_THROW(a.data<double>(), Error);
}

TEST(Tensor, DeviceParsing) {
  EXPECT_TRUE(Device::parse("cpu").is_cpu());
  EXPECT_EQ(Device::parse("cuda:1").index, 1);
  EXPECT_EQ(Device::parse("cuda").str(), "cuda:0");
  EXPECT_THROW(Device::parse("gpu"), Error);
  EXPECT_THROW(Device::parse("cuda:x"), Error);
}

TEST(Tensor, CudaTensorWithoutDeviceIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present";
  try {
    Tensor::zeros({2}, DType::Float32, Device::cuda());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
}

// A process driving one GPU of several makes it current and its home (pinned buffers are
// allocated in its context, from any thread); a device that is not there is a clear error.
TEST(Tensor, HomeDeviceMustExist) {
  EXPECT_THROW(cuda_set_home_device(cuda_device_count()), Error);
  EXPECT_THROW(cuda_set_home_device(-1), Error);
}

TEST(Tensor, PinnedMemoryCopiesToTheHomeDeviceOnTheGpu) {
  FGVC_REQUIRE_CUDA();
  cuda_set_home_device(cuda_device_count() - 1);
  Tensor p = Tensor::empty({4}, DType::Float32, Device::cpu(), /*pinned=*/true);
  p.fill_(3.0);
  EXPECT_EQ(p.to(Device::cuda(cuda_device_count() - 1)).to_vector<float>(), std::vector<float>(4, 3.0f));
  cuda_set_home_device(0);
}

TEST(Tensor, PinnedHostTensorsWork) {
  Tensor p = Tensor::empty({4}, DType::Float32, Device::cpu(), /*pinned=*/true);
  p.fill_(2.0);
  EXPECT_EQ(p.to_vector<float>(), std::vector<float>(4, 2.0f));
  EXPECT_EQ(p.storage()->pinned(), cuda_available());
}

// A non-blocking copy from page-locked memory whose tensor is dropped at once: the pool must
// not hand the bytes to the next pinned tensor (a loader's next batch) while the copy still
// reads them.
TEST(Tensor, PinnedMemoryOutlivesItsAsynchronousCopy) {
  FGVC_REQUIRE_CUDA();
  const int64_t n = 16 << 20;  // 64 MB: the copy takes milliseconds
  Tensor device_copy;
  {
    Tensor host = Tensor::empty({n}, DType::Float32, Device::cpu(), /*pinned=*/true);
    host.fill_(1.0);
    // Work queued ahead of the copy on the device's stream (a float64 GEMM of 2.2 TFLOP, tens
    // of milliseconds), so that the copy has certainly not run when the block is reused below:
    // without the wait the pool hands it out at once and -1 is what gets copied.
    const Tensor big = testing::randn_t({8192, 8192}, 5, DType::Float64, Device::cuda());
    const Tensor busy = kernels::matmul(big, big);
    device_copy = host.to(Device::cuda(), /*non_blocking=*/true);
  }
  Tensor next = Tensor::empty({n}, DType::Float32, Device::cpu(), /*pinned=*/true);
  next.fill_(-1.0);
  EXPECT_EQ(kernels::sum(device_copy).item<float>(), static_cast<float>(n));
}

TEST(Tensor, AllocationPoisonMakesFreshMemoryNaN) {
  set_allocation_poison(true);
  Tensor t = Tensor::empty({3});
  set_allocation_poison(false);
  for (float v : t.to_vector<float>()) EXPECT_TRUE(std::isnan(v));
}


// Views of one memory whose only shared element is the first the copy writes and the last it
// reads: still a copy through a snapshot of the source.
TEST(Tensor, CopyBetweenViewsSharingOneElement) {
  Tensor x = Tensor::arange(5);
  x.slice(0, 2, 5, 2).copy_(x.slice(0, 0, 3, 2));  // x[2], x[4] <- x[0], x[2]
  EXPECT_EQ(x.to_vector<float>(), (std::vector<float>{0, 1, 0, 3, 2}));
}

// A size-1 axis has no say in contiguity, whatever its stride (as in PyTorch): a transposed
// row is a contiguous column and views without a copy.
TEST(Tensor, SizeOneAxesDoNotBreakContiguity) {
  const Tensor row = Tensor::arange(3).reshape({1, 3});
  const Tensor col = row.transpose(0, 1);  // [3, 1], strides [1, 3]
  EXPECT_TRUE(col.is_contiguous());
  const Tensor flat = col.view({3});
  EXPECT_EQ(flat.storage().get(), row.storage().get());
  EXPECT_EQ(flat.to_vector<float>(), (std::vector<float>{0, 1, 2}));
  EXPECT_TRUE(Tensor::zeros({3}).expand({1, 3}).is_contiguous());  // stride 0 on the size-1 axis
}

// A -1 beside a side of 0 could be any size: an error (PyTorch's too), not a division by zero.
TEST(Tensor, ReshapeOfAnEmptyTensorWithMinusOneIsAnError) {
  EXPECT_THROW(Tensor::zeros({2, 0}).reshape({0, -1}), Error);
  EXPECT_THROW(Tensor::zeros({2, 0}).view({-1, 0}), Error);
  EXPECT_EQ(Tensor::zeros({2, 0}).reshape({-1, 2}).shape(), (Shape{0, 2}));
}

// A slice that ends before it starts is empty (Python's and PyTorch's x[3:1]), not an error.
TEST(Tensor, SliceEndingBeforeItsStartIsEmpty) {
  const Tensor a = Tensor::arange(20).reshape({4, 5});
  EXPECT_EQ(a.slice(1, 4, 2).shape(), (Shape{4, 0}));
  EXPECT_EQ(a.slice(1, -1, 1, 2).shape(), (Shape{4, 0}));
  EXPECT_EQ(a.slice(0, 3, -3).shape(), (Shape{0, 5}));  // end -3 is row 1
  EXPECT_EQ(a.slice(0, 3, -3).numel(), 0);
}

}  // namespace
}  // namespace fgvc
