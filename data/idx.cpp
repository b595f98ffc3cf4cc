#include "data/idx.h"

#include <stb/stb_image.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>

#include "tensor/error.h"

namespace fgvc {
namespace data {

namespace {

uint32_t big_endian32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }
uint32_t little_endian32(const uint8_t* p) { return uint32_t(p[3]) << 24 | uint32_t(p[2]) << 16 | uint32_t(p[1]) << 8 | p[0]; }

// RFC 1952: a 10-byte header, optional extra/name/comment/header-CRC fields, raw deflate data,
// then CRC-32 and the input size mod 2^32.
std::vector<uint8_t> gunzip(const std::vector<uint8_t>& in, const std::string& path) {
  FGVC_CHECK(in.size() >= 18 && in[2] == 8, "gzip", path, ": not a deflate gzip file");
  const uint8_t flags = in[3];
  size_t pos = 10;
  auto need = [&](size_t n) { FGVC_CHECK(pos + n <= in.size() - 8, "gzip", path, ": truncated header"); };
  if (flags & 4) {  // FEXTRA
    need(2);
    pos += 2 + (in[pos] | size_t(in[pos + 1]) << 8);
  }
  for (int bit : {8, 16})  // FNAME, FCOMMENT: zero-terminated
    if (flags & bit) {
      while (need(1), in[pos] != 0) ++pos;
      ++pos;
    }
  if (flags & 2) pos += 2;  // FHCRC
  need(0);
  // The deflate data ends itself (its last block is marked); the 8-byte trailer is passed
  // along as the look-ahead stb's bit reader wants near the end.
  const size_t available = in.size() - pos;
  FGVC_CHECK(available <= 0x7fffffff, "gzip", path, ": too large");
  int size = 0;
  std::unique_ptr<char, void (*)(void*)> out(
      stbi_zlib_decode_noheader_malloc(reinterpret_cast<const char*>(in.data() + pos), static_cast<int>(available), &size),
      std::free);
  FGVC_CHECK(out != nullptr, "gzip", path, ": corrupt deflate data");
  FGVC_CHECK(little_endian32(in.data() + in.size() - 4) == static_cast<uint32_t>(size), "gzip", path,
             ": the inflated size does not match the trailer (truncated or corrupt)");
  return std::vector<uint8_t>(out.get(), out.get() + size);
}

std::vector<uint8_t> idx_payload(const std::string& path, uint8_t rank, std::vector<int64_t>* dims) {
  const std::vector<uint8_t> bytes = read_maybe_gzip(path);
  FGVC_CHECK(bytes.size() >= 4 + 4u * rank && bytes[0] == 0 && bytes[1] == 0, "idx", path, ": not an IDX file");
  FGVC_CHECK(bytes[2] == 0x08, "idx", path, ": element type 0x", std::hex, int(bytes[2]), " (expected unsigned bytes)");
  FGVC_CHECK(bytes[3] == rank, "idx", path, ": rank ", int(bytes[3]), ", expected ", int(rank));
  int64_t total = 1;
  for (uint8_t i = 0; i < rank; ++i) {
    dims->push_back(big_endian32(&bytes[4 + 4 * i]));
    // Sizes of at most 2^32 - 1 each: a product beyond the file's length is found before it wraps.
    FGVC_CHECK(!__builtin_mul_overflow(total, dims->back(), &total) && total <= static_cast<int64_t>(bytes.size()),
               "idx", path, ": its sizes claim more elements than the file holds");
  }
  const size_t header = 4 + 4u * rank;
  FGVC_CHECK(bytes.size() - header == static_cast<size_t>(total), "idx", path, ": ", bytes.size() - header,
             " data bytes for ", total, " elements");
  return std::vector<uint8_t>(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
}

}  // namespace

std::vector<uint8_t> read_maybe_gzip(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  FGVC_CHECK(f, "read", path, ": cannot open");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), {});
  if (bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b) return gunzip(bytes, path);
  return bytes;
}

IdxImages read_idx_images(const std::string& path) {
  std::vector<int64_t> dims;
  IdxImages out;
  out.pixels = idx_payload(path, 3, &dims);
  out.count = dims[0], out.rows = dims[1], out.cols = dims[2];
  return out;
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  std::vector<int64_t> dims;
  return idx_payload(path, 1, &dims);
}

}  // namespace data
}  // namespace fgvc
