#include "data/transforms.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"
#include "tensor/philox.h"

namespace fgvc {
namespace data {

double RandomStream::uniform() {
  if (next_ + 2 > 4) {
    const philox::U32x4 b = philox::block(seed_, base_ + block_++);
    for (int i = 0; i < 4; ++i) words_[i] = b.v[i];
    next_ = 0;
  }
  const double u = philox::uniform53(words_[next_], words_[next_ + 1]);
  next_ += 2;
  return u;
}

int64_t RandomStream::below(int64_t n) {
  return std::min<int64_t>(n - 1, static_cast<int64_t>(uniform() * static_cast<double>(n)));
}

namespace {

// TensorFlow's sample_distorted_bounding_box, which TF-slim's Inception preprocessing calls with
// the whole image as the object box: the aspect ratio uniform in [aspect_min, aspect_max], the
// crop height an integer uniform between the heights of the least and the most area at that
// aspect (so small crops are likelier than with a uniform area), the width the height times the
// aspect rounded, a nudge of one row where rounding left the area outside the range, and the
// offset uniform in [0, size - crop) (TensorFlow's range, which leaves out the last position).
// A crop covering less than min_covered of the image is drawn again; after `attempts` draws,
// the whole image. Sizes in float32 as TensorFlow computes them.
bool tf_crop_at_aspect(int W, int H, double area_min, double area_max, float aspect, RandomStream& rng, Box* out) {
  const float min_area = static_cast<float>(area_min) * W * H, max_area = static_cast<float>(area_max) * W * H;
  int height = static_cast<int>(std::lrint(std::sqrt(min_area / aspect)));
  int max_height = static_cast<int>(std::lrint(std::sqrt(max_area / aspect)));
  if (std::lrint(max_height * aspect) > W) {  // the most height whose rounded width still fits
    max_height = static_cast<int>((W + 0.5 - 1e-7) / aspect);
    if (std::lrint(max_height * aspect) > W) max_height -= 1;
  }
  max_height = std::min(max_height, H);
  height = std::min(height, max_height);
  if (height < max_height) height += static_cast<int>(rng.below(max_height - height + 1));
  int width = static_cast<int>(std::lrint(height * aspect));
  float area = static_cast<float>(width) * static_cast<float>(height);
  if (area < min_area) {
    height += 1;
    width = static_cast<int>(std::lrint(height * aspect));
    area = static_cast<float>(width) * static_cast<float>(height);
  }
  if (area > max_area) {
    height -= 1;
    width = static_cast<int>(std::lrint(height * aspect));
    area = static_cast<float>(width) * static_cast<float>(height);
  }
  if (area < min_area || area > max_area || width > W || height > H || width <= 0 || height <= 0) return false;
  const int y = height < H ? static_cast<int>(rng.below(H - height)) : 0;
  const int x = width < W ? static_cast<int>(rng.below(W - width)) : 0;
  *out = {static_cast<double>(x), static_cast<double>(y), static_cast<double>(width), static_cast<double>(height)};
  return true;
}

Box tf_slim_crop(int W, int H, const TrainAugment& aug, RandomStream& rng) {
  for (int attempt = 0; attempt < aug.attempts; ++attempt) {
    const auto aspect = static_cast<float>(rng.uniform(aug.aspect_min, aug.aspect_max));  // width / height
    Box b;
    if (!tf_crop_at_aspect(W, H, aug.area_min, aug.area_max, aspect, rng, &b)) continue;
    if (b.w * b.h < aug.min_covered * W * H) continue;  // min_object_covered of the whole-image box
    return b;
  }
  return {0, 0, static_cast<double>(W), static_cast<double>(H)};
}

// torchvision's RandomResizedCrop: the area fraction uniform in [area_min, area_max], the aspect
// ratio log-uniform in [3/4, 4/3], sides rounded half to even (Python's round), 10 attempts,
// the offset uniform over every position; else the central crop with the aspect clamped.
Box torchvision_crop(int W, int H, const TrainAugment& aug, RandomStream& rng) {
  const double area = static_cast<double>(W) * H, lo = std::log(3.0 / 4.0), hi = std::log(4.0 / 3.0);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(aug.area_min, aug.area_max);
    const double aspect = std::exp(rng.uniform(lo, hi));
    const double w = std::nearbyint(std::sqrt(target * aspect)), h = std::nearbyint(std::sqrt(target / aspect));
    if (w <= 0 || w > W || h <= 0 || h > H) continue;
    const double y = static_cast<double>(rng.below(H - static_cast<int64_t>(h) + 1));
    const double x = static_cast<double>(rng.below(W - static_cast<int64_t>(w) + 1));
    return {x, y, w, h};
  }
  double w = W, h = H;
  if (w / h < 3.0 / 4.0) h = std::nearbyint(w / (3.0 / 4.0));
  else if (w / h > 4.0 / 3.0) w = std::nearbyint(h * (4.0 / 3.0));
  return {std::floor((W - w) / 2), std::floor((H - h) / 2), w, h};
}

}  // namespace

CropStyle crop_style(const std::string& name) {
  if (name == "tf-slim") return CropStyle::TfSlim;
  if (name == "torchvision") return CropStyle::Torchvision;
  throw Error("crop: tf-slim or torchvision, got '" + name + "'");
}

void check_augment(const TrainAugment& a) {
  auto within = [](const char* what, double lo, double value, double hi) {  // lo <= value <= hi; NaN fails
    FGVC_CHECK(value >= lo && value <= hi, "augment", what, " ", value, " is not in [", lo, ", ", hi, "]");
  };
  FGVC_CHECK(a.area_min > 0, "augment", "area_min ", a.area_min, " must be positive");
  within("area_max", a.area_min, a.area_max, 1.0);
  within("min_covered", 0.0, a.min_covered, 1.0);
  FGVC_CHECK(a.aspect_min > 0, "augment", "aspect_min ", a.aspect_min, " must be positive");
  within("aspect_max", a.aspect_min, a.aspect_max, 1e6);
  FGVC_CHECK(a.attempts >= 1, "augment", "attempts must be at least 1, got ", a.attempts);
  within("brightness", 0.0, a.brightness, 1.0);
  within("saturation_min", 0.0, a.saturation_min, 1e6);
  within("saturation_max", a.saturation_min, a.saturation_max, 1e6);
}

Box sample_crop(int width, int height, const TrainAugment& aug, RandomStream& rng) {
  return aug.crop == CropStyle::Torchvision ? torchvision_crop(width, height, aug, rng)
                                            : tf_slim_crop(width, height, aug, rng);
}

// Whole pixels, as TensorFlow's central_crop (TF-slim's eval) cuts them: the margin on each
// side is (size - size * fraction) / 2 rounded down, and the crop is what is left between.
Box central_crop(int width, int height, double fraction) {
  const double x = std::floor((width - width * fraction) / 2), y = std::floor((height - height * fraction) / 2);
  return {x, y, width - 2 * x, height - 2 * y};
}

std::vector<Box> twelve_crop_boxes(int width, int height, double fraction) {
  const Box centre = central_crop(width, height, fraction);
  const double W = width, H = height, w = centre.w, h = centre.h;
  return {{0, 0, W, H}, centre, {0, 0, w, h}, {W - w, 0, w, h},
          {0, H - h, w, h}, {W - w, H - h, w, h}};
}

namespace {

// Weights of a separable resampling along one axis: output i covers source coordinates
// [start + i * scale, start + (i + 1) * scale); a triangle filter of half-width
// max(1, scale) when shrinking by more than 2x, else 1 (plain bilinear).
struct AxisWeights {
  std::vector<int> first;      // first source index per output
  std::vector<int> count;      // taps per output
  std::vector<float> weights;  // count[i] weights per output, at i * taps
  int taps = 0;
};

AxisWeights axis_weights(double start, double length, int src_size, int out_size) {
  AxisWeights a;
  const double scale = length / out_size;
  const double support = scale > 2.0 ? scale : 1.0;  // half-width in source pixels
  a.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  a.first.resize(out_size);
  a.count.resize(out_size);
  a.weights.assign(static_cast<size_t>(out_size) * a.taps, 0.0f);
  for (int i = 0; i < out_size; ++i) {
    const double center = start + (i + 0.5) * scale - 0.5;  // in source pixel-centre coordinates
    int lo = static_cast<int>(std::floor(center - support)) + 1, hi = static_cast<int>(std::ceil(center + support)) - 1;
    lo = std::max(lo, 0);
    hi = std::min(hi, src_size - 1);
    if (hi < lo) lo = hi = std::clamp(static_cast<int>(std::lround(center)), 0, src_size - 1);
    double total = 0;
    for (int k = lo; k <= hi; ++k) total += std::max(0.0, 1.0 - std::fabs(k - center) / support);
    a.first[i] = lo;
    a.count[i] = hi - lo + 1;
    for (int k = lo; k <= hi; ++k) {
      const double w = total > 0 ? std::max(0.0, 1.0 - std::fabs(k - center) / support) / total : 1.0 / (hi - lo + 1);
      a.weights[static_cast<size_t>(i) * a.taps + (k - lo)] = static_cast<float>(w);
    }
  }
  return a;
}

uint8_t to_u8(float v) { return static_cast<uint8_t>(std::clamp(v + 0.5f, 0.0f, 255.0f)); }

}  // namespace

Image resize_region(const Image& src, const Box& region, int size) {
  const AxisWeights ax = axis_weights(region.x, region.w, src.width, size);
  const AxisWeights ay = axis_weights(region.y, region.h, src.height, size);
  // Rows first (only the source rows the vertical pass needs), then columns.
  const int row_lo = ay.first.front(), row_hi = ay.first.back() + ay.count.back();
  std::vector<float> tmp(static_cast<size_t>(row_hi - row_lo) * size * 3);
  for (int y = row_lo; y < row_hi; ++y) {
    const uint8_t* in = src.row(y);
    float* o = tmp.data() + static_cast<size_t>(y - row_lo) * size * 3;
    for (int i = 0; i < size; ++i) {
      const float* w = ax.weights.data() + static_cast<size_t>(i) * ax.taps;
      float r = 0, g = 0, b = 0;
      for (int k = 0; k < ax.count[i]; ++k) {
        const uint8_t* p = in + (ax.first[i] + k) * 3;
        r += w[k] * p[0];
        g += w[k] * p[1];
        b += w[k] * p[2];
      }
      o[i * 3] = r, o[i * 3 + 1] = g, o[i * 3 + 2] = b;
    }
  }
  Image out(size, size);
  std::vector<float> acc(static_cast<size_t>(size) * 3);
  for (int j = 0; j < size; ++j) {
    const float* w = ay.weights.data() + static_cast<size_t>(j) * ay.taps;
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int k = 0; k < ay.count[j]; ++k) {  // whole rows at a time: the inner loop vectorises
      const float* in = tmp.data() + static_cast<size_t>(ay.first[j] + k - row_lo) * size * 3;
      const float wk = w[k];
      for (int c = 0; c < size * 3; ++c) acc[c] += wk * in[c];
    }
    uint8_t* o = out.row(j);
    for (int c = 0; c < size * 3; ++c) o[c] = to_u8(acc[c]);
  }
  return out;
}

