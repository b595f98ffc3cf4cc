// Test images written by the tests themselves: JPEGs through libjpeg (baseline, progressive,
// grayscale, CMYK with and without Adobe's marker, YCCK), PNG/BMP through stb_image_write (and
// 16-bit or alpha PNGs by hand), and a small gradient-plus-detail picture.
#pragma once
#include <jpeglib.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "data/image.h"

namespace fgvc {
namespace testing {

// A smooth colour gradient with a few sharp edges (so crops and flips are visible).
inline data::Image test_picture(int w, int h) {
  data::Image img(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.row(y) + x * 3;
      p[0] = static_cast<uint8_t>(255 * x / std::max(1, w - 1));
      p[1] = static_cast<uint8_t>(255 * y / std::max(1, h - 1));
      p[2] = static_cast<uint8_t>((x / 16 + y / 16) % 2 ? 200 : 40);
    }
  return img;
}

// Cmyk and Ycck: Adobe's inverted CMYK (its marker says so); CmykPlain: CMYK as printers
// mean it (0 = no ink) and no Adobe marker.
enum class JpegKind { Baseline, Progressive, Gray, Cmyk, CmykPlain, Ycck };

// luma_h x luma_v: the luma's sampling factors against the chroma's 1 x 1 (2 x 2 is libjpeg's
// default 4:2:0; 1 x 1 is 4:4:4, 2 x 1 4:2:2, 4 x 1 4:1:1, 4 x 2 4:1:0).
inline std::vector<uint8_t> encode_jpeg(const data::Image& img, JpegKind kind, int quality = 95, int luma_h = 2,
                                        int luma_v = 2) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = static_cast<JDIMENSION>(img.width);
  c.image_height = static_cast<JDIMENSION>(img.height);
  const bool four = kind == JpegKind::Cmyk || kind == JpegKind::CmykPlain || kind == JpegKind::Ycck;
  c.input_components = kind == JpegKind::Gray ? 1 : (four ? 4 : 3);
  c.in_color_space = kind == JpegKind::Gray ? JCS_GRAYSCALE : (four ? JCS_CMYK : JCS_RGB);
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  if (kind == JpegKind::Baseline || kind == JpegKind::Progressive)
    c.comp_info[0].h_samp_factor = luma_h, c.comp_info[0].v_samp_factor = luma_v;
  if (kind == JpegKind::Progressive) jpeg_simple_progression(&c);
  if (kind == JpegKind::Ycck) jpeg_set_colorspace(&c, JCS_YCCK);  // stored as YCCK, marker transform 2
  if (kind == JpegKind::CmykPlain) c.write_Adobe_marker = FALSE;
  jpeg_start_compress(&c, TRUE);
  std::vector<uint8_t> row(static_cast<size_t>(img.width) * 4);
  for (int y = 0; y < img.height; ++y) {
    const uint8_t* p = img.row(y);
    for (int x = 0; x < img.width; ++x) {
      if (kind == JpegKind::Gray) {
        row[x] = p[x * 3 + 1];
      } else if (kind == JpegKind::CmykPlain) {  // ink = 255 - colour, no black ink
        for (int k = 0; k < 3; ++k) row[x * 4 + k] = static_cast<uint8_t>(255 - p[x * 3 + k]);
        row[x * 4 + 3] = 0;
      } else if (four) {  // Adobe's inverted CMYK of the colour, no black ink
        row[x * 4] = p[x * 3], row[x * 4 + 1] = p[x * 3 + 1], row[x * 4 + 2] = p[x * 3 + 2], row[x * 4 + 3] = 255;
      } else {
        row[x * 3] = p[x * 3], row[x * 3 + 1] = p[x * 3 + 1], row[x * 3 + 2] = p[x * 3 + 2];
      }
    }
    JSAMPROW r = row.data();
    jpeg_write_scanlines(&c, &r, 1);
  }
  jpeg_finish_compress(&c);
  std::vector<uint8_t> out(buf, buf + size);
  jpeg_destroy_compress(&c);
  std::free(buf);
  return out;
}

// stb_image_write's output callback: append to the std::vector<uint8_t> in ctx.
inline void append_bytes(void* ctx, void* data, int n) {
  auto* v = static_cast<std::vector<uint8_t>*>(ctx);
  v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + n);
}

inline std::vector<uint8_t> encode_png(const data::Image& img) {
  std::vector<uint8_t> out;
  stbi_write_png_to_func(append_bytes, &out, img.width, img.height, 3, img.rgb.data(), img.width * 3);
  return out;
}

inline std::vector<uint8_t> encode_bmp(const data::Image& img) {
  std::vector<uint8_t> out;
  stbi_write_bmp_to_func(append_bytes, &out, img.width, img.height, 3, img.rgb.data());
  return out;
}

