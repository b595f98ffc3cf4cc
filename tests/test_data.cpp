// The data pipeline: every decoder path (baseline, progressive, grayscale, CMYK JPEG, PNG,
// BMP, GIF, region + DCT-scaled decoding, broken files), the dataset formats, transform
// geometry, loader determinism across worker counts, skipped files, and subsets.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>

#include "data/dataset.h"
#include "data/decode.h"
#include "data/loader.h"
#include "data/subset.h"
#include "data/transforms.h"
#include "tensor/random.h"
#include "image_files.h"
#include "test_util.h"

namespace fgvc {
namespace {

namespace fs = std::filesystem;
using namespace data;
using testing::encode_jpeg;
using testing::JpegKind;
using testing::mean_abs_diff;
using testing::test_picture;

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/fgvc_data_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(Decode, EveryJpegKindComesOutAsRGB) {
  const Image src = test_picture(97, 61);
  for (JpegKind kind : {JpegKind::Baseline, JpegKind::Progressive, JpegKind::Gray, JpegKind::Cmyk, JpegKind::CmykPlain,
                        JpegKind::Ycck}) {
    const std::vector<uint8_t> bytes = encode_jpeg(src, kind);
    EXPECT_EQ(detect_format(bytes.data(), bytes.size()), ImageFormat::Jpeg);
    const ImageHeader h = read_header(bytes, "x.jpg");
    ASSERT_TRUE(h.error.empty()) << h.error;
    EXPECT_EQ(h.width, 97);
    EXPECT_EQ(h.height, 61);
    const Decoded d = decode_image(bytes, "x.jpg");
    ASSERT_TRUE(d.ok()) << d.error;
    ASSERT_EQ(d.image.width, 97);
    ASSERT_EQ(d.image.height, 61);
    Image want = src;
    if (kind == JpegKind::Gray)
      for (size_t i = 0; i < want.rgb.size(); i += 3) want.rgb[i] = want.rgb[i + 2] = want.rgb[i + 1];
    EXPECT_LT(mean_abs_diff(d.image, want), 4.0) << static_cast<int>(kind);
  }
}

TEST(Decode, PngBmpGifThroughStb) {
  const Image src = test_picture(40, 30);
  for (const auto& [bytes, format] : std::vector<std::pair<std::vector<uint8_t>, ImageFormat>>{
           {testing::encode_png(src), ImageFormat::Png}, {testing::encode_bmp(src), ImageFormat::Bmp}}) {
    EXPECT_EQ(detect_format(bytes.data(), bytes.size()), format);
    const Decoded d = decode_image(bytes, "img.jpg");  // the name does not matter, the bytes do
    ASSERT_TRUE(d.ok()) << d.error;
    EXPECT_EQ(mean_abs_diff(d.image, src), 0.0);  // lossless
  }
  // 16-bit samples keep their high byte (as PIL's RGB;16B); alpha is dropped, not blended
  // (as PIL's convert("RGB")); gray becomes R = G = B.
  {
    std::vector<uint8_t> rgb16, rgba8, graya16;
    for (size_t i = 0; i < src.rgb.size(); i += 3) {
      for (int c = 0; c < 3; ++c) rgb16.insert(rgb16.end(), {src.rgb[i + c], static_cast<uint8_t>(i * 7 + c)});
      rgba8.insert(rgba8.end(), {src.rgb[i], src.rgb[i + 1], src.rgb[i + 2], static_cast<uint8_t>(i % 256)});
      graya16.insert(graya16.end(), {src.rgb[i + 1], 0xFF, static_cast<uint8_t>(i), 0x00});
    }
    Image gray = src;
    for (size_t i = 0; i < gray.rgb.size(); i += 3) gray.rgb[i] = gray.rgb[i + 2] = gray.rgb[i + 1];
    for (const auto& [bytes, want] : std::vector<std::pair<std::vector<uint8_t>, Image>>{
             {testing::encode_png_raw(40, 30, 16, 2, rgb16), src},
             {testing::encode_png_raw(40, 30, 8, 6, rgba8), src},
             {testing::encode_png_raw(40, 30, 16, 4, graya16), gray}}) {
      EXPECT_EQ(detect_format(bytes.data(), bytes.size()), ImageFormat::Png);
      const ImageHeader h = read_header(bytes, "deep.png");
      ASSERT_TRUE(h.error.empty()) << h.error;
      EXPECT_EQ(h.width, 40);
      const Decoded d = decode_image(bytes, "deep.png");
      ASSERT_TRUE(d.ok()) << d.error;
      ASSERT_EQ(d.image.rgb.size(), want.rgb.size());
      EXPECT_EQ(mean_abs_diff(d.image, want), 0.0);
    }
  }
  const Decoded g = decode_image(testing::tiny_gif(), "tiny.gif");
  ASSERT_TRUE(g.ok()) << g.error;
  EXPECT_EQ(g.image.width, 1);
  EXPECT_EQ(g.image.rgb, (std::vector<uint8_t>{0, 0, 0}));
  // A GIF's transparent pixels, and those outside its first frame, take the colour PIL's
  // convert("RGB") gives them (Pillow 9.4): the transparent index's, else the background's.
  // A screen of 2 or 3 x 1, colours (10, 20, 30) and (200, 100, 50), a 2 x 1 frame of indices 0, 1.
  const auto gif = [](uint8_t screen_width, bool transparent_1) {
    std::vector<uint8_t> b = {'G', 'I', 'F', '8', '9', 'a', screen_width, 0, 1, 0, 0x80, 0, 0, 10, 20, 30, 200, 100, 50};
    if (transparent_1) b.insert(b.end(), {0x21, 0xF9, 4, 1, 0, 0, 1, 0});
    b.insert(b.end(), {',', 0, 0, 0, 0, 2, 0, 1, 0, 0, 2, 2, 0x44, 0x0A, 0, ';'});
    return b;
  };
  for (const auto& [bytes, want] : std::vector<std::pair<std::vector<uint8_t>, std::vector<uint8_t>>>{
           {gif(2, true), {10, 20, 30, 200, 100, 50}},
           {gif(3, true), {10, 20, 30, 200, 100, 50, 200, 100, 50}},
           {gif(3, false), {10, 20, 30, 200, 100, 50, 10, 20, 30}}}) {
    const Decoded t = decode_image(bytes, "t.gif");
    ASSERT_TRUE(t.ok()) << t.error;
    EXPECT_EQ(t.image.rgb, want);
  }
}

// The library's own encoder (the demo's image folders): its output buffer grows as it must
// (noise needs many times the first guess), and an error is an exception with libjpeg's words.
TEST(Decode, EncodeJpegRoundTripsAndGrowsItsBuffer) {
  const Image smooth = test_picture(301, 203);
  const std::vector<uint8_t> a = data::encode_jpeg(smooth.rgb.data(), smooth.width, smooth.height, 3, 95);
  const Decoded da = decode_image(a, "smooth.jpg");
  ASSERT_TRUE(da.ok()) << da.error;
  EXPECT_LT(mean_abs_diff(da.image, smooth), 4.0);
  Image noise(257, 129);
  uint32_t state = 12345;
  for (uint8_t& v : noise.rgb) v = static_cast<uint8_t>((state = state * 1664525u + 1013904223u) >> 24);
  const std::vector<uint8_t> b = data::encode_jpeg(noise.rgb.data(), noise.width, noise.height, 3, 100);
  EXPECT_GT(b.size(), noise.rgb.size() / 8 + 4096 * 2);  // the buffer doubled at least twice
  const Decoded db = decode_image(b, "noise.jpg");
  ASSERT_TRUE(db.ok()) << db.error;
  // Chroma is subsampled (and noise has nothing else), so compare the luma.
  auto luma = [](const uint8_t* p) { return 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]; };
  double luma_err = 0;
  for (size_t i = 0; i < noise.rgb.size(); i += 3) luma_err += std::abs(luma(&db.image.rgb[i]) - luma(&noise.rgb[i]));
  EXPECT_LT(luma_err / (noise.rgb.size() / 3), 3.0);
  std::vector<uint8_t> gray(static_cast<size_t>(64) * 48);
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<uint8_t>(i * 7 % 256);
  const Decoded dg = decode_image(data::encode_jpeg(gray.data(), 64, 48, 1, 100), "gray.jpg");
  ASSERT_TRUE(dg.ok()) << dg.error;
  double err = 0;
  for (size_t i = 0; i < gray.size(); ++i) err += std::abs(dg.image.rgb[3 * i + 1] - gray[i]);
  EXPECT_LT(err / gray.size(), 3.0);
  std::vector<uint8_t> wide(70000, 128);  // above JPEG's 65,500 pixels a side
  try {
    data::encode_jpeg(wide.data(), 70000, 1, 1, 90);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("encode_jpeg: Maximum supported image dimension"), std::string::npos)
        << e.what();
  }
}

// The DCT scale is the smallest of 1/8, 1/4, 1/2 and 1 at which the region still has the
// pixels asked for: exactly enough is enough, one pixel short takes the next scale.
TEST(Decode, ReducedScaleBoundaries) {
  const std::vector<uint8_t> bytes = encode_jpeg(test_picture(800, 600), JpegKind::Baseline);
  const struct {
    int min_w, min_h, eighths;
  } cases[] = {{100, 75, 1}, {101, 75, 2}, {100, 76, 2}, {200, 150, 2}, {201, 150, 4},
               {400, 300, 4}, {400, 301, 8}, {800, 600, 8}, {1000, 10, 8}};
  for (const auto& c : cases) {
    const Decoded d = decode_image(bytes, "s.jpg", Box{}, c.min_w, c.min_h);
    ASSERT_TRUE(d.ok()) << d.error;
    EXPECT_EQ(d.scale_eighths, c.eighths) << c.min_w << " x " << c.min_h;
    EXPECT_EQ(d.image.width, 800 * c.eighths / 8) << c.min_w << " x " << c.min_h;
    EXPECT_EQ(d.image.height, 600 * c.eighths / 8) << c.min_w << " x " << c.min_h;
  }
  // For a region, its own size counts (a 320 x 240 box needs 1/2 for 160 x 120).
  const Decoded r = decode_image(bytes, "s.jpg", Box{100, 100, 320, 240}, 160, 120);
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.scale_eighths, 4);
  const Decoded r2 = decode_image(bytes, "s.jpg", Box{100, 100, 320, 240}, 161, 120);
  ASSERT_TRUE(r2.ok()) << r2.error;
  EXPECT_EQ(r2.scale_eighths, 8);
}

