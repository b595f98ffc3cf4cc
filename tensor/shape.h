// Shapes and strides (in elements), row-major.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fgvc {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

int64_t numel(const Shape& shape);
Strides contiguous_strides(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[2, 3, 4]"
// Normalises a possibly negative axis against rank; throws naming `op` when out of range.
int normalize_axis(int64_t axis, int64_t rank, const char* op);
// NumPy broadcasting of two shapes; throws naming `op` when incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace fgvc