void flip_horizontal(Image& img) {
  for (int y = 0; y < img.height; ++y) {
    uint8_t* r = img.row(y);
    for (int a = 0, b = img.width - 1; a < b; ++a, --b) std::swap_ranges(r + a * 3, r + a * 3 + 3, r + b * 3);
  }
}

ColorJitter sample_color_jitter(const TrainAugment& aug, RandomStream& rng) {
  ColorJitter j;
  j.brightness_first = true;  // fast_mode (TF-slim's default) has one ordering: brightness, then saturation
  j.delta = static_cast<float>(rng.uniform(-aug.brightness, aug.brightness));
  j.saturation = static_cast<float>(rng.uniform(aug.saturation_min, aug.saturation_max));
  return j;
}

namespace {

// The rows of an image as three float planes in [0, 1] (flipped or not), jittered, handed to
// `store(y, r, g, b)` one row at a time. The per-pixel loops are branch-free so they
// vectorise.
template <class Store>
void for_each_row(const Image& img, bool flip, const ColorJitter* jitter, Store store) {
  const int W = img.width;
  std::vector<float> buf(static_cast<size_t>(W) * 3);
  float *r = buf.data(), *g = r + W, *b = g + W;
  for (int y = 0; y < img.height; ++y) {
    const uint8_t* row = img.row(y);
    for (int x = 0; x < W; ++x) {
      const uint8_t* p = row + (flip ? W - 1 - x : x) * 3;
      r[x] = p[0] * (1.0f / 255.0f), g[x] = p[1] * (1.0f / 255.0f), b[x] = p[2] * (1.0f / 255.0f);
    }
    if (jitter) {
      const float f = jitter->saturation;
      const float d_before = jitter->brightness_first ? jitter->delta : 0.0f;
      const float d_after = jitter->brightness_first ? 0.0f : jitter->delta;
      for (int x = 0; x < W; ++x) {
        float rr = r[x] + d_before, gg = g[x] + d_before, bb = b[x] + d_before;
        // TF's adjust_saturation without the trip through HSV: for a fixed hue and value
        // V = max, each channel is V (1 - S k_c), affine in the saturation S = (max - min) / max,
        // so scaling S by f (clipped to 1) moves each channel to V - (V - c) min(f, 1 / S).
        float mx = rr > gg ? rr : gg;
        mx = mx > bb ? mx : bb;
        float mn = rr < gg ? rr : gg;
        mn = mn < bb ? mn : bb;
        const float span = mx - mn;
        const bool colored = (span > 0.0f) & (mx > 0.0f);  // black and gray stay as they are
        float ratio = mx / (colored ? span : 1.0f);
        ratio = ratio < f ? ratio : f;
        ratio = colored ? ratio : 1.0f;
        rr = mx - (mx - rr) * ratio + d_after;
        gg = mx - (mx - gg) * ratio + d_after;
        bb = mx - (mx - bb) * ratio + d_after;
        r[x] = rr < 0.0f ? 0.0f : (rr > 1.0f ? 1.0f : rr);
        g[x] = gg < 0.0f ? 0.0f : (gg > 1.0f ? 1.0f : gg);
        b[x] = bb < 0.0f ? 0.0f : (bb > 1.0f ? 1.0f : bb);
      }
    }
    store(y, r, g, b);
  }
}

}  // namespace

