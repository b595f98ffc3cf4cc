// A decoded image: 8-bit RGB, row-major, pixel (x, y) channel c at rgb[(y * width + x) * 3 + c].
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fgvc {
namespace data {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;

  Image() = default;
  Image(int w, int h) : width(w), height(h), rgb(static_cast<size_t>(w) * h * 3) {}
  uint8_t* row(int y) { return rgb.data() + static_cast<size_t>(y) * width * 3; }
  const uint8_t* row(int y) const { return rgb.data() + static_cast<size_t>(y) * width * 3; }
};

// A rectangle in pixel coordinates (fractional: crops are sampled continuously).
struct Box {
  double x = 0, y = 0, w = 0, h = 0;
};

}  // namespace data
}  // namespace fgvc