TEST(Decode, RegionAtReducedScaleMatchesFullDecode) {
  const Image src = test_picture(800, 600);
  const std::vector<uint8_t> bytes = encode_jpeg(src, JpegKind::Baseline);
  const Box region{130.5, 77.25, 500, 400};
  const Decoded full = decode_image(bytes, "p.jpg");
  const Decoded part = decode_image(bytes, "p.jpg", region, 100, 100);
  ASSERT_TRUE(part.ok()) << part.error;
  EXPECT_LT(part.scale_eighths, 8);                                // decoded smaller
  EXPECT_LT(part.image.width * part.image.height, 800 * 600 / 4);  // and only around the region
  const Image a = resize_region(full.image, region, 100), b = resize_region(part.image, part.region, 100);
  EXPECT_LT(mean_abs_diff(a, b), 3.0);
  // Sides that are no multiple of 8: at scale k/8 a source column x is at x k / 8 (a last,
  // partial block is one whole output pixel), so an edge near the far corner lands where the
  // full decode puts it. (Mapping by output_width / width would move it by 0.4 pixels here.)
  Image edge(803, 605);
  for (int y = 0; y < 605; ++y)
    for (int x = 0; x < 803; ++x)
      for (int c = 0; c < 3; ++c) edge.row(y)[x * 3 + c] = x < 700 ? 30 : 220;
  const std::vector<uint8_t> edge_bytes = encode_jpeg(edge, JpegKind::Baseline);
  const Box corner{403.5, 305.25, 399, 299};
  const Decoded edge_part = decode_image(edge_bytes, "edge.jpg", corner, 36, 36);
  ASSERT_TRUE(edge_part.ok()) << edge_part.error;
  EXPECT_EQ(edge_part.scale_eighths, 1);
  const auto crossing = [](const Image& img) {  // where row 18 first reaches the middle grey
    const uint8_t* r = img.row(18);
    for (int x = 1; x < img.width; ++x)
      if (r[x * 3] >= 125) return x - 1 + (125.0 - r[x * 3 - 3]) / (r[x * 3] - r[x * 3 - 3]);
    return -1.0;
  };
  const double want_at = crossing(resize_region(decode_image(edge_bytes, "edge.jpg").image, corner, 36));
  EXPECT_NEAR(want_at, (700 - 403.5) * 36 / 399.0, 0.6);  // about 26.8 (pixel centres and blur aside)
  EXPECT_NEAR(crossing(resize_region(edge_part.image, edge_part.region, 36)), want_at, 0.15);
  // Progressive and CMYK files decode a region too.
  for (JpegKind kind : {JpegKind::Progressive, JpegKind::Cmyk}) {
    const Decoded p = decode_image(encode_jpeg(src, kind), "p.jpg", region, 100, 100);
    ASSERT_TRUE(p.ok()) << p.error;
    EXPECT_LT(mean_abs_diff(resize_region(p.image, p.region, 100), a), 4.0);
  }
}

// A region decoded at a reduced scale (libjpeg-turbo's jpeg_crop_scanline: whole iMCU columns)
// has the pixels of the whole image decoded at that scale, for every chroma subsampling, and
// the same pixels every time. (libjpeg-turbo before 3.0 computed the chroma's width wrongly
// for a crop at a reduced scale with 4 x 2 or 2 x 4 sampling, libjpeg-turbo issue 669.)
TEST(Decode, RegionsOfEverySubsamplingAreTheWholeImagesPixels) {
  const Image src = test_picture(803, 611);
  const Box region{130.5, 77.25, 500, 400};
  for (const auto& [h, v] : std::vector<std::pair<int, int>>{{1, 1}, {2, 1}, {1, 2}, {2, 2}, {4, 1}, {1, 4}, {4, 2}, {2, 4}}) {
    for (const JpegKind kind : {JpegKind::Baseline, JpegKind::Progressive}) {
      const std::vector<uint8_t> bytes = encode_jpeg(src, kind, 90, h, v);
      for (const int min_side : {60, 100, 200}) {  // scales 1/8, 1/4, 1/2
        const Decoded part = decode_image(bytes, "p.jpg", region, min_side, min_side);
        ASSERT_TRUE(part.ok()) << part.error;
        const int k = part.scale_eighths;
        ASSERT_LT(k, 8);
        const Decoded again = decode_image(bytes, "p.jpg", region, min_side, min_side);
        ASSERT_EQ(again.image.rgb, part.image.rgb) << h << "x" << v << " at " << k << "/8";
        // The whole image at the same scale: its smallest side asks for exactly that scale.
        const Decoded full = decode_image(bytes, "p.jpg", Box{}, 803 * k / 8, 611 * k / 8);
        ASSERT_TRUE(full.ok()) << full.error;
        ASSERT_EQ(full.scale_eighths, k);
        // The part's first column and row in the whole image (the region is at x k / 8 in both).
        const int x0 = static_cast<int>(std::lround(region.x * k / 8.0 - part.region.x));
        const int y0 = static_cast<int>(std::lround(region.y * k / 8.0 - part.region.y));
        // Every pixel but the part's first and last columns (upsampling there sees an edge).
        int worst = 0;
        for (int y = 0; y < part.image.height; ++y)
          for (int x = 1; x + 1 < part.image.width; ++x)
            for (int c = 0; c < 3; ++c)
              worst = std::max(worst, std::abs(int(part.image.row(y)[x * 3 + c]) - int(full.image.row(y0 + y)[(x0 + x) * 3 + c])));
        EXPECT_EQ(worst, 0) << h << "x" << v << (kind == JpegKind::Progressive ? " progressive" : "") << " at " << k << "/8";
      }
    }
  }
}

