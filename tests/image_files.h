// Test images written by the tests themselves: JPEGs through libjpeg (baseline, progressive,
// grayscale, CMYK), PNG/BMP through stb_image_write, and a small gradient-plus-detail picture.
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

enum class JpegKind { Baseline, Progressive, Gray, Cmyk };

inline std::vector<uint8_t> encode_jpeg(const data::Image& img, JpegKind kind, int quality = 95) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = static_cast<JDIMENSION>(img.width);
  c.image_height = static_cast<JDIMENSION>(img.height);
  c.input_components = kind == JpegKind::Gray ? 1 : (kind == JpegKind::Cmyk ? 4 : 3);
  c.in_color_space = kind == JpegKind::Gray ? JCS_GRAYSCALE : (kind == JpegKind::Cmyk ? JCS_CMYK : JCS_RGB);
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  if (kind == JpegKind::Progressive) jpeg_simple_progression(&c);
  jpeg_start_compress(&c, TRUE);
  std::vector<uint8_t> row(static_cast<size_t>(img.width) * 4);
  for (int y = 0; y < img.height; ++y) {
    const uint8_t* p = img.row(y);
    for (int x = 0; x < img.width; ++x) {
      if (kind == JpegKind::Gray) {
        row[x] = p[x * 3 + 1];
      } else if (kind == JpegKind::Cmyk) {  // Adobe's inverted CMYK of the colour, no black ink
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