// A PNG of any bit depth and colour type (0 gray, 2 RGB, 4 gray + alpha, 6 RGBA), from its
// unfiltered rows (big-endian samples), its data in stored (uncompressed) deflate blocks:
// stb_image_write writes 8-bit files only.
inline std::vector<uint8_t> encode_png_raw(int w, int h, int bit_depth, int color_type,
                                           const std::vector<uint8_t>& rows) {
  const auto crc32 = [](const uint8_t* p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; ++i) {
      c ^= p[i];
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
  };
  const auto be32 = [](std::vector<uint8_t>& v, uint32_t x) {
    for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
  };
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  const auto chunk = [&](const char* type, const std::vector<uint8_t>& data) {
    be32(out, static_cast<uint32_t>(data.size()));
    std::vector<uint8_t> body(type, type + 4);
    body.insert(body.end(), data.begin(), data.end());
    out.insert(out.end(), body.begin(), body.end());
    be32(out, crc32(body.data(), body.size()));
  };
  std::vector<uint8_t> ihdr;
  be32(ihdr, static_cast<uint32_t>(w));
  be32(ihdr, static_cast<uint32_t>(h));
  ihdr.insert(ihdr.end(), {static_cast<uint8_t>(bit_depth), static_cast<uint8_t>(color_type), 0, 0, 0});
  chunk("IHDR", ihdr);
  const size_t row_bytes = rows.size() / static_cast<size_t>(h);
  std::vector<uint8_t> raw;  // each row after its filter byte 0 (none)
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), rows.begin() + y * row_bytes, rows.begin() + (y + 1) * row_bytes);
  }
  std::vector<uint8_t> z = {0x78, 0x01};
  for (size_t at = 0; at < raw.size() || at == 0; at += 65535) {
    const size_t n = std::min<size_t>(65535, raw.size() - at);
    z.push_back(at + n == raw.size() ? 1 : 0);
    z.insert(z.end(), {static_cast<uint8_t>(n), static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(~n),
                       static_cast<uint8_t>(~n >> 8)});
    z.insert(z.end(), raw.begin() + at, raw.begin() + at + n);
  }
  uint32_t a = 1, b = 0;  // Adler-32 of the uncompressed data
  for (uint8_t v : raw) a = (a + v) % 65521, b = (b + a) % 65521;
  be32(z, b << 16 | a);
  chunk("IDAT", z);
  chunk("IEND", {});
  return out;
}

// A 1x1 GIF89a with a black pixel.
inline std::vector<uint8_t> tiny_gif() {
  const unsigned char g[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, 0, 0, 0, 255, 255, 255,
                             ',', 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 'D', 1, 0, ';'};
  return std::vector<uint8_t>(g, g + sizeof(g));
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

inline double mean_abs_diff(const data::Image& a, const data::Image& b) {
  double s = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) s += std::abs(int(a.rgb[i]) - int(b.rgb[i]));
  return s / static_cast<double>(a.rgb.size());
}

// An ImageFolder of small JPEGs whose classes are learnable: class c has its own colour
// (one of 8) and stripe direction, plus per-pixel noise, so a network has something to fit.
// counts[c] images of class c, named root/class<c>/<i>.jpg.
inline void write_class_folder(const std::string& root, const std::vector<int>& counts, int size, uint32_t seed) {
  static const int palette[8][3] = {{220, 40, 40},  {40, 190, 40},  {40, 60, 220}, {220, 210, 40},
                                    {200, 40, 200}, {40, 200, 210}, {240, 140, 30}, {120, 120, 120}};
  uint32_t state = seed * 2654435761u + 1;
  auto noise = [&state]() {  // xorshift32 in [-40, 40]
    state ^= state << 13, state ^= state >> 17, state ^= state << 5;
    return static_cast<int>(state % 81) - 40;
  };
  for (size_t c = 0; c < counts.size(); ++c) {
    const std::string dir = root + "/class" + std::to_string(c);
    std::filesystem::create_directories(dir);
    for (int i = 0; i < counts[c]; ++i) {
      data::Image img(size, size);
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x) {
          const bool stripe = ((c % 2 ? x : y) / 4) % 2 == 0;
          for (int k = 0; k < 3; ++k)
            img.row(y)[x * 3 + k] =
                static_cast<uint8_t>(std::clamp(palette[c % 8][k] + (stripe ? 30 : -30) + noise(), 0, 255));
        }
      write_bytes(dir + "/" + std::to_string(i) + ".jpg", encode_jpeg(img, JpegKind::Baseline, 90));
    }
  }
}

}  // namespace testing
}  // namespace fgvc