TEST(Decode, BrokenFilesAreErrorValuesNamingTheFile) {
  const std::vector<uint8_t> good = encode_jpeg(test_picture(64, 64), JpegKind::Baseline);
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> cases = {
      {"empty.jpg", {}},
      {"garbage.jpg", std::vector<uint8_t>(300, 0x41)},
      {"truncated.jpg", std::vector<uint8_t>(good.begin(), good.begin() + good.size() / 2)},
      {"header_only.jpg", std::vector<uint8_t>(good.begin(), good.begin() + 20)},
      {"bad.png", {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 1, 2, 3}},
  };
  ::testing::internal::CaptureStderr();
  for (const auto& [name, bytes] : cases) {
    const Decoded d = decode_image(bytes, name);
    EXPECT_FALSE(d.ok()) << name;
    EXPECT_NE(d.error.find(name), std::string::npos) << d.error;
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");  // no libjpeg noise
}

// A PNG whose writer left out the closing IEND chunk is a whole image (PIL reads it): it
// decodes. One cut inside its data stays an error, with a reason.
TEST(Decode, APngWithoutItsEndChunkDecodes) {
  const Image src = test_picture(40, 30);
  const std::vector<uint8_t> png = testing::encode_png(src);
  ASSERT_EQ(std::string(png.end() - 8, png.end() - 4), "IEND");
  const std::vector<uint8_t> unclosed(png.begin(), png.end() - 12);
  const Decoded d = decode_image(unclosed, "unclosed.png");
  ASSERT_TRUE(d.ok()) << d.error;
  EXPECT_EQ(mean_abs_diff(d.image, src), 0.0);
  const Decoded cut = decode_image(std::vector<uint8_t>(png.begin(), png.end() - 40), "cut.png");
  EXPECT_FALSE(cut.ok());
  EXPECT_EQ(cut.error.find("no reason given"), std::string::npos) << cut.error;
}

// Files of formats fgvc does not decode are named by their format when skipped, and a class
// folder lists them whatever their names (a camera's IMG_0002 has no extension), so that
// they are counted as skipped rather than never seen.
TEST(Decode, FormatsNotReadAreNamedAndListed) {
  const std::vector<std::pair<std::vector<uint8_t>, std::string>> others = {
      {{'I', 'I', '*', 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "a TIFF image"},
      {{'M', 'M', 0, '*', 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0}, "a TIFF image"},
      {{'R', 'I', 'F', 'F', 9, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', ' '}, "a WebP image"},
      {{0, 0, 0, 24, 'f', 't', 'y', 'p', 'h', 'e', 'i', 'c', 0, 0, 0, 0}, "a HEIF image"},
      {{0, 0, 0, 28, 'f', 't', 'y', 'p', 'a', 'v', 'i', 'f', 0, 0, 0, 0}, "an AVIF image"},
      {{'8', 'B', 'P', 'S', 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "a PSD image"},
      {{'P', '3', '\n', '1', ' ', '1', '\n', '2', '5', '5', '\n', '1', ' ', '2', ' ', '3'},
       "a text or 1-bit PBM/PGM/PPM image"},
  };
  const std::string root = fresh_dir("other_formats");
  fs::create_directories(root + "/c0");
  testing::write_bytes(root + "/c0/a.png", testing::encode_png(test_picture(8, 8)));
  int i = 0;
  for (const auto& [bytes, named] : others) {
    const Decoded d = decode_image(bytes, "IMG_000" + std::to_string(i));
    EXPECT_FALSE(d.ok());
    EXPECT_NE(d.error.find(named + ", not a JPEG, PNG, BMP, GIF or binary PGM/PPM image (convert it)"),
              std::string::npos)
        << d.error;
    EXPECT_NE(read_header(bytes, "x").error.find(named), std::string::npos);
    testing::write_bytes(root + "/c0/IMG_000" + std::to_string(i++), bytes);
  }
  testing::write_bytes(root + "/c0/notes", std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o', '\n'});  // not an image
  EXPECT_EQ(load_dataset(root).samples.size(), 1 + others.size());
}

// stb_image would allocate whatever a header declares and read past a BMP's, PNM's or GIF's end
// as black: sizes are checked first, and a BMP or PNM must hold its rows, a GIF its first frame.
// Binary PGM/PPM decode through it.
TEST(Decode, StbFormatsAreCheckedBeforeDecoding) {
  const Image src = test_picture(40, 30);
  const std::vector<uint8_t> bmp = testing::encode_bmp(src);
  const std::vector<uint8_t> cut(bmp.begin(), bmp.begin() + bmp.size() / 2);
  const Decoded short_bmp = decode_image(cut, "cut.bmp");
  ASSERT_FALSE(short_bmp.ok());
  EXPECT_NE(short_bmp.error.find("cut.bmp: bad BMP: truncated"), std::string::npos) << short_bmp.error;
  EXPECT_NE(read_header(cut, "cut.bmp").error.find("truncated"), std::string::npos);
  // A 2 x 2 24-bit BMP stored top-down (negative height), and the same with a pixel offset
  // inside its headers (stb_image would then read every pixel as 0).
  const auto bmp_2x2 = [](int32_t height, uint32_t offset) {
    std::vector<uint8_t> b(54 + 16, 0);
    const auto put = [&](size_t at, uint32_t v, int n) {
      for (int i = 0; i < n; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
    };
    b[0] = 'B', b[1] = 'M';
    put(2, static_cast<uint32_t>(b.size()), 4), put(10, offset, 4), put(14, 40, 4), put(18, 2, 4);
    put(22, static_cast<uint32_t>(height), 4), put(26, 1, 2), put(28, 24, 2);
    const uint8_t bgr[2][6] = {{3, 2, 1, 6, 5, 4}, {9, 8, 7, 12, 11, 10}};  // rows as stored
    for (int r = 0; r < 2; ++r) std::copy(bgr[r], bgr[r] + 6, b.begin() + 54 + 8 * r);
    return b;
  };
  const Decoded top_down = decode_image(bmp_2x2(-2, 54), "top_down.bmp");
  ASSERT_TRUE(top_down.ok()) << top_down.error;
  EXPECT_EQ(top_down.image.rgb, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  EXPECT_EQ(read_header(bmp_2x2(-2, 54), "top_down.bmp").height, 2);
  EXPECT_EQ(decode_image(bmp_2x2(2, 54), "bottom_up.bmp").image.rgb,
            (std::vector<uint8_t>{7, 8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6}));
  // Headers whose pixel count times bytes per pixel overflows 64 bits, and a height of
  // INT_MIN (no absolute value as an int): too large, never undefined arithmetic.
  for (const uint32_t height : {0x7ffffffeu, 0x80000000u}) {
    std::vector<uint8_t> huge = bmp_2x2(2, 54);
    for (int i = 0; i < 4; ++i) huge[18 + i] = static_cast<uint8_t>(0x67001100u >> (8 * i));
    for (int i = 0; i < 4; ++i) huge[22 + i] = static_cast<uint8_t>(height >> (8 * i));
    const Decoded too_large = decode_image(huge, "huge.bmp");
    EXPECT_FALSE(too_large.ok());
    EXPECT_NE(too_large.error.find("huge.bmp"), std::string::npos) << too_large.error;
  }
  // A negative width (found by fuzzing): its negative pixel count passed the size limit, then
  // overflowed times 3 (undefined; UBSan aborts here on the old code).
  std::vector<uint8_t> negative = bmp_2x2(0x7ffffffe, 54);
  for (int i = 0; i < 4; ++i) negative[18 + i] = static_cast<uint8_t>(0x98ffffeeu >> (8 * i));
  const Decoded negative_width = decode_image(negative, "negative.bmp");
  EXPECT_FALSE(negative_width.ok());
  EXPECT_NE(negative_width.error.find("negative.bmp"), std::string::npos) << negative_width.error;
  const Decoded inside = decode_image(bmp_2x2(2, 0), "inside.bmp");
  EXPECT_NE(inside.error.find("inside its headers"), std::string::npos) << inside.error;
  // A compression field stb_image reads as a negative number, which it decodes as uncompressed
  // (found by fuzzing: 82 bytes that claimed 273 x 65539 pixels decoded as a black image).
  std::vector<uint8_t> odd = bmp_2x2(2, 54);
  odd[32] = 0xff, odd[33] = 0xd8;  // compression 0xd8ff0000
  const Decoded unknown = decode_image(odd, "odd.bmp");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error.find("odd.bmp: bad BMP: unknown compression method 3640590336"), std::string::npos)
      << unknown.error;
  // A GIF cut inside its first frame's data: stb_image would read the missing sub-blocks' end
  // and leave the frame's rest blank. Only the trailer missing: the frame is whole.
  const std::vector<uint8_t> gif = testing::tiny_gif();
  ASSERT_TRUE(decode_image(gif, "whole.gif").ok());
  EXPECT_TRUE(decode_image(std::vector<uint8_t>(gif.begin(), gif.end() - 1), "no_trailer.gif").ok());
  const Decoded cut_gif = decode_image(std::vector<uint8_t>(gif.begin(), gif.end() - 2), "cut.gif");
  ASSERT_FALSE(cut_gif.ok());
  EXPECT_NE(cut_gif.error.find("cut.gif: bad GIF: truncated"), std::string::npos) << cut_gif.error;
  EXPECT_FALSE(decode_image(std::vector<uint8_t>(gif.begin(), gif.begin() + 16), "header_only.gif").ok());
  // A 17 x 12 GIF of noise (PIL's, LZW data in several sub-blocks) cut halfway through its data,
  // where stb_image would leave the lower rows blank.
  std::vector<uint8_t> noise;
  std::string why;
  ASSERT_TRUE(read_file(FGVC_TEST_DATA "/noise_17x12.gif", &noise, &why)) << why;
  const Decoded whole_noise = decode_image(noise, "noise.gif");
  ASSERT_TRUE(whole_noise.ok()) << whole_noise.error;
  EXPECT_EQ(whole_noise.image.width, 17);
  EXPECT_EQ(whole_noise.image.height, 12);
  const Decoded half = decode_image(std::vector<uint8_t>(noise.begin(), noise.begin() + noise.size() / 2), "half.gif");
  EXPECT_NE(half.error.find("half.gif: bad GIF: truncated"), std::string::npos) << half.error;
  // A graphic control extension whose size is not 4: stb_image skips that many bytes and reads
  // the next block, and so must the check (the file is whole).
  std::vector<uint8_t> odd_gce(gif.begin(), gif.begin() + 19);  // header, screen, 2-colour table
  for (const uint8_t v : {0x21, 0xF9, 3, 7, 7, 7}) odd_gce.push_back(v);
  odd_gce.insert(odd_gce.end(), gif.begin() + 19, gif.end());
  const Decoded gce = decode_image(odd_gce, "gce.gif");
  EXPECT_TRUE(gce.ok()) << gce.error;
  // A PNM size that does not fit stb_image's int (it would read another size).
  const std::string wrapped = "P5\n42949672970 4 255\n";
  const Decoded wrap = decode_image(std::vector<uint8_t>(wrapped.begin(), wrapped.end()), "wrap.pgm");
  EXPECT_FALSE(wrap.ok());
  // A PNG header declaring 15000 x 15000 (225 Mpixel) and nothing else.
  std::vector<uint8_t> bomb = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                               0, 0, 0x3a, 0x98, 0, 0, 0x3a, 0x98, 8, 2, 0, 0, 0, 0, 0, 0, 0};
  const Decoded big = decode_image(bomb, "bomb.png");
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error.find("15000 x 15000 pixels is too large"), std::string::npos) << big.error;
  // A JPEG whose frame header claims 65500 x 65500 is refused at its header too, before the
  // loader draws a crop from that size (its area overflowed an int there).
  std::vector<uint8_t> huge = encode_jpeg(test_picture(16, 16), JpegKind::Baseline);
  size_t sof = 2;
  while (sof + 8 < huge.size() && !(huge[sof] == 0xFF && huge[sof + 1] == 0xC0)) ++sof;
  ASSERT_LT(sof + 8, huge.size());
  for (const size_t at : {sof + 5, sof + 7}) huge[at] = 0xFF, huge[at + 1] = 0xDC;  // height, width: 65500
  const ImageHeader huge_header = read_header(huge, "huge.jpg");
  EXPECT_NE(huge_header.error.find("65500 x 65500 pixels is too large"), std::string::npos) << huge_header.error;
  EXPECT_FALSE(decode_image(huge, "huge.jpg").ok());
  // Binary PPM (P6) and PGM (P5).
  std::vector<uint8_t> ppm;
  const std::string head = "P6\n40 30\n255\n";
  ppm.insert(ppm.end(), head.begin(), head.end());
  ppm.insert(ppm.end(), src.rgb.begin(), src.rgb.end());
  EXPECT_EQ(detect_format(ppm.data(), ppm.size()), ImageFormat::Pnm);
  const Decoded p = decode_image(ppm, "x.ppm");
  ASSERT_TRUE(p.ok()) << p.error;
  EXPECT_EQ(mean_abs_diff(p.image, src), 0.0);
  const Decoded short_ppm = decode_image(std::vector<uint8_t>(ppm.begin(), ppm.end() - 100), "short.ppm");
  EXPECT_NE(short_ppm.error.find("bad PNM: truncated"), std::string::npos) << short_ppm.error;
  // A comment in the header.
  std::vector<uint8_t> commented = {'P', '5', '\n', '#', ' ', 'x', '\n', '2', ' ', '1', '\n', '2', '5', '5', '\n', 7, 200};
  EXPECT_TRUE(decode_image(commented, "c.pgm").ok());
  commented.pop_back();
  EXPECT_FALSE(decode_image(commented, "c.pgm").ok());
  std::vector<uint8_t> pgm = {'P', '5', ' ', '2', ' ', '1', ' ', '2', '5', '5', '\n', 7, 200};
  const Decoded g = decode_image(pgm, "x.pgm");
  ASSERT_TRUE(g.ok()) << g.error;
  EXPECT_EQ(g.image.rgb, (std::vector<uint8_t>{7, 7, 7, 200, 200, 200}));
}

// A file larger than any image is refused before it is read (a sparse file: no disk used).
TEST(Decode, FilesAboveAGibibyteAreNotRead) {
  const std::string path = fresh_dir("huge") + "/huge.tif";
  { std::ofstream(path) << "II*"; }
  fs::resize_file(path, (uintmax_t(1) << 30) + 1);
  std::vector<uint8_t> bytes;
  std::string error;
  EXPECT_FALSE(read_file(path, &bytes, &error));
  EXPECT_NE(error.find("too large for an image"), std::string::npos) << error;
  EXPECT_TRUE(bytes.empty());
  fs::remove(path);
}

// Stray bytes between two markers draw a libjpeg warning but leave the pixels intact: the
// file decodes (as in PIL), to the same pixels as without them. Corrupt entropy data (the
// scan's bytes overwritten) and a truncated scan stay errors.
TEST(Decode, HarmlessWarningsPassAndCorruptDataDoesNot) {
  const std::vector<uint8_t> good = encode_jpeg(test_picture(64, 48), JpegKind::Baseline);
  const Decoded want = decode_image(good, "good.jpg");
  ASSERT_TRUE(want.ok()) << want.error;
  // The first marker after SOI and its segment (APP0, JFIF), then three stray bytes.
  ASSERT_TRUE(good.size() > 6 && good[0] == 0xFF && good[1] == 0xD8 && good[2] == 0xFF);
  const size_t after_first = 4 + (size_t(good[4]) << 8 | good[5]);
  std::vector<uint8_t> stray(good.begin(), good.begin() + after_first);
  for (uint8_t junk : {0x00, 0x11, 0x22}) stray.push_back(junk);
  stray.insert(stray.end(), good.begin() + after_first, good.end());
  ::testing::internal::CaptureStderr();
  const Decoded got = decode_image(stray, "stray.jpg");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  ASSERT_TRUE(got.ok()) << got.error;
  EXPECT_EQ(got.image.rgb, want.image.rgb);
  // An unknown JFIF revision (a header detail, as PIL ignores it) decodes too.
  ASSERT_TRUE(good[6] == 'J' && good[7] == 'F' && good[11] == 1);
  std::vector<uint8_t> revised = good;
  revised[11] = 2;
  const Decoded rev = decode_image(revised, "jfif2.jpg");
  ASSERT_TRUE(rev.ok()) << rev.error;
  EXPECT_EQ(rev.image.rgb, want.image.rgb);

  // The scan's data: after the SOS marker's segment, before EOI. Overwrite its middle with a
  // restart marker out of sequence (0xFF 0xD3), which libjpeg reports as corrupt data.
  size_t sos = 2;
  while (sos + 1 < good.size() && !(good[sos] == 0xFF && good[sos + 1] == 0xDA)) ++sos;
  ASSERT_LT(sos + 4, good.size());
  const size_t scan = sos + 2 + (size_t(good[sos + 2]) << 8 | good[sos + 3]), middle = (scan + good.size() - 2) / 2;
  std::vector<uint8_t> corrupt = good;
  corrupt[middle] = 0xFF;
  corrupt[middle + 1] = 0xD3;
  const Decoded bad = decode_image(corrupt, "corrupt.jpg");
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.error.find("corrupt.jpg"), std::string::npos) << bad.error;
  const std::vector<uint8_t> cut(good.begin(), good.begin() + (scan + good.size()) / 2);
  EXPECT_FALSE(decode_image(cut, "cut.jpg").ok());
  // A baseline scan whose header's spectral end (Se, the byte before Ah/Al) is 0 instead of 63,
  // as some encoders write it: libjpeg warns ("Invalid SOS parameters for sequential JPEG")
  // but a sequential decode never reads it; the pixels are the same, as in PIL.
  const size_t se = scan - 2;
  ASSERT_EQ(good[se], 63);
  std::vector<uint8_t> zero_se = good;
  zero_se[se] = 0;
  ::testing::internal::CaptureStderr();
  const Decoded se0 = decode_image(zero_se, "se0.jpg");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  ASSERT_TRUE(se0.ok()) << se0.error;
  EXPECT_EQ(se0.image.rgb, want.image.rgb);
}

// A file damaged below the region that a crop asks for is an error all the same: the rows
// under the region are read (without their inverse DCT) to the end of the file. Reading only
// down to the region made a file cut short a training sample when its crop was high enough.
TEST(Decode, DamageBelowTheRegionIsAnErrorWhateverTheCrop) {
  const std::vector<uint8_t> good = encode_jpeg(test_picture(48, 400), JpegKind::Baseline);
  const Box top{0, 0, 48, 40};
  ASSERT_TRUE(decode_image(good, "good.jpg", top).ok());
  for (const size_t keep : {good.size() * 97 / 100, good.size() * 3 / 4}) {
    const std::vector<uint8_t> cut(good.begin(), good.begin() + keep);
    for (const auto& [region, min_side] : {std::pair{top, 0}, std::pair{top, 8}, std::pair{Box{}, 0}}) {
      const Decoded d = decode_image(cut, "cut.jpg", region, min_side, min_side);
      EXPECT_FALSE(d.ok()) << keep << " of " << good.size() << " bytes, region height " << region.h;
      EXPECT_NE(d.error.find("cut.jpg"), std::string::npos) << d.error;
    }
  }
  // A crop's pixels are the whole image's (the region's columns; rows above, in and below it).
  const Decoded whole = decode_image(good, "good.jpg");
  for (const Box& b : {top, Box{5, 180, 30, 50}, Box{0, 350, 48, 50}}) {
    const Decoded part = decode_image(good, "good.jpg", b);
    ASSERT_TRUE(part.ok()) << part.error;
    const int px = static_cast<int>(b.x - part.region.x), py = static_cast<int>(b.y - part.region.y);
    for (int y = 0; y < part.image.height; ++y)
      for (int x = static_cast<int>(part.region.x); x < static_cast<int>(part.region.x + part.region.w); ++x)
        for (int c = 0; c < 3; ++c)
          ASSERT_EQ(part.image.row(y)[3 * x + c], whole.image.row(py + y)[3 * (px + x) + c]) << b.y << " " << y << " " << x;
  }
}

// A sample's augmentation stream is not the default generator's stream of the same seed
// (which initialised the weights): with one key, sample i of epoch 0 would start at block
// i * 4096 of it. Float64 element 2k of the generator's fill is block k's first 53 bits.
TEST(Transforms, AugmentationStreamsAreNotTheWeightInitStream) {
  const uint64_t seed = 7;
  Generator gen(seed);
  const std::vector<double> init = rand({2 * 4 * 4096 + 2}, gen, DType::Float64).to_vector<double>();
  for (uint64_t i = 0; i <= 4; ++i) {
    const uint64_t block = i << 12;
    RandomStream same_key(seed, block);
    EXPECT_EQ(same_key.uniform(), init[2 * block]) << i;  // how the two would coincide
    EXPECT_NE(RandomStream::for_sample(seed, 0, i).uniform(), init[2 * block]) << i;
  }
}

TEST(Transforms, TrainCropsStayInsideAndFollowTheLimits) {
  TrainAugment aug;
  for (int i = 0; i < 2000; ++i) {
    RandomStream rng = RandomStream::for_sample(1, 0, static_cast<uint64_t>(i));
    const int W = 200 + i % 700, H = 150 + (i * 7) % 500;
    const Box b = sample_crop(W, H, aug, rng);
    ASSERT_GE(b.x, 0);
    ASSERT_GE(b.y, 0);
    ASSERT_LE(b.x + b.w, W + 1e-9);
    ASSERT_LE(b.y + b.h, H + 1e-9);
    const double area = b.w * b.h / (double(W) * H), aspect = b.w / b.h;
    ASSERT_EQ(b.w, std::floor(b.w));  // whole pixels, as TensorFlow's
    ASSERT_EQ(b.h, std::floor(b.h));
    if (area == 1.0) continue;  // the whole-image fallback
    ASSERT_GE(area, 0.1 - 1e-12);
    // The width is the height times the aspect, rounded: off by at most half a pixel.
    ASSERT_GE(aspect, 0.75 - 0.5 / b.h - 1e-9);
    ASSERT_LE(aspect, 1.33 + 0.5 / b.h + 1e-9);
  }
}

// TensorFlow's sample_distorted_bounding_box draws the crop's height uniformly (not its area):
// at aspect 1 with areas in [0.04, 1] of a 100 x 100 image, the side is uniform on 20..100, so
// 40 of 81 sides are below 60 (areas below 0.36); a uniform area would put a third there.
TEST(Transforms, TfSlimCropHeightIsUniform) {
  TrainAugment aug;
  aug.aspect_min = aug.aspect_max = 1.0;
  aug.area_min = 0.04, aug.min_covered = 0.0;
  const int n = 8000;
  double sides = 0;
  int below_60 = 0;
  std::set<int> seen;
  for (int i = 0; i < n; ++i) {
    RandomStream rng = RandomStream::for_sample(5, 0, static_cast<uint64_t>(i));
    const Box b = sample_crop(100, 100, aug, rng);
    ASSERT_EQ(b.w, b.h);
    ASSERT_GE(b.h, 20);
    ASSERT_LE(b.h, 100);
    if (b.w < 100) {  // TensorFlow's offsets stop one short of the edge
      ASSERT_LT(b.x + b.w, 100);
    }
    if (b.h < 100) {
      ASSERT_LT(b.y + b.h, 100);
    }
    sides += b.h;
    below_60 += b.h < 60;
    seen.insert(static_cast<int>(b.h));
  }
  EXPECT_NEAR(sides / n, 60.0, 1.0);  // standard error 0.26
  EXPECT_NEAR(below_60 / double(n), 40.0 / 81, 0.025);
  EXPECT_EQ(seen.size(), 81u);  // every side from 20 to 100
  // TensorFlow's nudge: at a least area of 442 px the least side drawn, 21, has 441 px and
  // becomes 22, so 22 takes two of the 80 sides' draws (a redraw instead would give it 1/79).
  aug.area_min = 0.0442;
  int side22 = 0;
  for (int i = 0; i < n; ++i) {
    RandomStream rng = RandomStream::for_sample(5, 1, static_cast<uint64_t>(i));
    const Box b = sample_crop(100, 100, aug, rng);
    ASSERT_NE(b.h, 21);
    side22 += b.h == 22;
  }
  EXPECT_NEAR(side22, n * 2.0 / 80, 45);  // 200, standard deviation 14; a redraw: 101
}

// --crop torchvision: RandomResizedCrop's draw (area uniform in [0.08, 1], aspect log-uniform in
// [3/4, 4/3], 10 attempts, offsets over every position) and its fallback, the central crop
// with the aspect clamped.
TEST(Transforms, TorchvisionCropIsRandomResizedCrop) {
  TrainAugment aug;
  aug.crop = CropStyle::Torchvision;
  aug.area_min = 0.08;
  const int n = 4000;
  double log_aspect = 0;
  int below_half = 0;
  for (int i = 0; i < n; ++i) {
    RandomStream rng = RandomStream::for_sample(6, 0, static_cast<uint64_t>(i));
    const Box b = sample_crop(400, 400, aug, rng);
    ASSERT_EQ(b.w, std::floor(b.w));
    ASSERT_GE(b.x, 0);
    ASSERT_GE(b.y, 0);
    ASSERT_LE(b.x + b.w, 400);
    ASSERT_LE(b.y + b.h, 400);
    const double area = b.w * b.h / 160000.0;
    ASSERT_GE(area, 0.08 - 0.01);  // sides rounded
    ASSERT_GE(b.w / b.h, 0.75 - 1.0 / b.h);
    ASSERT_LE(b.w / b.h, 4.0 / 3.0 + 1.0 / b.h);
    log_aspect += std::log(b.w / b.h);
    below_half += area < 0.5;
  }
  EXPECT_NEAR(log_aspect / n, 0.0, 0.01);  // log-uniform: symmetric (uniform in [0.75, 1.33]: +0.026)
  // Uniform areas, less the draws that do not fit (large areas at skewed aspects): most of
  // [0.08, 0.5] (0.46 of the 0.92 range) survives, so a little over half lie below 0.5.
  EXPECT_GT(below_half / double(n), 0.5);
  EXPECT_LT(below_half / double(n), 0.6);
  // Offsets as torchvision's randint(0, W - w + 1): the right and bottom edges are reached too.
  TrainAugment big = aug;
  big.area_min = 0.3;
  int right = 0, bottom = 0;
  for (int i = 0; i < 2000; ++i) {
    RandomStream rng = RandomStream::for_sample(7, 0, static_cast<uint64_t>(i));
    const Box b = sample_crop(40, 30, big, rng);
    ASSERT_GE(b.x, 0);
    ASSERT_GE(b.y, 0);
    right += b.x + b.w == 40, bottom += b.y + b.h == 30;
  }
  EXPECT_GT(right, 0);
  EXPECT_GT(bottom, 0);
  // An image no draw fits (areas of at least 800 px in a 10-pixel-high strip): the centre, at 4/3.
  RandomStream rng = RandomStream::for_sample(6, 1, 0);
  const Box wide = sample_crop(1000, 10, aug, rng);
  EXPECT_EQ(wide.w, 13);
  EXPECT_EQ(wide.h, 10);
  EXPECT_EQ(wide.x, 493);
  EXPECT_EQ(wide.y, 0);
  const Box tall = sample_crop(10, 1000, aug, rng);
  EXPECT_EQ(tall.w, 10);
  EXPECT_EQ(tall.h, 13);
  EXPECT_EQ(tall.y, 493);
}

// --min-crop-covered 0: crops as small as --min-crop-area (torchvision's RandomResizedCrop
// takes 0.08); with TF-slim's 0.1 no crop is below 10% (the test above).
TEST(Transforms, MinCoveredBelowATenthAllowsSmallerCrops) {
  TrainAugment aug;
  aug.area_min = 0.02, aug.area_max = 0.09, aug.min_covered = 0.0;
  int small = 0;
  for (int i = 0; i < 200; ++i) {
    RandomStream rng = RandomStream::for_sample(2, 0, static_cast<uint64_t>(i));
    const Box b = sample_crop(400, 300, aug, rng);
    const double area = b.w * b.h / (400.0 * 300);
    EXPECT_TRUE(area == 1.0 || (area >= 0.02 - 1e-12 && area <= 0.09 + 1e-12)) << area;
    small += area < 0.1;
  }
  EXPECT_GT(small, 150);
  aug.min_covered = 0.1;  // every draw is below it: the whole-image fallback
  RandomStream rng = RandomStream::for_sample(2, 0, 0);
  const Box whole = sample_crop(400, 300, aug, rng);
  EXPECT_EQ(whole.w * whole.h, 400.0 * 300);
}

// Shrinking by less than 2x is plain bilinear with half-pixel centres (PyTorch's interpolate
// without antialias; the wider filter starts above 2x): columns 0, 255, 0 to 2 pixels take
// 0.75 and 0.25 of their neighbours, 63.75 each.
TEST(Transforms, ShrinkingUnderTwiceIsBilinear) {
  Image src(3, 3);
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 3; ++x)
      for (int ch = 0; ch < 3; ++ch) src.row(y)[x * 3 + ch] = x == 1 ? 255 : 0;
  const Image out = resize_region(src, Box{0, 0, 3, 3}, 2);
  ASSERT_EQ(out.width, 2);
  for (uint8_t v : out.rgb) EXPECT_EQ(v, 64);
}

TEST(Transforms, EvalBoxesAndFlip) {
  // TensorFlow's central_crop(0.875): margins of int((600 - 525) / 2) = 37 rows and 50
  // columns, the rest (700 x 526) kept; 350 x 375 keeps 308 x 329 (margins 21 and 23).
  const Box c = central_crop(800, 600);
  EXPECT_DOUBLE_EQ(c.w, 700);
  EXPECT_DOUBLE_EQ(c.x, 50);
  EXPECT_DOUBLE_EQ(c.y, 37);
  EXPECT_DOUBLE_EQ(c.h, 526);
  const Box odd = central_crop(350, 375);
  EXPECT_DOUBLE_EQ(odd.x, 21);
  EXPECT_DOUBLE_EQ(odd.w, 308);
  EXPECT_DOUBLE_EQ(odd.y, 23);
  EXPECT_DOUBLE_EQ(odd.h, 329);
  // The 6 views (each also flipped: 12): the whole image, the centre crop, and crops of the
  // centre's size in the four corners (top-left, top-right, bottom-left, bottom-right).
  const std::vector<Box> twelve = twelve_crop_boxes(800, 600);
  const std::vector<std::array<double, 4>> want = {
      {0, 0, 800, 600}, {50, 37, 700, 526}, {0, 0, 700, 526}, {100, 0, 700, 526}, {0, 74, 700, 526}, {100, 74, 700, 526}};
  ASSERT_EQ(twelve.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_DOUBLE_EQ(twelve[i].x, want[i][0]) << "view " << i;
    EXPECT_DOUBLE_EQ(twelve[i].y, want[i][1]) << "view " << i;
    EXPECT_DOUBLE_EQ(twelve[i].w, want[i][2]) << "view " << i;
    EXPECT_DOUBLE_EQ(twelve[i].h, want[i][3]) << "view " << i;
  }
  // A flip mirrors every pixel of every row, the middle one staying (odd width).
  Image img = test_picture(5, 2);
  const Image orig = img;
  flip_horizontal(img);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 5; ++x)
      for (int c2 = 0; c2 < 3; ++c2) EXPECT_EQ(img.row(y)[x * 3 + c2], orig.row(y)[(4 - x) * 3 + c2]) << x << "," << y;
  flip_horizontal(img);
  EXPECT_EQ(img.rgb, orig.rgb);
}

TEST(Transforms, ResizeIsExactOnFlatImagesAndAntialiasesWhenShrinking) {
  Image flat(300, 200);
  std::fill(flat.rgb.begin(), flat.rgb.end(), 77);
  const Image r = resize_region(flat, {10.3, 5.7, 250, 180}, 50);
  for (uint8_t v : r.rgb) ASSERT_EQ(v, 77);
  // A one-pixel checkerboard shrunk 8x must come out near its mean, not as stripes.
  Image checks(400, 400);
  for (int y = 0; y < 400; ++y)
    for (int x = 0; x < 400; ++x)
      for (int c = 0; c < 3; ++c) checks.row(y)[x * 3 + c] = (x + y) % 2 ? 255 : 0;
  const Image small = resize_region(checks, {0, 0, 400, 400}, 50);
  for (uint8_t v : small.rgb) ASSERT_NEAR(v, 127.5, 12.0);
  // Upscaling interpolates between neighbours.
  Image two(2, 1);
  two.rgb = {0, 0, 0, 200, 200, 200};
  const Image up = resize_region(two, {0, 0, 2, 1}, 4);
  EXPECT_EQ(up.row(0)[0], 0);
  EXPECT_EQ(up.row(0)[3], 50);
  EXPECT_EQ(up.row(0)[9], 200);
}

// TF's adjust_saturation the long way: RGB -> HSV, scale S (clipped), HSV -> RGB.
void saturate_via_hsv(float& r, float& g, float& b, float f) {
  const float mx = std::max({r, g, b}), mn = std::min({r, g, b}), delta = mx - mn;
  if (mx <= 0 || delta <= 0) return;
  float h = mx == r ? (g - b) / delta : (mx == g ? 2 + (b - r) / delta : 4 + (r - g) / delta);
  if (h < 0) h += 6;
  const float s = std::min(1.0f, delta / mx * f), c = mx * s;
  const float x = c * (1 - std::fabs(std::fmod(h, 2.0f) - 1)), m = mx - c;
  const float table[6][3] = {{c, x, 0}, {x, c, 0}, {0, c, x}, {0, x, c}, {x, 0, c}, {c, 0, x}};
  const int sector = std::min(5, static_cast<int>(h));
  r = table[sector][0] + m, g = table[sector][1] + m, b = table[sector][2] + m;
}

// The jitter's draws: brightness uniform in +-32/255 and saturation in [0.5, 1.5] (TF-slim's
// fast distort_color), each over its whole range, centred, and the two independent.
TEST(Transforms, ColorJitterDrawsTfSlimsRanges) {
  RandomStream rng(12, 0);
  const TrainAugment aug;
  const int n = 20000;
  double d_min = 1, d_max = -1, s_min = 2, s_max = 0, d_sum = 0, s_sum = 0, ds_sum = 0;
  for (int i = 0; i < n; ++i) {
    const ColorJitter j = sample_color_jitter(aug, rng);
    EXPECT_TRUE(j.brightness_first);
    d_min = std::min<double>(d_min, j.delta), d_max = std::max<double>(d_max, j.delta);
    s_min = std::min<double>(s_min, j.saturation), s_max = std::max<double>(s_max, j.saturation);
    d_sum += j.delta, s_sum += j.saturation, ds_sum += j.delta * (j.saturation - 1.0);
  }
  const double bound = 32.0 / 255.0;
  EXPECT_GE(d_min, -bound);
  EXPECT_LE(d_max, bound);
  EXPECT_LT(d_min, -0.99 * bound);
  EXPECT_GT(d_max, 0.99 * bound);
  EXPECT_GE(s_min, 0.5);
  EXPECT_LE(s_max, 1.5);
  EXPECT_LT(s_min, 0.505);
  EXPECT_GT(s_max, 1.495);
  // Means (standard errors 5e-4 and 2e-3) and the covariance of the two (about 1.4e-4).
  EXPECT_NEAR(d_sum / n, 0.0, 3e-3);
  EXPECT_NEAR(s_sum / n, 1.0, 1e-2);
  EXPECT_NEAR(ds_sum / n, 0.0, 1e-3);
}

TEST(Transforms, ColorJitterMatchesTheHsvDefinition) {
  RandomStream rng(11, 0);
  for (int i = 0; i < 2000; ++i) {
    Image px(1, 1);
    for (auto& v : px.rgb) v = static_cast<uint8_t>(rng.below(256));
    ColorJitter j;
    j.brightness_first = i % 2;
    j.delta = static_cast<float>(rng.uniform(-0.125, 0.125));
    j.saturation = static_cast<float>(rng.uniform(0.5, 1.5));
    float want[3] = {px.rgb[0] / 255.0f, px.rgb[1] / 255.0f, px.rgb[2] / 255.0f};
    if (j.brightness_first) {
      for (float& v : want) v += j.delta;
      saturate_via_hsv(want[0], want[1], want[2], j.saturation);
    } else {
      saturate_via_hsv(want[0], want[1], want[2], j.saturation);
      for (float& v : want) v += j.delta;
    }
    float got[3];
    write_chw(px, false, &j, Normalization::Inception, got);
    for (int c = 0; c < 3; ++c) ASSERT_NEAR((got[c] + 1) / 2, std::clamp(want[c], 0.0f, 1.0f), 2e-5) << i;
  }
}

TEST(Transforms, WriteChwFlipsAndNormalises) {
  Image img(2, 1);
  img.rgb = {255, 0, 128, 0, 51, 255};
  float out[6];
  write_chw(img, false, nullptr, Normalization::Inception, out);
  EXPECT_FLOAT_EQ(out[0], 1.0f);    // R of pixel 0
  EXPECT_FLOAT_EQ(out[1], -1.0f);   // R of pixel 1
  EXPECT_FLOAT_EQ(out[5], 1.0f);    // B of pixel 1
  write_chw(img, true, nullptr, Normalization::ImageNet, out);
  EXPECT_NEAR(out[0], (0.0 - 0.485) / 0.229, 1e-5);  // flipped: pixel 1 first
  EXPECT_NEAR(out[2], (0.2 - 0.456) / 0.224, 1e-5);
  uint8_t raw[6];
  write_chw(img, true, nullptr, raw);
  EXPECT_EQ(raw[0], 0);
  EXPECT_EQ(raw[1], 255);
  EXPECT_EQ(raw[5], 128);
  // Jitter on a gray image: saturation keeps it gray, brightness moves every channel alike.
  Image gray(3, 3);
  std::fill(gray.rgb.begin(), gray.rgb.end(), 128);
  ColorJitter j;
  j.delta = 0.1f;
  j.saturation = 1.4f;
  uint8_t g[27];
  write_chw(gray, false, &j, g);
  for (uint8_t v : g) EXPECT_EQ(v, 154);
}

// An ImageFolder of small JPEGs: class i has counts[i] images; `broken` extra bad files.
std::string make_folder(const std::string& name, const std::vector<int>& counts, int broken = 0) {
  const std::string root = fresh_dir(name);
  for (size_t c = 0; c < counts.size(); ++c) {
    const std::string dir = root + "/class_" + std::to_string(c);
    fs::create_directories(dir);
    for (int i = 0; i < counts[c]; ++i)
      testing::write_bytes(dir + "/img_" + std::to_string(i) + ".jpg",
                           encode_jpeg(test_picture(60 + 7 * i % 50, 50 + 5 * int(c)), JpegKind::Baseline, 80));
  }
  for (int i = 0; i < broken; ++i)
    testing::write_bytes(root + "/class_0/broken_" + std::to_string(i) + ".jpg", std::vector<uint8_t>(100, 7));
  return root;
}

TEST(Datasets, ImageFolderListAndCocoJson) {
  const std::string root = make_folder("formats", {3, 1, 2});
  const Dataset f = load_dataset(root);
  EXPECT_EQ(f.classes, (std::vector<std::string>{"class_0", "class_1", "class_2"}));
  EXPECT_EQ(f.counts(), (std::vector<int64_t>{3, 1, 2}));
  {  // A class's files in name order, whatever order the directory lists them in.
    const std::string sorted = root + "_sorted/only";
    fs::remove_all(root + "_sorted");
    fs::create_directories(sorted);
    for (const char* name : {"m", "c", "x", "a", "q", "f", "z", "b", "k", "t", "e", "p"})
      fs::copy_file(f.samples[0].path, sorted + "/" + name + ".jpg");
    const Dataset s = load_dataset(root + "_sorted");
    ASSERT_EQ(s.samples.size(), 12u);
    for (size_t i = 1; i < 12; ++i) EXPECT_LT(s.samples[i - 1].path, s.samples[i].path) << i;
  }
  // The same set as a list file, written and read back.
  write_list_file(root + "/list.txt", f);
  const Dataset l = load_dataset(root + "/list.txt");
  ASSERT_EQ(l.samples.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_TRUE(fs::equivalent(l.samples[i].path, f.samples[i].path));
    EXPECT_EQ(l.samples[i].label, f.samples[i].label);
  }
  // A list and its names file saved with a UTF-8 byte order mark (as Windows editors do).
  {
    std::ofstream bom(root + "/bom.txt"), names(root + "/bom.classes.txt");
    bom << "\xEF\xBB\xBF" << fs::path(f.samples[0].path).lexically_relative(root).string() << "\t0\n";
    names << "\xEF\xBB\xBF" << "first\nsecond\n";
  }
  const Dataset b = load_dataset(root + "/bom.txt");
  ASSERT_EQ(b.samples.size(), 1u);
  EXPECT_TRUE(fs::equivalent(b.samples[0].path, f.samples[0].path));
  EXPECT_EQ(b.classes, (std::vector<std::string>{"first", "second"}));
  // Image files of a format we do not decode, and a link whose target is gone, are samples
  // (unreadable: warned about and counted), not left out unseen; other files are not images.
  {
    const std::string odd = make_folder("odd_files", {2}, 0);
    std::ofstream(odd + "/class_0/photo.webp") << "RIFF";
    std::ofstream(odd + "/class_0/notes.txt") << "not an image";
    fs::remove(odd + "/class_0/gone.jpg");
    fs::create_symlink(odd + "/class_0/nowhere.jpg", odd + "/class_0/gone.jpg");
    // A JPEG named .jfif, and one without an extension (found by its bytes); a hidden file
    // and a text file without an extension are not images.
    const std::vector<uint8_t> jpeg = encode_jpeg(test_picture(16, 16), JpegKind::Baseline);
    testing::write_bytes(odd + "/class_0/scan.jfif", jpeg);
    testing::write_bytes(odd + "/class_0/IMG_0001", jpeg);
    testing::write_bytes(odd + "/class_0/.hidden", jpeg);
    std::ofstream(odd + "/class_0/README") << "notes";
    const Dataset o = load_dataset(odd);
    EXPECT_EQ(o.samples.size(), 6u);  // 2 images, the .webp, the dangling link, .jfif, IMG_0001
  }
  // Hidden folders: a notebook's .ipynb_checkpoints beside the classes is no class (as
  // class 0 it would shift every label), nor inside a class (its copies would count twice);
  // both are said on stderr.
  {
    const std::string h = make_folder("hidden_folders", {2, 1}, 0);
    fs::create_directories(h + "/.ipynb_checkpoints");
    fs::create_directories(h + "/class_1/.ipynb_checkpoints");
    const std::vector<uint8_t> jpeg = encode_jpeg(test_picture(8, 8), JpegKind::Baseline);
    testing::write_bytes(h + "/.ipynb_checkpoints/a.jpg", jpeg);
    testing::write_bytes(h + "/class_1/.ipynb_checkpoints/0-checkpoint.jpg", jpeg);
    // Images beside the class folders are in no class: said once, with the first by name.
    testing::write_bytes(h + "/zz.jpg", jpeg);
    testing::write_bytes(h + "/stray.png", jpeg);
    testing::write_bytes(h + "/README.txt", std::vector<uint8_t>{'h', 'i'});
    ::testing::internal::CaptureStderr();
    const Dataset hd = load_dataset(h);
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(hd.classes, (std::vector<std::string>{"class_0", "class_1"}));
    ASSERT_EQ(hd.samples.size(), 3u);
    EXPECT_EQ(hd.samples[0].label, 0);
    EXPECT_EQ(hd.samples[2].label, 1);
    EXPECT_NE(err.find("hidden folder '.ipynb_checkpoints' is not a class, skipped"), std::string::npos) << err;
    EXPECT_NE(err.find("class_1/.ipynb_checkpoints: hidden folder skipped"), std::string::npos) << err;
    EXPECT_NE(err.find(h + ": 2 image(s) beside the class folders belong to no class, skipped ('stray.png', ...)"),
              std::string::npos)
        << err;
    EXPECT_EQ(err.find("README"), std::string::npos) << err;
  }
  // Links that loop: a file link to itself is a sample (unreadable, counted when decoded); a
  // folder link back up the tree, a second link to one folder and a looping link among the
  // class folders are listed once or not at all, never followed forever.
  {
    const std::string loops = make_folder("link_loops", {2, 1}, 0);
    fs::create_symlink("loop.jpg", loops + "/class_1/loop.jpg");
    fs::create_directory(loops + "/class_0/sub");
    testing::write_bytes(loops + "/class_0/sub/deep.jpg", encode_jpeg(test_picture(8, 8), JpegKind::Baseline));
    fs::create_symlink(".", loops + "/class_0/self");
    fs::create_symlink("..", loops + "/class_0/sub/up");
    fs::create_symlink(fs::absolute(loops + "/class_0/sub"), loops + "/class_0/again");
    fs::create_symlink("spin", loops + "/spin");
    const Dataset looped = load_dataset(loops);
    EXPECT_EQ(looped.classes, (std::vector<std::string>{"class_0", "class_1"}));
    EXPECT_EQ(looped.samples.size(), 5u);  // class_0: 2 images and sub/deep.jpg once; class_1: 1 and the loop
  }
  // List lines: blanks before the path are not part of it; '#' starts a comment, unless the
  // line ends in a label (a file whose name starts with '#').
  {
    const std::string rel = fs::path(f.samples[0].path).lexically_relative(root).string();
    fs::copy_file(f.samples[0].path, root + "/#1.jpg", fs::copy_options::overwrite_existing);
    std::ofstream(root + "/hash.txt") << "# path label\n  " << rel << "\t0\n#1.jpg 1\n# split seed 500\n";
    const Dataset h = load_dataset(root + "/hash.txt");
    ASSERT_EQ(h.samples.size(), 2u);
    EXPECT_TRUE(fs::equivalent(h.samples[0].path, f.samples[0].path));
    EXPECT_TRUE(fs::equivalent(h.samples[1].path, root + "/#1.jpg"));
    EXPECT_EQ(h.samples[1].label, 1);
    EXPECT_EQ(h.classes.size(), 2u);  // the comment's 500 is no label
    // An entry-shaped '#' line whose file is missing is a comment too, but said ("# split 2",
    // blank after the '#', is a comment as written).
    std::ofstream(root + "/hash2.txt") << "# split 2\n" << rel << " 0\n#2.jpg 1\n#3.jpg 1\n";
    ::testing::internal::CaptureStderr();
    const Dataset h2 = load_dataset(root + "/hash2.txt");
    const std::string said = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(h2.samples.size(), 1u);
    EXPECT_NE(said.find("hash2.txt: 2 line(s) starting with '#' read as comments, though shaped as 'path label' "
                        "(line 3 first): their files do not exist"),
              std::string::npos)
        << said;
    ::testing::internal::CaptureStderr();
    load_dataset(root + "/hash.txt");
    EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  }
  // COCO JSON with category ids that are not 0..n-1.
  {
    std::ofstream j(root + "/train.json");
    j << R"({"images":[{"id":10,"file_name":"class_0/img_0.jpg"},{"id":11,"file_name":"class_2/img_1.jpg"}],)"
      << R"("annotations":[{"id":1,"image_id":10,"category_id":7},{"id":2,"image_id":11,"category_id":3}],)"
      << R"("categories":[{"id":7,"name":"Aves"},{"id":3,"name":"Plantae"}]})";
  }
  const Dataset c = load_dataset(root + "/train.json");
  EXPECT_EQ(c.classes, (std::vector<std::string>{"Plantae", "Aves"}));
  ASSERT_EQ(c.samples.size(), 2u);
  EXPECT_EQ(c.samples[0].label, 1);
  EXPECT_TRUE(fs::exists(c.samples[1].path));
}

TEST(Datasets, BadLayoutsAreClearErrors) {
  auto expect_error = [](const std::string& path, const std::string& part) {
    try {
      load_dataset(path);
      ADD_FAILURE() << "no error for " << path;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  const std::string d = fresh_dir("bad");
  expect_error(d, "no class folders");
  fs::create_directories(d + "/a");
  expect_error(d, "no images");
  {
    std::ofstream(d + "/list.txt") << "a/x.jpg 0\nthis-line-has-no-label\n";
  }
  expect_error(d + "/list.txt", "list.txt:2");
  { std::ofstream(d + "/neg.txt") << "a/x.jpg -3\n"; }
  expect_error(d + "/neg.txt", "neg.txt:1");
  { std::ofstream(d + "/x.json") << R"({"images": []})"; }
  expect_error(d + "/x.json", "annotations");
  { std::ofstream(d + "/y.json") << "{not json"; }
  expect_error(d + "/y.json", "not valid JSON");
  expect_error(d + "/nothing.txt", "cannot open");
  expect_error(d + "/data.csv", "no such file");
  { std::ofstream(d + "/huge.txt") << "a/x.jpg 4000000000\n"; }  // a mistyped column, not 4e9 classes
  expect_error(d + "/huge.txt", "huge.txt:1: label 4000000000 is not below");
  {
    std::ofstream nul(d + "/nul.txt");
    nul << "a/x.jpg 12" << '\0' << "34\n";  // not 12, read to the NUL
  }
  expect_error(d + "/nul.txt", "nul.txt:1: label '12");
  { std::ofstream(d + "/huge.txt") << "a/x.jpg 1048576\n"; }  // 2^20: each label below names a class
  expect_error(d + "/huge.txt", "huge.txt:1: label 1048576 is not below 1048576 (a label is a class index)");
  {
    std::ofstream(d + "/two.json") << R"({"images":[{"id":1,"file_name":"a.jpg"}],"categories":[{"id":1,"name":"x"},)"
                                    << R"({"id":2,"name":"y"}],"annotations":[{"image_id":1,"category_id":1},)"
                                    << R"({"image_id":1,"category_id":2}]})";
  }
  expect_error(d + "/two.json", "image id 1 has annotations of two categories (x, y)");
  // Ids are JSON integers within int64: a float or a larger number is named, never truncated
  // (a float beyond int64 converted to it was undefined; found by fuzz_dataset).
  for (const std::string id : {"9223372036854775808073", "9223372036854775808", "2.5", "\"7\""}) {
    std::ofstream(d + "/ids.json") << R"({"images":[{"id":1,"file_name":"a.jpg"}],"annotations":[{"image_id":1,)"
                                   << R"("category_id":1}],"categories":[{"id":)" << id << R"(,"name":"x"}]})";
    expect_error(d + "/ids.json", "'id' must be an integer id, got ");
  }
  // Class names go into JSON (checkpoints, config.json, domain files): a Latin-1 folder name is
  // refused when the data set is read, naming it with its odd byte shown.
  const std::string latin = fresh_dir("latin1");
  fs::create_directories(latin + "/caf\xE9");
  { std::ofstream(latin + "/caf\xE9/x.jpg") << "x"; }
  expect_error(latin, "class name 'caf\\xE9' is not UTF-8");
  {
    std::ofstream(d + "/names.txt") << "a/x.jpg 0\n";
    std::ofstream(d + "/names.classes.txt") << "na\xEFve\n";
  }
  expect_error(d + "/names.txt", "class name 'na\\xEFve' is not UTF-8");
  // Valid UTF-8 of every length passes, as do names in plain ASCII.
  const std::string utf8 = fresh_dir("utf8");
  for (const char* name : {"caf\xC3\xA9", "\xE6\x9D\xB1\xE4\xBA\xAC", "\xF0\x9F\x90\xA6", "plain"}) {
    fs::create_directories(utf8 + "/" + name);
    std::ofstream(utf8 + "/" + name + "/x.jpg") << "x";
  }
  EXPECT_EQ(load_dataset(utf8).classes.size(), 4u);
  // Names holding a tab or a line break (they are written one per line and as tab-separated
  // fields), and COCO categories named twice, are refused when the data set is read.
  const std::string tabbed = fresh_dir("tabbed");
  fs::create_directories(tabbed + "/a\tb");
  std::ofstream(tabbed + "/a\tb/x.jpg") << "x";
  expect_error(tabbed, "holds a tab or a line break");
  {
    std::ofstream(d + "/dup.json") << R"({"images":[{"id":1,"file_name":"a.jpg"}],"categories":[{"id":1,"name":"bird"},)"
                                    << R"({"id":2,"name":"bird"}],"annotations":[{"image_id":1,"category_id":1}]})";
  }
  expect_error(d + "/dup.json", "two categories are named 'bird'");
  // Overlong and surrogate forms are not UTF-8 either.
  for (const char* name : {"\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80"}) {
    const std::string odd = fresh_dir("odd_utf8");
    fs::create_directories(odd + "/" + name);
    std::ofstream(odd + "/" + name + "/x.jpg") << "x";
    expect_error(odd, "is not UTF-8");
  }
}

// COCO JSON: one sample per image (its annotations agreeing), in the images' order; images
// without an annotation are left out.
TEST(Datasets, CocoJsonHasOneSamplePerAnnotatedImage) {
  const std::string d = fresh_dir("coco");
  {
    std::ofstream(d + "/t.json") << R"({"images":[{"id":5,"file_name":"b.jpg"},{"id":3,"file_name":"a.jpg"},)"
                                  << R"({"id":9,"file_name":"test_only.jpg"}],"categories":[{"id":4,"name":"x"}],)"
                                  << R"("annotations":[{"image_id":3,"category_id":4},{"image_id":5,"category_id":4},)"
                                  << R"({"image_id":5,"category_id":4}]})";
  }
  const Dataset c = load_dataset(d + "/t.json");
  ASSERT_EQ(c.samples.size(), 2u);
  EXPECT_EQ(fs::path(c.samples[0].path).filename(), "b.jpg");
  EXPECT_EQ(fs::path(c.samples[1].path).filename(), "a.jpg");
}

// A validation set lines up with the training set's classes by name: one that lacks a class,
// or names them in another order, gets the training set's labels; a list file's labels are
// indices already.
TEST(Datasets, ClassDifferenceNamesTheFirstDifference) {
  const std::vector<std::string> ab{"a", "b"};
  EXPECT_EQ(data::class_difference(ab, "the run", ab, "--data"), "");
  EXPECT_EQ(data::class_difference(ab, "the run", {"a", "c"}, "--data"),
            "class 'c' of --data is not one of the 2 of the run");
  EXPECT_EQ(data::class_difference(ab, "the run", {"a"}, "--data"), "class 'b' of the run is not in --data");
  EXPECT_EQ(data::class_difference(ab, "the run", {"b", "a"}, "--data"),
            "the same classes in another order: output 0 is 'a' in the run, 'b' in --data");
  EXPECT_EQ(data::class_difference(ab, "the run", {"a", "b", "b"}, "--data"), "3 classes in --data, 2 in the run");
}

TEST(Datasets, AlignClassesByName) {
  Dataset val;
  val.classes = {"owl", "crow"};  // the training set has no "hawk" images here, and sorts otherwise
  val.samples = {{"o.jpg", 0}, {"c.jpg", 1}};
  const Dataset a = align_classes(val, {"crow", "hawk", "owl"}, "--val v", "--data t");
  EXPECT_EQ(a.classes, (std::vector<std::string>{"crow", "hawk", "owl"}));
  EXPECT_EQ(a.samples[0].label, 2);
  EXPECT_EQ(a.samples[1].label, 0);
  EXPECT_EQ(a.counts(), (std::vector<int64_t>{1, 0, 1}));
  try {
    align_classes(val, {"crow", "hawk"}, "--val v", "--data t");
    ADD_FAILURE() << "no error for a class the training set lacks";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--val v: class 'owl' is not one of the 2 classes of --data t"), std::string::npos)
        << e.what();
  }
  // A training set written as a list (fgvc-subset's) keeps its class names beside it: a
  // validation folder lines up by name, and a class left without images is still there.
  {
    const std::string train = make_folder("named_train", {2, 3, 0, 1}), val_root = make_folder("named_val", {1, 0, 1, 2});
    fs::remove_all(val_root + "/class_1");  // the validation set lacks a class
    Dataset sub = load_dataset(train);
    sub.samples.erase(std::remove_if(sub.samples.begin(), sub.samples.end(), [](const Sample& s) { return s.label == 3; }),
                      sub.samples.end());  // and the subset lost the last class's only image
    write_list_file(train + "/subset.txt", sub);
    EXPECT_TRUE(fs::exists(train + "/subset.classes.txt"));
    const Dataset list = load_dataset(train + "/subset.txt");
    EXPECT_FALSE(list.numbered);
    EXPECT_EQ(list.classes, sub.classes);
    const Dataset v = align_classes(load_dataset(val_root), list.classes, "--val v", "--data list.txt");
    EXPECT_EQ(v.counts(), (std::vector<int64_t>{1, 0, 1, 2}));
    // Names that do not cover the labels are an error naming both files; numbered lists
    // (no names) drop a stale names file.
    { std::ofstream(train + "/subset.classes.txt") << "class_0\n"; }
    try {
      load_dataset(train + "/subset.txt");
      ADD_FAILURE() << "no error for too few names";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("subset.classes.txt names 1 classes"), std::string::npos) << e.what();
    }
    { std::ofstream(train + "/subset.classes.txt") << "class_0\r\nclass_1\r\nclass_2\r\nclass_3\r\n\r\n\n"; }
    EXPECT_EQ(load_dataset(train + "/subset.txt").classes, sub.classes);  // CRLF and blank lines at the end
    // A list written through "..": its paths are relative to where it really is.
    fs::create_directories(train + "/lists");
    write_list_file(train + "/lists/../lists/up.txt", sub);
    const Dataset up = load_dataset(train + "/lists/up.txt");
    ASSERT_EQ(up.samples.size(), sub.samples.size());
    for (size_t k = 0; k < up.samples.size(); ++k) EXPECT_TRUE(fs::equivalent(up.samples[k].path, sub.samples[k].path));
    // Paths with blanks at their ends: a leading blank round-trips (written "./ name"), a
    // trailing one is refused by name (the reader trims it: the list would name another file).
    {
      fs::create_directories(train + "/ spaced");
      { std::ofstream(train + "/ spaced/a b.jpg") << "x"; }
      { std::ofstream(train + "/class_0/trailing.jpg ") << "x"; }
      Dataset blanks = sub;
      blanks.samples = {{train + "/ spaced/a b.jpg", 0}};
      write_list_file(train + "/blanks.txt", blanks);
      const Dataset back = load_dataset(train + "/blanks.txt");
      ASSERT_EQ(back.samples.size(), 1u);
      EXPECT_TRUE(fs::equivalent(back.samples[0].path, train + "/ spaced/a b.jpg")) << back.samples[0].path;
      blanks.samples = {{train + "/class_0/trailing.jpg ", 0}};
      try {
        write_list_file(train + "/blanks.txt", blanks);
        ADD_FAILURE() << "no error for a name ending with a blank";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("'class_0/trailing.jpg ' ends with a blank"), std::string::npos) << e.what();
      }
    }
    Dataset twice = sub;
    twice.classes[1] = twice.classes[0];
    EXPECT_THROW(write_list_file(train + "/twice.txt", twice), Error);
    sub.numbered = true;
    write_list_file(train + "/subset.txt", sub);
    EXPECT_FALSE(fs::exists(train + "/subset.classes.txt"));
    EXPECT_TRUE(load_dataset(train + "/subset.txt").numbered);
  }
  const std::string d = fresh_dir("align");
  { std::ofstream(d + "/val.txt") << "x.jpg 0\ny.jpg 1\n"; }  // the highest class (2) has no image
  const Dataset l = align_classes(load_dataset(d + "/val.txt"), {"crow", "hawk", "owl"}, "--val val.txt", "--data t");
  EXPECT_EQ(l.samples[1].label, 1);
  EXPECT_EQ(l.classes.size(), 3u);
  EXPECT_THROW(align_classes(load_dataset(d + "/val.txt"), {"crow"}, "--val val.txt", "--data t"), Error);
}

TEST(Subsets, AtMostNPerClassSeededAndStatistics) {
  const std::string root = make_folder("subset", {9, 2, 5, 0});
  const Dataset d = load_dataset(root);
  const Dataset s = balanced_subset(d, 3, 42);
  EXPECT_EQ(s.counts(), (std::vector<int64_t>{3, 2, 3, 0}));
  EXPECT_EQ(balanced_subset(d, 3, 42).samples.size(), s.samples.size());
  std::set<std::string> a, b;
  for (const auto& x : s.samples) a.insert(x.path);
  for (const auto& x : balanced_subset(d, 3, 42).samples) b.insert(x.path);
  EXPECT_EQ(a, b);  // same seed, same subset
  // A `usable` test that takes every sample draws the same subset; one that refuses a sample
  // has another of its class drawn in its place, and a class with too few usable keeps those.
  std::vector<std::string> all_usable, without;
  for (const auto& x : balanced_subset(d, 3, 42, [](const Sample&) { return true; }).samples) all_usable.push_back(x.path);
  EXPECT_EQ(std::set<std::string>(all_usable.begin(), all_usable.end()), a);
  const std::string refused = s.samples.front().path;  // drawn for class 0
  const Dataset other = balanced_subset(d, 3, 42, [&](const Sample& x) { return x.path != refused && x.label != 1; });
  EXPECT_EQ(other.counts(), (std::vector<int64_t>{3, 0, 3, 0}));
  for (const auto& x : other.samples) EXPECT_NE(x.path, refused);
  bool differs = false;
  for (uint64_t seed = 1; seed < 20 && !differs; ++seed) {
    std::set<std::string> c;
    for (const auto& x : balanced_subset(d, 3, seed).samples) c.insert(x.path);
    differs = c != a;
  }
  EXPECT_TRUE(differs);
  Dataset numbered = d;  // a list file without class names stays one in its subset
  numbered.numbered = true;
  EXPECT_TRUE(balanced_subset(numbered, 3, 42).numbered);
  EXPECT_FALSE(s.numbered);
  const LongTailStats st = long_tail_stats(d, 5);
  EXPECT_EQ(st.head_classes, 2);
  EXPECT_EQ(st.tail_classes, 2);
  EXPECT_EQ(st.head_images, 14);
  EXPECT_DOUBLE_EQ(st.imbalance, 4.5);
  // Class-balanced order: every non-empty class about equally often.
  const std::vector<int64_t> order = class_balanced_order(d, 3000, 1, 0);
  std::vector<int> per_class(4, 0);
  for (int64_t i : order) per_class[d.samples[i].label]++;
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(per_class[c], 1000, 120);
  EXPECT_EQ(per_class[3], 0);
  std::vector<int64_t> perm = shuffled_order(100, 5, 2);
  std::sort(perm.begin(), perm.end());
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(perm[i], i);
  // Uniform over all orders: each of the 6 orders of 3 about 1/6 of 1,200 epochs (a shuffle
  // that never leaves an item in place, Sattolo's, would give 2 of them); and each of 3
  // images kept by a subset of 1 about a third of 1,200 seeds.
  std::map<std::vector<int64_t>, int> orders;
  for (uint64_t epoch = 0; epoch < 1200; ++epoch) orders[shuffled_order(3, 7, epoch)]++;
  EXPECT_EQ(orders.size(), 6u);
  for (const auto& [order, times] : orders) EXPECT_NEAR(times, 200, 50);
  Dataset three;
  three.classes = {"only"};
  for (int i = 0; i < 3; ++i) three.samples.push_back({"img" + std::to_string(i) + ".jpg", 0});
  std::map<std::string, int> kept;
  for (uint64_t seed = 0; seed < 1200; ++seed) kept[balanced_subset(three, 1, seed).samples.at(0).path]++;
  EXPECT_EQ(kept.size(), 3u);
  for (const auto& [path, times] : kept) EXPECT_NEAR(times, 400, 70) << path;
  // Two of three: each kept by about two thirds of 3,000 seeds (a draw from the whole class at
  // each step, not from those left, keeps them 0.67, 0.78 and 0.56 of the time).
  std::map<std::string, int> kept2;
  for (uint64_t seed = 0; seed < 3000; ++seed)
    for (const auto& s : balanced_subset(three, 2, seed).samples) kept2[s.path]++;
  EXPECT_EQ(kept2.size(), 3u);
  for (const auto& [path, times] : kept2) EXPECT_NEAR(times, 2000, 90) << path;
}

TEST(Loader, SameBatchesWithOneOrFourWorkers) {
  const std::string root = make_folder("determinism", {7, 5, 6});
  LoaderOptions o;
  o.batch_size = 4;
  o.size = 32;
  o.seed = 9;
  auto epoch_batches = [&](int workers, uint64_t epoch) {
    o.workers = workers;
    Loader l(load_dataset(root), o);
    l.start_epoch(epoch);
    std::vector<std::vector<float>> out;
    Batch b;
    while (l.next(&b)) {
      out.push_back(b.images.to_vector<float>());
      for (int64_t y : b.labels.to_vector<int64_t>()) out.back().push_back(static_cast<float>(y));
    }
    return out;
  };
  const auto one = epoch_batches(1, 3), four = epoch_batches(4, 3);
  ASSERT_EQ(one.size(), 5u);  // 18 images in batches of 4
  EXPECT_EQ(one, four);
  EXPECT_NE(one, epoch_batches(2, 4));  // another epoch: another order and other augmentations
}

// Every worker decodes at once: the batches in the making do not use up the prefetch, so a
// consumer that waits finds prefetch + workers batches ready (not prefetch: then at most
// `prefetch` workers would ever be busy), and no more.
TEST(Loader, AllWorkersRunAheadByPrefetchPlusWorkers) {
  const std::string root = make_folder("run_ahead", {9, 8});
  LoaderOptions o;
  o.batch_size = 2;
  o.size = 16;
  o.workers = 3;
  o.prefetch = 1;
  o.warn = false;
  Loader l(load_dataset(root), o);  // 17 images: 9 batches
  l.start_epoch(0);
  const int64_t ahead = o.prefetch + o.workers;
  for (int waited = 0; waited < 3000 && l.ready_batches() < ahead; ++waited)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(l.ready_batches(), ahead);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(l.ready_batches(), ahead);  // the workers wait now
  Batch b;
  ASSERT_TRUE(l.next(&b));  // one handed out: one more made
  for (int waited = 0; waited < 3000 && l.ready_batches() < ahead; ++waited)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(l.ready_batches(), ahead);
  int64_t batches = 1;
  while (l.next(&b)) ++batches;
  EXPECT_EQ(batches, 9);
  EXPECT_EQ(l.ready_batches(), 0);
}

TEST(Loader, SkipsAndCountsBrokenFiles) {
  const std::string root = make_folder("broken", {4, 3}, 2);
  LoaderOptions o;
  o.batch_size = 3;
  o.size = 24;
  o.workers = 2;
  o.warn = false;
  Loader l(load_dataset(root), o);
  l.start_epoch(0);
  Batch b;
  int64_t images = 0;
  while (l.next(&b)) {
    images += b.images.size(0);
    EXPECT_EQ(b.labels.size(0), b.images.size(0));
  }
  EXPECT_EQ(images, 7);
  EXPECT_EQ(l.skipped(), 2);
  // A batch given back (a run stopped before its step) takes its unreadable files out of the
  // count: the resumed run takes the batch again and counts them then, once.
  {
    Loader back(load_dataset(root), o);
    back.start_epoch(0);
    int64_t before = 0;
    bool gave_back = false;
    while (back.next(&b)) {
      if (b.skipped > 0 && !gave_back) {
        EXPECT_EQ(back.skipped(), before + b.skipped);
        back.give_back(b);
        EXPECT_EQ(back.skipped(), before);
        gave_back = true;
      }
      before = back.skipped();
    }
    EXPECT_TRUE(gave_back);
  }
  // A later epoch meets the same files: counted in its epoch, warned about only the first time.
  {
    LoaderOptions loud = o;
    loud.warn = true;
    Loader twice(load_dataset(root), loud);
    std::string warned[2];
    for (int epoch = 0; epoch < 2; ++epoch) {
      ::testing::internal::CaptureStderr();
      twice.start_epoch(epoch);
      while (twice.next(&b)) {
      }
      warned[epoch] = ::testing::internal::GetCapturedStderr();
      EXPECT_EQ(twice.skipped(), 2) << epoch;
      EXPECT_EQ(twice.skipped_files(), 2) << epoch;
    }
    EXPECT_NE(warned[0].find("warning: skipped"), std::string::npos) << warned[0];
    EXPECT_NE(warned[0].find("2 unreadable file(s) skipped in epoch 1"), std::string::npos) << warned[0];
    EXPECT_EQ(warned[1], "");
  }
  // Warnings come with the batches handed out: a run that stops after one batch warns about
  // (and counts) that batch's bad files only, not those of batches its workers made ahead.
  for (int64_t used = 0; used <= 3; ++used) {
    o.warn = true;
    Loader w(load_dataset(root), o);
    ::testing::internal::CaptureStderr();
    w.start_epoch(1);
    int64_t counted = 0;
    std::vector<std::string> named;
    for (int64_t k = 0; k < used && w.next(&b); ++k) {
      counted += b.skipped;
      for (const Batch::SkippedFile& f : b.skipped_files) named.push_back(f.error);
    }
    // Let the workers run ahead (every batch of the epoch made, or as many as they may hold),
    // so that batches with bad files exist that nobody took.
    const int64_t most = std::min<int64_t>(w.batches_per_epoch() - used, o.prefetch + o.workers);
    for (int waited = 0; waited < 3000 && w.ready_batches() < most; ++waited)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(w.ready_batches(), most) << "after " << used << " batch(es)";
    w.start_epoch(2);  // stops the workers; the unused batches are dropped
    const std::string err = ::testing::internal::GetCapturedStderr();
    int64_t warnings = 0;
    for (size_t at = err.find("warning: skipped"); at != std::string::npos; at = err.find("warning: skipped", at + 1))
      ++warnings;
    EXPECT_EQ(warnings, counted) << "after " << used << " batch(es):\n" << err;
    for (const std::string& e : named) EXPECT_NE(err.find(e), std::string::npos) << e;
  }
}

// A list entry may name a folder: an unreadable file like any other, not a failed run.
TEST(Decode, AFolderIsNotAFileToRead) {
  const std::string dir = make_folder("folder_entry", {1}, 0);
  std::vector<uint8_t> bytes;
  std::string error;
  EXPECT_FALSE(read_file(dir, &bytes, &error));
  EXPECT_NE(error.find("not a regular file"), std::string::npos) << error;
  EXPECT_FALSE(read_file(dir + "/no_such_file.jpg", &bytes, &error));
  EXPECT_NE(error.find("cannot open"), std::string::npos) << error;
}

TEST(Loader, EvalModesShapesAndDropLast) {
  const std::string root = make_folder("eval", {3, 2});
  LoaderOptions o;
  o.batch_size = 2;
  o.size = 16;
  o.mode = Mode::Eval12;
  o.drop_last = true;
  o.uint8_output = true;
  Loader l(load_dataset(root), o);
  EXPECT_EQ(l.batches_per_epoch(), 2);
  l.start_epoch(0);
  Batch b;
  ASSERT_TRUE(l.next(&b));
  EXPECT_EQ(b.images.shape(), (Shape{24, 3, 16, 16}));
  EXPECT_EQ(b.images.dtype(), DType::UInt8);
  EXPECT_EQ(b.labels.size(0), 24);
  // Each image's 12 views: its 6 boxes (transforms' twelve_crop_boxes), each followed by its
  // mirror image, every channel; the 6 boxes give 6 different views.
  const std::vector<uint8_t> px = b.images.to_vector<uint8_t>();
  const size_t view = 3 * 16 * 16;
  for (size_t image = 0; image < 2; ++image) {
    const uint8_t* v = px.data() + image * 12 * view;
    for (size_t k = 0; k < 6; ++k)
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 16; ++y)
          for (int x = 0; x < 16; ++x)
            ASSERT_EQ(v[2 * k * view + (c * 16 + y) * 16 + x], v[(2 * k + 1) * view + (c * 16 + y) * 16 + (15 - x)])
                << "image " << image << ", box " << k << ", channel " << c;
    for (size_t a = 0; a < 6; ++a)
      for (size_t k = a + 1; k < 6; ++k)
        EXPECT_FALSE(std::equal(v + 2 * a * view, v + (2 * a + 1) * view, v + 2 * k * view))
            << "image " << image << ": boxes " << a << " and " << k << " give the same view";
  }
  ASSERT_TRUE(l.next(&b));
  EXPECT_FALSE(l.next(&b));
  // An epoch starts at any of its batches, or at its end; outside them is an error.
  l.start_epoch(0, 1);
  ASSERT_TRUE(l.next(&b));
  EXPECT_FALSE(l.next(&b));
  l.start_epoch(0, 2);
  EXPECT_FALSE(l.next(&b));
  for (const int64_t first : {-1, 3}) EXPECT_THROW(l.start_epoch(0, first), Error) << first;
}

// Images of one to three pixels a side go through every mode: read, none skipped, and a flat
// image comes out flat in its own colour (the crops, the resize and the flips all stay inside).
// A training loader refuses augmentation values no draw can honour, naming the field.
TEST(Loader, AugmentationOutOfRangeIsAnError) {
  const std::string root = make_folder("augment_range", {2, 2});
  const std::vector<std::pair<std::function<void(TrainAugment&)>, std::string>> bad = {
      {[](TrainAugment& a) { a.brightness = std::nan(""); }, "brightness nan"},
      {[](TrainAugment& a) { a.area_min = 2; }, "area_max 1 is not in [2, 1]"},
      {[](TrainAugment& a) { a.area_min = 0; }, "area_min 0 must be positive"},
      {[](TrainAugment& a) { a.aspect_min = -1; }, "aspect_min -1 must be positive"},
      {[](TrainAugment& a) { a.attempts = 0; }, "attempts must be at least 1"},
      {[](TrainAugment& a) { a.saturation_min = 2; }, "saturation_max 1.5 is not in [2, "},
  };
  for (const auto& [spoil, message] : bad) {
    LoaderOptions o;
    o.size = 16;
    o.batch_size = 2;
    spoil(o.augment);
    try {
      Loader l(load_dataset(root), o);
      ADD_FAILURE() << message << ": taken";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
    o.mode = Mode::Eval;  // no augmentation there: not checked
    EXPECT_NO_THROW(Loader(load_dataset(root), o)) << message;
  }
}

TEST(Loader, TinyImagesInEveryMode) {
  const std::string root = fresh_dir("tiny");
  const std::vector<std::pair<int, int>> sizes = {{1, 1}, {1, 9}, {9, 1}, {2, 3}, {3, 2}};
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string dir = root + "/class_" + std::to_string(i % 2);
    fs::create_directories(dir);
    Image img(sizes[i].first, sizes[i].second);
    for (int y = 0; y < img.height; ++y)
      for (int x = 0; x < img.width; ++x)
        img.row(y)[x * 3] = 200, img.row(y)[x * 3 + 1] = static_cast<uint8_t>(30 + 10 * i), img.row(y)[x * 3 + 2] = 90;
    testing::write_bytes(dir + "/flat_" + std::to_string(i) + ".png", testing::encode_png(img));
    testing::write_bytes(dir + "/flat_" + std::to_string(i) + ".jpg", encode_jpeg(img, JpegKind::Baseline, 95));
  }
  const Dataset d = load_dataset(root);
  ASSERT_EQ(d.samples.size(), 2 * sizes.size());
  for (const Mode mode : {Mode::Train, Mode::Eval, Mode::Eval12}) {
    LoaderOptions o;
    o.batch_size = 4;
    o.size = 16;
    o.mode = mode;
    o.uint8_output = true;
    o.warn = false;
    o.seed = 3;
    o.augment.color_distort = false;  // the colour is what is checked
    Loader l(d, o);
    l.start_epoch(0);
    Batch b;
    int64_t images = 0;
    while (l.next(&b)) {
      EXPECT_EQ(b.skipped, 0) << (b.skipped_files.empty() ? "" : b.skipped_files[0].error);
      const int64_t views = mode == Mode::Eval12 ? 12 : 1;
      ASSERT_EQ(b.images.size(0), views * static_cast<int64_t>(b.indices.size()));
      const std::vector<uint8_t> px = b.images.to_vector<uint8_t>();
      for (size_t k = 0; k < b.indices.size(); ++k) {
        const Sample& s = d.samples[static_cast<size_t>(b.indices[k])];
        const bool png = s.path.size() > 4 && s.path.substr(s.path.size() - 4) == ".png";
        const int tolerance = png ? 0 : 6;  // the JPEG's own rounding of a flat colour
        const size_t i = static_cast<size_t>(std::stoi(s.path.substr(s.path.rfind('_') + 1)));
        const int want[3] = {200, static_cast<int>(30 + 10 * i), 90};
        for (int64_t v = 0; v < views; ++v)
          for (int c = 0; c < 3; ++c)
            for (int p = 0; p < 16 * 16; ++p) {
              const int got = px[((static_cast<size_t>(k) * views + v) * 3 + c) * 256 + p];
              ASSERT_LE(std::abs(got - want[c]), tolerance) << s.path << " mode " << static_cast<int>(mode) << " view " << v
                                                            << " channel " << c;
            }
      }
      images += static_cast<int64_t>(b.indices.size());
    }
    EXPECT_EQ(images, static_cast<int64_t>(d.samples.size()));
  }
}

}  // namespace
}  // namespace fgvc
