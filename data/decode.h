// Image decoding: JPEG through libjpeg-turbo, PNG/BMP/GIF and binary PGM/PPM through
// stb_image; the format is recognised from the bytes, never from the file name. Images above
// PIL's size limit (about 179 Mpixel) and files above 1 GiB are errors, found before the
// pixels are allocated (or the file read).
//
// For JPEG the decoder works at the smallest DCT scale (1/8 .. 8/8 of the full size) at which
// the requested region still has the requested number of pixels, and decodes only the rows
// and the iMCU columns that hold the region: most of the cost of a 299 px crop from an
// 800x600 photo is never paid. Grayscale and CMYK/YCCK JPEGs come out as RGB.
//
// Bad data is a value, not an exception: a truncated, empty or garbage file gives a result
// whose `error` names the file and the reason, and libjpeg's own messages are never printed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace fgvc {
namespace data {

enum class ImageFormat { Unknown, Jpeg, Png, Bmp, Gif, Pnm };
ImageFormat detect_format(const uint8_t* bytes, size_t size);
const char* format_name(ImageFormat f);
// The name of an image format fgvc does not decode, from the first bytes of a file (TIFF, WebP,
// HEIF, AVIF, JPEG 2000, JPEG XL, PSD, text or 1-bit PNM); nullptr for anything else. Such a
// file in a class folder is listed, then skipped with a warning that names its format, however
// it is named (a camera's IMG_0002 without an extension is not dropped unseen).
const char* unsupported_image_format(const uint8_t* bytes, size_t size);

// What a file's first bytes say of it, without decoding it: the format fgvc decodes, or the
// name of one it does not. Listing a class folder and fgvc-subset's draw both ask this.
struct ImageFileHead {
  bool opened = false;
  size_t bytes = 0;  // how many of the first 16 bytes the file has
  ImageFormat format = ImageFormat::Unknown;
  const char* unsupported = nullptr;  // unsupported_image_format's answer
  // An image of some format (decodable here or not): a class folder lists it.
  bool is_image() const { return format != ImageFormat::Unknown || unsupported != nullptr; }
  // Why it cannot be decoded ("is empty", "is TIFF, which fgvc does not decode", ...); empty
  // when its format is one fgvc decodes.
  std::string problem() const;
};
ImageFileHead read_image_head(const std::string& path);

struct ImageHeader {
  int width = 0, height = 0;
  ImageFormat format = ImageFormat::Unknown;
  std::string error;  // empty when the header was read
};

struct Decoded {
  Image image;          // the decoded pixels: the region (with some margin), possibly downscaled
  Box region;           // where the requested region lies in `image`
  int scale_eighths = 8;  // the DCT scale used, in eighths (8 = full size)
  std::string error;    // empty on success
  bool ok() const { return error.empty(); }
};

ImageHeader read_header(const std::vector<uint8_t>& bytes, const std::string& name);

// Decodes `region` of the image (all of it when region.w or region.h is 0), at a scale at
// which the region is at least min_width x min_height pixels (0: full size).
Decoded decode_image(const std::vector<uint8_t>& bytes, const std::string& name, const Box& region = {},
                     int min_width = 0, int min_height = 0);

// Baseline JPEG of 8-bit gray (channels 1) or RGB (3) pixels, row-major: for the demo's
// image folders and tools. Throws on a libjpeg error.
std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int width, int height, int channels, int quality = 95);

// Whole file into memory; an error string (naming the file) instead of an exception.
bool read_file(const std::string& path, std::vector<uint8_t>* out, std::string* error);

}  // namespace data
}  // namespace fgvc
