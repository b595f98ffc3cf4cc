// IDX files, the format of MNIST and Fashion-MNIST (Debian's dataset-fashion-mnist ships
// them gzipped under /usr/share/datasets/fashion-mnist): a magic number giving the element
// type and rank, the dimensions (big-endian int32), then the data. Gzipped files are
// inflated with stb's zlib decoder (the gzip wrapper is checked: magic, method, length).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fgvc {
namespace data {

// The file's bytes, inflated when it is gzip.
std::vector<uint8_t> read_maybe_gzip(const std::string& path);

struct IdxImages {
  int64_t count = 0, rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count x rows x cols, row-major, 0 = black
  const uint8_t* image(int64_t i) const { return pixels.data() + i * rows * cols; }
};
IdxImages read_idx_images(const std::string& path);  // unsigned bytes, rank 3
std::vector<uint8_t> read_idx_labels(const std::string& path);  // unsigned bytes, rank 1

}  // namespace data
}  // namespace fgvc