void write_chw(const Image& img, bool flip, const ColorJitter* jitter, Normalization norm, float* out) {
  static const float kMean[3] = {0.485f, 0.456f, 0.406f}, kStd[3] = {0.229f, 0.224f, 0.225f};
  const size_t plane = static_cast<size_t>(img.width) * img.height;
  float scale[3], shift[3];
  for (int c = 0; c < 3; ++c) {
    scale[c] = norm == Normalization::Inception ? 2.0f : 1.0f / kStd[c];
    shift[c] = norm == Normalization::Inception ? -1.0f : -kMean[c] / kStd[c];
  }
  const int W = img.width;
  for_each_row(img, flip, jitter, [&](int y, const float* r, const float* g, const float* b) {
    float* o = out + static_cast<size_t>(y) * W;
    for (int x = 0; x < W; ++x) o[x] = r[x] * scale[0] + shift[0];
    for (int x = 0; x < W; ++x) o[plane + x] = g[x] * scale[1] + shift[1];
    for (int x = 0; x < W; ++x) o[2 * plane + x] = b[x] * scale[2] + shift[2];
  });
}

void write_chw(const Image& img, bool flip, const ColorJitter* jitter, uint8_t* out) {
  const size_t plane = static_cast<size_t>(img.width) * img.height;
  const int W = img.width;
  for_each_row(img, flip, jitter, [&](int y, const float* r, const float* g, const float* b) {
    uint8_t* o = out + static_cast<size_t>(y) * W;
    for (int x = 0; x < W; ++x) o[x] = to_u8(r[x] * 255.0f);
    for (int x = 0; x < W; ++x) o[plane + x] = to_u8(g[x] * 255.0f);
    for (int x = 0; x < W; ++x) o[2 * plane + x] = to_u8(b[x] * 255.0f);
  });
}

}  // namespace data
}  // namespace fgvc
