#include "data/decode.h"

#include <jpeglib.h>
// After jpeglib.h, which it needs: the message codes (JWRN_...).
#include <jerror.h>
#include <stb/stb_image.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>

#include "tensor/error.h"

namespace fgvc {
namespace data {

namespace {

constexpr const char* kNotAnImage = "not a JPEG, PNG, BMP, GIF or binary PGM/PPM image";

// PIL's limit (twice its MAX_IMAGE_PIXELS, where it refuses a "decompression bomb"): a
// larger image is no photo, and a few hundred bytes of PNG could otherwise ask each loader
// thread for gigabytes.
constexpr int64_t kMaxPixels = 178956970;
// What stb_image may hold for one image: 8-bit RGB(A) of kMaxPixels, or 16-bit samples of
// fewer pixels (it decodes at the file's depth and channels, then converts).
constexpr int64_t kMaxStbBytes = kMaxPixels * 4;
constexpr int64_t kMaxFileBytes = int64_t(1) << 30;  // 1 GiB; and stb_image takes an int length

// libjpeg reports errors through a callback that must not return; ours jumps back to the
// decode call with the message. Warnings about the image data (truncated or corrupt entropy
// data, which libjpeg fills with gray) count as errors too: a half-gray image is not a
// training sample. Every other warning leaves the pixels intact and passes, as in PIL and
// TensorFlow: stray bytes between two markers (common in scraped photos), an unknown JFIF
// revision or Adobe colour-transform code, a malformed ICC profile chunk (not used).
struct JpegErrors {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_fail(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErrors*>(c->err);
  (*c->err->format_message)(c, e->message);
  std::longjmp(e->jump, 1);
}

// Warnings that mean pixels are missing or wrong (libjpeg fills what it cannot decode with
// gray, or mixes up a progressive image's coefficient bits). Not among them: a baseline
// scan's header with odd spectral parameters (JWRN_NOT_SEQUENTIAL), which a sequential decode
// never reads (libjpeg's own comment: some baseline files have zeroes there), and the header
// details PIL ignores too.
bool corrupt_data_warning(int code) {
  return code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_HUFF_BAD_CODE ||
         code == JWRN_ARITH_BAD_CODE || code == JWRN_MUST_RESYNC || code == JWRN_BOGUS_PROGRESSION;
}

void jpeg_message(j_common_ptr c, int level) {
  // A warning (level < 0) about the image data stops the decode; trace messages are dropped.
  if (level < 0 && corrupt_data_warning(c->err->msg_code)) jpeg_fail(c);
}

uint32_t little_endian(const uint8_t* b, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | b[i];
  return v;
}

std::string truncated(size_t n, int64_t width, int64_t height) {
  return "truncated: " + std::to_string(n) + " bytes are too few for its " + std::to_string(width) + " x " +
         std::to_string(height) + " pixels";
}

// Whether `rows` rows of `row` bytes fit in the n - start bytes after `start` (no product
// that could overflow).
bool rows_fit(size_t n, int64_t start, int64_t row, int64_t rows) {
  if (start < 0 || static_cast<int64_t>(n) < start) return false;
  return row == 0 || (static_cast<int64_t>(n) - start) / row >= rows;
}

// stb_image reads past the end of a BMP as zeros (and skips to the end for a pixel offset
// inside the headers), so a truncated file would decode, black where its rows are missing.
// Uncompressed BMPs must place their pixels after the headers and palette and hold every row
// they declare; "" when they do (or the layout is one stb_image refuses itself).
std::string bmp_truncation(const uint8_t* b, size_t n) {
  if (n < 26) return "truncated header";
  const int64_t offset = little_endian(b + 10, 4), header = little_endian(b + 14, 4);
  int64_t width = 0, height = 0, bits = 0, compression = 0;
  if (header == 12) {  // OS/2 BITMAPCOREHEADER
    width = little_endian(b + 18, 2), height = little_endian(b + 20, 2), bits = little_endian(b + 24, 2);
  } else {
    if (n < 34) return "truncated header";
    width = static_cast<int32_t>(little_endian(b + 18, 4));
    height = static_cast<int32_t>(little_endian(b + 22, 4));
    bits = little_endian(b + 28, 2);
    // Signed, as stb_image reads it: it refuses 1 and 2 (RLE) and 4 and up (JPEG, PNG, alpha
    // bit fields), and decodes any other value, a negative one too, as uncompressed pixels.
    compression = static_cast<int32_t>(little_endian(b + 30, 4));
  }
  if (compression == 1 || compression == 2 || compression >= 4) return "";  // stb_image refuses these itself
  if (compression < 0) return "unknown compression method " + std::to_string(static_cast<uint32_t>(compression));
  if (width <= 0 || height == 0 || bits <= 0 || bits > 32) return "";
  height = std::abs(height);  // negative: rows stored top-down
  // The headers, the colour masks a 40-byte header keeps after itself, the palette.
  int64_t first_pixel = 14 + header;
  if (header == 40 && compression == 3) first_pixel += 12;
  if (bits <= 8) first_pixel += header == 12 ? 3 : 4;  // at least one palette entry
  if (offset < first_pixel) return "pixel data offset " + std::to_string(offset) + " lies inside its headers";
  const int64_t row = (bits * width + 31) / 32 * 4;  // width < 2^31, bits <= 32: no overflow
  return rows_fit(n, offset, row, height) ? "" : truncated(n, width, height);
}

// The same for binary PGM/PPM, which stb_image also reads past the end as zeros: the header
// (magic, width, height, maximum value, '#' comments between them), one blank, then the
// samples.
std::string pnm_truncation(const uint8_t* b, size_t n, int width, int height) {
  size_t at = 2;
  int64_t values[3] = {0, 0, 0};
  for (int64_t& v : values) {
    for (;;) {  // blanks and comments
      while (at < n && std::isspace(b[at])) ++at;
      if (at < n && b[at] == '#') {
        while (at < n && b[at] != '\n' && b[at] != '\r') ++at;
        continue;
      }
      break;
    }
    if (at >= n || !std::isdigit(b[at])) return "truncated header";
    for (; at < n && std::isdigit(b[at]); ++at) v = std::min<int64_t>(v * 10 + (b[at] - '0'), int64_t(1) << 40);
  }
  ++at;  // the one blank before the samples
  // stb_image reads the numbers into an int: where it read others than these, it is not
  // reading this header (and would pad the difference with zeros or leave memory unwritten).
  if (values[0] != width || values[1] != height) return "image size too large to read";
  const int64_t channels = b[1] == '6' ? 3 : 1, sample = values[2] > 255 ? 2 : 1;
  return rows_fit(n, static_cast<int64_t>(at), values[0] * channels * sample, values[1])
             ? ""
             : truncated(n, values[0], values[1]);
}

// And for GIF, whose first frame stb_image decodes: at the end of the file it reads a block
// size of 0, the end of the frame's data, and leaves the rest of the frame blank. The blocks up
// to the end of the first frame's image data must all be there (stricter than stb_image, which
// needs only the data up to the LZW end code; PIL's "image file is truncated" is as strict):
// the header and screen descriptor, the global colour table, extensions (a label, then
// sub-blocks of a size byte and that many bytes, up to a size of 0), the image descriptor and
// its local colour table, the LZW code size, then the data's sub-blocks up to a size of 0.
//
// On the way it finds the colour of the first frame's pixels that stb_image leaves blank (alpha
// 0): those of the transparent index, and those outside the frame's rectangle. PIL's
// convert("RGB") gives them the colour of the transparent index, or without one of the
// background index, in the frame's colour table (its local one, else the global one); black
// where there is no such colour.
struct GifBlankColour {
  uint8_t rgb[3] = {0, 0, 0};
};
std::string gif_truncation(const uint8_t* b, size_t n, GifBlankColour* blank = nullptr) {
  const auto table = [](uint8_t packed) { return (packed & 0x80) ? size_t(3) << ((packed & 7) + 1) : size_t(0); };
  int transparent = -1;  // from the last graphic control extension before the first image
  // The sub-blocks starting at `at`, past their terminator; false where the file ends first.
  const auto skip_sub_blocks = [&](size_t* at) {
    while (*at < n) {
      const size_t size = b[(*at)++];
      if (size == 0) return true;
      *at += size;
    }
    return false;
  };
  if (n < 13) return "truncated header";
  size_t at = 13 + table(b[10]);
  while (at < n) {
    const uint8_t block = b[at++];
    if (block == 0x21) {  // extension: its label, then sub-blocks
      if (at >= n) break;
      // stb_image reads a graphic control extension (0xF9) whose first size is not 4 as that
      // many bytes followed by the next block, not by sub-blocks: so must this walk.
      if (b[at++] == 0xF9 && at < n && b[at] != 4) {
        at += 1 + b[at];
        continue;
      }
      if (b[at - 1] == 0xF9 && at + 5 <= n) transparent = (b[at + 1] & 1) ? b[at + 4] : -1;  // size 4: packed, delay, index
      if (!skip_sub_blocks(&at)) break;
    } else if (block == 0x2C) {  // the first image: descriptor, local colour table, LZW code size, data
      if (at + 9 > n) break;
      const size_t local = table(b[at + 8]);
      if (blank) {
        const size_t colours = local ? at + 9 : 13;  // its own table, else the global one
        const size_t entries = (local ? local : table(b[10])) / 3;
        const size_t index = transparent >= 0 ? static_cast<size_t>(transparent) : b[11];
        if (index < entries && colours + 3 * index + 3 <= n) std::memcpy(blank->rgb, b + colours + 3 * index, 3);
      }
      at += 9 + local + 1;
      return skip_sub_blocks(&at) ? "" : "truncated: the first frame's image data ends early";
    } else {
      return "";  // the trailer (no frame) or a block stb_image rejects itself
    }
  }
  return "truncated: the file ends before the first frame's image data";
}

// Where stb_image would decode zeros for missing bytes: the message, else "".
// (width x height: what stb_image's header reading found.)
std::string stb_truncation(ImageFormat format, const std::vector<uint8_t>& bytes, int width, int height) {
  if (format == ImageFormat::Bmp) return bmp_truncation(bytes.data(), bytes.size());
  if (format == ImageFormat::Pnm) return pnm_truncation(bytes.data(), bytes.size(), width, height);
  if (format == ImageFormat::Gif) return gif_truncation(bytes.data(), bytes.size());
  return "";
}

std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r && *r ? r : "(no reason given)";
}

// Whether stb_image may decode an image of this size at this depth within kMaxStbBytes; the
// error message when not.
std::string stb_size_error(const std::vector<uint8_t>& bytes, int w, int h, int comp) {
  // A BMP header can claim a negative width (found by fuzzing: -1728053266 x 2147483646, whose
  // pixel count, negative, passed the limit and then overflowed times 3).
  if (w <= 0 || h <= 0) return "image of " + std::to_string(w) + " x " + std::to_string(h) + " pixels is not valid";
  const int64_t pixels = static_cast<int64_t>(w) * h;  // each below 2^31: no overflow
  const bool sixteen = stbi_is_16_bit_from_memory(bytes.data(), static_cast<int>(bytes.size()));
  // The bytes only for a pixel count that fits (found by fuzzing: 2^61 pixels times 3 overflowed).
  if (pixels <= kMaxPixels && pixels * std::max(comp, 3) * (sixteen ? 2 : 1) <= kMaxStbBytes) return "";
  return "image of " + std::to_string(w) + " x " + std::to_string(h) + " pixels" + (sixteen ? " at 16 bits" : "") +
         " is too large (at most " + std::to_string(kMaxPixels) + " pixels, as in PIL)";
}

// Everything stb_image must not be handed, from the header alone: a file too large for its
// int length, an image too large (it would allocate whatever the header says), a BMP or PNM
// without the rows it declares, a GIF whose first frame's data is cut short. The error (naming
// the file) or "", and the size.
std::string stb_header(ImageFormat format, const std::vector<uint8_t>& bytes, const std::string& name, int* w, int* h,
                       int* comp) {
  if (bytes.size() > static_cast<size_t>(kMaxFileBytes))
    return name + ": file of " + std::to_string(bytes.size()) + " bytes is too large for an image";
  if (!stbi_info_from_memory(bytes.data(), static_cast<int>(bytes.size()), w, h, comp))
    return name + ": bad " + format_name(format) + ": " + stb_reason();
  *h = *h == INT_MIN ? INT_MAX : std::abs(*h);  // a top-down BMP's height is negative
  if (const std::string e = stb_size_error(bytes, *w, *h, *comp); !e.empty()) return name + ": " + e;
  if (const std::string cut = stb_truncation(format, bytes, *w, *h); !cut.empty())
    return name + ": bad " + format_name(format) + ": " + cut;
  return "";
}

template <class JpegStruct>  // jpeg_decompress_struct or jpeg_compress_struct
void install_errors(JpegStruct* cinfo, JpegErrors* errors) {
  cinfo->err = jpeg_std_error(&errors->mgr);
  errors->mgr.error_exit = jpeg_fail;
  errors->mgr.emit_message = jpeg_message;
  errors->message[0] = '\0';
}

// A JPEG's size against the pixel limit, at its header: what is refused there is refused
// before a crop is drawn from it, or any pixel is allocated.
bool too_many_pixels(double W, double H, char* message) {
  if (W * H <= static_cast<double>(kMaxPixels)) return false;
  std::snprintf(message, JMSG_LENGTH_MAX, "image of %.0f x %.0f pixels is too large (at most %lld pixels, as in PIL)", W,
                H, static_cast<long long>(kMaxPixels));
  return true;
}

// Every local here is trivially destructible: longjmp may leave this function's frame.
bool jpeg_header(const uint8_t* bytes, size_t size, ImageHeader* h, char* message) {
  jpeg_decompress_struct cinfo;
  JpegErrors errors;
  install_errors(&cinfo, &errors);
  if (setjmp(errors.jump)) {
    std::strcpy(message, errors.message);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  h->width = static_cast<int>(cinfo.image_width);
  h->height = static_cast<int>(cinfo.image_height);
  jpeg_destroy_decompress(&cinfo);
  return !too_many_pixels(h->width, h->height, message);
}

// CMYK as stored by libjpeg to RGB; Adobe writes the channels inverted.
void cmyk_to_rgb(const uint8_t* in, uint8_t* out, int n, bool inverted) {
  for (int i = 0; i < n; ++i, in += 4, out += 3) {
    const int c = inverted ? in[0] : 255 - in[0], m = inverted ? in[1] : 255 - in[1];
    const int y = inverted ? in[2] : 255 - in[2], k = inverted ? in[3] : 255 - in[3];
    out[0] = static_cast<uint8_t>((c * k + 127) / 255);
    out[1] = static_cast<uint8_t>((m * k + 127) / 255);
    out[2] = static_cast<uint8_t>((y * k + 127) / 255);
  }
}

// Whether jpeg_crop_scanline gives the right pixels for this file at its chosen scale.
// libjpeg-turbo before 3.0 computed a cropped component's width wrongly when that component is
// decoded at a larger DCT scale than the smallest and is still upsampled after it (4 x 2 and
// 2 x 4 sampling at a reduced scale, libjpeg-turbo issue 669): its chroma came out partly
// unset, different from run to run. Such a file is decoded at its full width instead.
bool crop_is_exact(const jpeg_decompress_struct& c) {
#if LIBJPEG_TURBO_VERSION_NUMBER < 3000000
  for (int i = 0; i < c.num_components; ++i) {
    const jpeg_component_info& comp = c.comp_info[i];
#if JPEG_LIB_VERSION >= 70
    const int h_size = comp.DCT_h_scaled_size, v_size = comp.DCT_v_scaled_size;
    const int h_min = c.min_DCT_h_scaled_size, v_min = c.min_DCT_v_scaled_size;
#else
    const int h_size = comp.DCT_scaled_size, v_size = comp.DCT_scaled_size;
    const int h_min = c.min_DCT_scaled_size, v_min = c.min_DCT_scaled_size;
#endif
    if (h_size == h_min && v_size == v_min) continue;
    if (c.max_h_samp_factor * h_min != comp.h_samp_factor * h_size ||
        c.max_v_samp_factor * v_min != comp.v_samp_factor * v_size)
      return false;
  }
#else
  (void)c;
#endif
  return true;
}

bool jpeg_decode(const uint8_t* bytes, size_t size, const Box& want, int min_w, int min_h, Decoded* out,
                 char* message) {
  jpeg_decompress_struct cinfo;
  JpegErrors errors;
  install_errors(&cinfo, &errors);
  if (setjmp(errors.jump)) {
    std::strcpy(message, errors.message);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, bytes, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  const double W = cinfo.image_width, H = cinfo.image_height;
  if (too_many_pixels(W, H, message)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  // The region, clamped to the image (the whole image when empty).
  Box r = want;
  if (r.w <= 0 || r.h <= 0) r = {0, 0, W, H};
  r.x = std::clamp(r.x, 0.0, W - 1);
  r.y = std::clamp(r.y, 0.0, H - 1);
  r.w = std::min(r.w, W - r.x);
  r.h = std::min(r.h, H - r.y);

  // Smallest scale k/8 that keeps the region at least min_w x min_h. Only 1/8, 1/4, 1/2 and
  // 1: libjpeg-turbo has SIMD inverse DCTs for those, and plain C ones for 3/8, 5/8, ...
  int k = 8;
  if (min_w > 0 && min_h > 0)
    for (k = 1; k < 8; k *= 2)
      if (r.w * k / 8 >= min_w && r.h * k / 8 >= min_h) break;
  cinfo.scale_num = static_cast<unsigned>(k);
  cinfo.scale_denom = 8;
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;  // libjpeg-turbo expands grayscale to RGB
  cinfo.dct_method = JDCT_ISLOW;
  jpeg_start_decompress(&cinfo);

  const int ow = static_cast<int>(cinfo.output_width), oh = static_cast<int>(cinfo.output_height);
  // At scale k/8 every 8 x 8 block becomes k x k pixels: source x maps to x k / 8 exactly
  // (output_width = ceil(W k / 8) counts a last, partial block as a whole pixel).
  const double fx = k / 8.0, fy = k / 8.0;
  const double sx = r.x * fx, sy = r.y * fy, sw = r.w * fx, sh = r.h * fy;
  // One pixel of margin on every side for the bilinear sampling at the region's border.
  JDIMENSION x0 = static_cast<JDIMENSION>(std::max(0.0, std::floor(sx) - 1));
  const int x1 = std::min(ow, static_cast<int>(std::ceil(sx + sw)) + 1);
  const int y0 = std::max(0, static_cast<int>(std::floor(sy)) - 1);
  const int y1 = std::min(oh, static_cast<int>(std::ceil(sy + sh)) + 1);
  JDIMENSION cw = static_cast<JDIMENSION>(x1) - x0;
  if (!crop_is_exact(cinfo)) x0 = 0, cw = static_cast<JDIMENSION>(ow);
  if (cw < static_cast<JDIMENSION>(ow)) jpeg_crop_scanline(&cinfo, &x0, &cw);  // widens to iMCU columns
  if (y0 > 0) jpeg_skip_scanlines(&cinfo, static_cast<JDIMENSION>(y0));

  out->image = Image(static_cast<int>(cw), y1 - y0);
  // A CMYK row goes through a buffer from libjpeg's own pool (freed with cinfo).
  JSAMPARRAY cmyk_row =
      cmyk ? (*cinfo.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&cinfo), JPOOL_IMAGE, cw * 4, 1) : nullptr;
  for (int y = y0; y < y1; ++y) {
    JSAMPROW row = cmyk ? cmyk_row[0] : out->image.row(y - y0);
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (cmyk) cmyk_to_rgb(cmyk_row[0], out->image.row(y - y0), static_cast<int>(cw), cinfo.saw_Adobe_marker);
  }
  // The rows below the region are read too, without their inverse DCT (skipped), and then the
  // end of the file: a file damaged or cut short there is an error whatever the crop, as in PIL
  // and TensorFlow. Stopping at the region made such a file a sample in one epoch and a skipped
  // file in the next.
  // (jpeg_skip_scanlines to the very end only sets the row counter: the last row is read, into
  // a row from libjpeg's pool.)
  if (y1 < oh) {
    if (y1 < oh - 1) jpeg_skip_scanlines(&cinfo, static_cast<JDIMENSION>(oh - 1 - y1));
    JSAMPARRAY last =
        (*cinfo.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&cinfo), JPOOL_IMAGE, cw * (cmyk ? 4 : 3), 1);
    jpeg_read_scanlines(&cinfo, last, 1);
  }
  jpeg_finish_decompress(&cinfo);
  out->region = {sx - x0, sy - y0, sw, sh};
  out->scale_eighths = k;
  jpeg_destroy_decompress(&cinfo);
  return true;
}

}  // namespace

ImageFormat detect_format(const uint8_t* b, size_t n) {
  if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return ImageFormat::Jpeg;
  if (n >= 8 && std::memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) return ImageFormat::Png;
  if (n >= 6 && (std::memcmp(b, "GIF87a", 6) == 0 || std::memcmp(b, "GIF89a", 6) == 0)) return ImageFormat::Gif;
  if (n >= 2 && b[0] == 'B' && b[1] == 'M') return ImageFormat::Bmp;
  // Binary PGM/PPM (what stb_image reads of the PNM family), a blank after the magic number.
  if (n >= 3 && b[0] == 'P' && (b[1] == '5' || b[1] == '6') && std::isspace(b[2])) return ImageFormat::Pnm;
  return ImageFormat::Unknown;
}

const char* unsupported_image_format(const uint8_t* b, size_t n) {
  const auto at = [&](size_t offset, const char* magic, size_t length) {
    return n >= offset + length && std::memcmp(b + offset, magic, length) == 0;
  };
  if (at(0, "II*\0", 4) || at(0, "MM\0*", 4)) return "TIFF";
  if (at(0, "RIFF", 4) && at(8, "WEBP", 4)) return "WebP";
  if (at(4, "ftyp", 4)) {  // ISO media files: the major brand says which
    for (const char* brand : {"avif", "avis"})
      if (at(8, brand, 4)) return "AVIF";
    for (const char* brand : {"heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1"})
      if (at(8, brand, 4)) return "HEIF";
  }
  if (at(0, "\0\0\0\x0CjP  \r\n\x87\n", 12) || at(0, "\xFF\x4F\xFF\x51", 4)) return "JPEG 2000";
  if (at(0, "\0\0\0\x0CJXL \r\n\x87\n", 12) || at(0, "\xFF\x0A", 2)) return "JPEG XL";
  if (at(0, "8BPS", 4)) return "PSD";
  if (n >= 3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '4' && std::isspace(b[2])) return "text or 1-bit PBM/PGM/PPM";
  return nullptr;
}

ImageFileHead read_image_head(const std::string& path) {
  ImageFileHead head;
  std::ifstream f(path, std::ios::binary);
  head.opened = f.is_open();
  uint8_t first[16] = {};
  f.read(reinterpret_cast<char*>(first), sizeof first);
  head.bytes = static_cast<size_t>(f.gcount());
  head.format = detect_format(first, head.bytes);
  head.unsupported = unsupported_image_format(first, head.bytes);
  return head;
}

std::string ImageFileHead::problem() const {
  if (!opened) return "cannot be opened";
  if (bytes == 0) return "is empty";
  if (unsupported) return std::string("is ") + unsupported + ", which fgvc does not decode";
  if (format == ImageFormat::Unknown) return "is not an image";
  return "";
}

namespace {

// Why bytes of no format fgvc decodes are skipped: their format where it is known.
std::string not_an_image(const std::vector<uint8_t>& bytes) {
  const char* other = unsupported_image_format(bytes.data(), bytes.size());
  if (!other) return kNotAnImage;
  return std::string(other[0] == 'A' ? "an " : "a ") + other + " image, " + kNotAnImage + " (convert it)";
}

// Whether a PNG's chunks end exactly at the end of the file, image data among them, without the
// closing IEND chunk: a whole image that some writers leave unclosed (PIL reads it), which
// stb_image refuses, failing on a chunk of type 0 past the end, with an empty message.
bool png_without_end(const std::vector<uint8_t>& bytes) {
  bool data = false;
  size_t at = 8;  // after the signature
  while (at + 8 <= bytes.size()) {
    const uint8_t* c = bytes.data() + at;
    const uint64_t length = (uint64_t(c[0]) << 24) | (uint64_t(c[1]) << 16) | (uint64_t(c[2]) << 8) | c[3];
    if (std::memcmp(c + 4, "IEND", 4) == 0) return false;
    data = data || std::memcmp(c + 4, "IDAT", 4) == 0;
    at += 12 + length;  // length, type, data, CRC
  }
  return data && at == bytes.size();
}

}  // namespace

const char* format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::Jpeg: return "JPEG";
    case ImageFormat::Png: return "PNG";
    case ImageFormat::Bmp: return "BMP";
    case ImageFormat::Gif: return "GIF";
    case ImageFormat::Pnm: return "PNM";
    default: return "unknown";
  }
}

ImageHeader read_header(const std::vector<uint8_t>& bytes, const std::string& name) {
  ImageHeader h;
  h.format = detect_format(bytes.data(), bytes.size());
  if (bytes.empty()) {
    h.error = name + ": empty file";
  } else if (h.format == ImageFormat::Unknown) {
    h.error = name + ": " + not_an_image(bytes);
  } else if (h.format == ImageFormat::Jpeg) {
    char message[JMSG_LENGTH_MAX];
    if (!jpeg_header(bytes.data(), bytes.size(), &h, message)) h.error = name + ": bad JPEG: " + message;
  } else {
    int comp = 0;
    h.error = stb_header(h.format, bytes, name, &h.width, &h.height, &comp);
  }
  if (h.error.empty() && (h.width <= 0 || h.height <= 0))
    h.error = name + ": image has no pixels";
  return h;
}

Decoded decode_image(const std::vector<uint8_t>& bytes, const std::string& name, const Box& region, int min_width,
                     int min_height) {
  Decoded d;
  const ImageFormat format = detect_format(bytes.data(), bytes.size());
  if (bytes.empty()) {
    d.error = name + ": empty file";
    return d;
  }
  if (format == ImageFormat::Unknown) {
    d.error = name + ": " + not_an_image(bytes);
    return d;
  }
  if (format == ImageFormat::Jpeg) {
    char message[JMSG_LENGTH_MAX];
    if (!jpeg_decode(bytes.data(), bytes.size(), region, min_width, min_height, &d, message)) {
      d = Decoded();
      d.error = name + ": bad JPEG: " + message;
    }
    return d;
  }
  int w = 0, h = 0, comp = 0;
  d.error = stb_header(format, bytes, name, &w, &h, &comp);
  if (!d.error.empty()) return d;
  std::vector<uint8_t> closed;  // a PNG without its IEND, closed
  if (format == ImageFormat::Png && png_without_end(bytes)) {
    static const uint8_t kEnd[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
    closed.reserve(bytes.size() + sizeof kEnd);
    closed.insert(closed.end(), bytes.begin(), bytes.end());
    closed.insert(closed.end(), kEnd, kEnd + sizeof kEnd);
  }
  const std::vector<uint8_t>& input = closed.empty() ? bytes : closed;
  // GIF with alpha: its blank pixels take the colour PIL gives them (gif_truncation).
  const bool gif = format == ImageFormat::Gif;
  uint8_t* pixels = stbi_load_from_memory(input.data(), static_cast<int>(input.size()), &w, &h, &comp, gif ? 4 : 3);
  if (!pixels) {
    d.error = name + ": bad " + format_name(format) + ": " + stb_reason();
    return d;
  }
  d.image = Image(w, h);
  if (gif) {
    GifBlankColour blank;
    gif_truncation(bytes.data(), bytes.size(), &blank);
    const size_t count = static_cast<size_t>(w) * static_cast<size_t>(h);
    for (size_t i = 0; i < count; ++i)
      std::memcpy(&d.image.rgb[3 * i], pixels[4 * i + 3] == 0 ? blank.rgb : pixels + 4 * i, 3);
  } else {
    std::memcpy(d.image.rgb.data(), pixels, d.image.rgb.size());
  }
  stbi_image_free(pixels);
  Box r = region;
  if (r.w <= 0 || r.h <= 0) r = {0, 0, static_cast<double>(w), static_cast<double>(h)};
  d.region = r;
  return d;
}

bool read_file(const std::string& path, std::vector<uint8_t>* out, std::string* error) {
  // Not a regular file (a folder, a device; a list entry can name anything): an ifstream
  // opens a folder, and its "size" is then no size at all.
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(path, ec);
  if (!ec && std::filesystem::exists(st) && !std::filesystem::is_regular_file(st)) {
    *error = path + ": not a regular file";
    return false;
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    *error = path + ": cannot open: " + std::strerror(errno);
    return false;
  }
  f.seekg(0, std::ios::end);
  const std::streamoff n = f.tellg();
  f.seekg(0);
  if (n < 0 || !f) {
    *error = path + ": cannot tell its size";
    return false;
  }
  if (n > kMaxFileBytes) {  // refused before it is read: no image is this large
    *error = path + ": file of " + std::to_string(n) + " bytes is too large for an image (at most 1 GiB)";
    return false;
  }
  out->resize(static_cast<size_t>(n > 0 ? n : 0));
  if (n > 0 && !f.read(reinterpret_cast<char*>(out->data()), n)) {
    *error = path + ": read failed";
    return false;
  }
  return true;
}

namespace {

// libjpeg's compressed output, into a vector that the caller of jpeg_encode owns: the
// vector lives outside the frame that setjmp returns to, so an error leaves no buffer to
// free (libjpeg's own memory destination would leave one, freed or not as it had grown).
struct VectorDestination {
  jpeg_destination_mgr mgr;
  std::vector<uint8_t>* out;
};

void vector_start(j_compress_ptr c) {
  auto* d = reinterpret_cast<VectorDestination*>(c->dest);
  d->mgr.next_output_byte = d->out->data();
  d->mgr.free_in_buffer = d->out->size();
}

// Called with the buffer full: twice the room, the bytes so far kept.
boolean vector_grow(j_compress_ptr c) {
  auto* d = reinterpret_cast<VectorDestination*>(c->dest);
  const size_t used = d->out->size();
  bool grown = true;
  try {
    d->out->resize(used * 2);
  } catch (const std::bad_alloc&) {
    grown = false;
  }
  if (!grown) ERREXIT1(c, JERR_OUT_OF_MEMORY, 0);  // outside the handler: this longjmps
  d->mgr.next_output_byte = d->out->data() + used;
  d->mgr.free_in_buffer = d->out->size() - used;
  return TRUE;
}

void vector_finish(j_compress_ptr c) {
  auto* d = reinterpret_cast<VectorDestination*>(c->dest);
  d->out->resize(d->out->size() - d->mgr.free_in_buffer);
}

// Every local here is trivially destructible: longjmp may leave this function's frame.
bool jpeg_encode(const uint8_t* pixels, int width, int height, int channels, int quality, std::vector<uint8_t>* out,
                 char* message) {
  jpeg_compress_struct cinfo;
  JpegErrors errors;
  VectorDestination dest;
  dest.mgr.init_destination = vector_start;
  dest.mgr.empty_output_buffer = vector_grow;
  dest.mgr.term_destination = vector_finish;
  dest.out = out;
  install_errors(&cinfo, &errors);
  if (setjmp(errors.jump)) {
    std::strcpy(message, errors.message);
    jpeg_destroy_compress(&cinfo);
    return false;
  }
  jpeg_create_compress(&cinfo);
  cinfo.dest = &dest.mgr;
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = channels;
  cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(pixels + static_cast<size_t>(cinfo.next_scanline) * width * channels);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}

}  // namespace

std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int width, int height, int channels, int quality) {
  FGVC_CHECK(channels == 1 || channels == 3, "encode_jpeg", "1 or 3 channels, got ", channels);
  FGVC_CHECK(width > 0 && height > 0, "encode_jpeg", "empty image ", width, "x", height);
  // A start of a byte per 8 pixels and values (a photo at quality 95 takes about twice
  // that); the buffer doubles as the encoder needs.
  std::vector<uint8_t> out(static_cast<size_t>(width) * height * channels / 8 + 4096);
  char message[JMSG_LENGTH_MAX];
  if (!jpeg_encode(pixels, width, height, channels, quality, &out, message))
    throw Error(std::string("encode_jpeg: ") + message);
  return out;
}

}  // namespace data
}  // namespace fgvc
