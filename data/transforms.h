// The paper's input transforms, as TF-slim's Inception preprocessing does them.
//
// Train: a random crop of area fraction in [0.05, 1] that covers at least 10% of the image
// (so [0.1, 1] in effect) with aspect ratio in [0.75, 1.33] (100 attempts, else the whole
// image; its height uniform, as TensorFlow's sample_distorted_bounding_box draws it), resized
// to S x S (bilinear), flipped left-right with probability 1/2, colours
// distorted (brightness +-32/255, then saturation x[0.5, 1.5], as TF-slim's fast_mode; clipped).
// Eval: the central 87.5% of the image resized to S x S; 12-crop: the full image, the centre
// and the four corners (87.5% crops), each also flipped.
// Resizing is bilinear; when shrinking by more than 2x the filter widens with the scale
// (antialiasing), so no detail aliases. Outputs are float32 CHW, normalised to [-1, 1]
// (Inception) or by the ImageNet mean and std (ResNets).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace fgvc {
namespace data {

enum class Normalization { Inception, ImageNet };

// Uniform random numbers from a counter-based stream (Philox, tensor/philox.h): a key and
// the first block. Augmentations take the stream of (seed, epoch, sample index), so they
// never depend on threads or timing.
class RandomStream {
 public:
  RandomStream(uint64_t key, uint64_t first_block) : seed_(key), base_(first_block) {}
  // The stream of one sample in one epoch: 4096 blocks of its own, under a key of its own
  // (with key = seed, epoch 0's first ~1,500 samples would draw the very blocks the weight
  // initialisation drew from the default generator of the same seed).
  static constexpr uint64_t kAugmentKey = 0x94d049bb133111ebull;
  static RandomStream for_sample(uint64_t seed, uint64_t epoch, uint64_t index) {
    return RandomStream(seed ^ kAugmentKey, (epoch << 44) ^ (index << 12));
  }
  double uniform();  // [0, 1), 53 random bits
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int64_t below(int64_t n);  // uniform integer in [0, n)

 private:
  uint64_t seed_, base_;
  uint32_t words_[4] = {};
  int next_ = 4;
  uint64_t block_ = 0;
};

// How the train transform samples its crop: TF-slim's (the paper's; the default) or
// torchvision's RandomResizedCrop, for runs compared with PyTorch.
enum class CropStyle { TfSlim, Torchvision };
// "tf-slim" or "torchvision"; anything else throws.
CropStyle crop_style(const std::string& name);
// The smallest area fraction a style draws by default: TF-slim's area_range starts at 0.05,
// torchvision's scale at 0.08.
constexpr double default_area_min(CropStyle style) { return style == CropStyle::Torchvision ? 0.08 : 0.05; }

struct TrainAugment {
  CropStyle crop = CropStyle::TfSlim;
  double area_min = default_area_min(CropStyle::TfSlim), area_max = 1.0;
  double min_covered = 0.1;                // TF-slim only
  double aspect_min = 0.75, aspect_max = 1.33;  // TF-slim only (torchvision's: 3/4 to 4/3, log-uniform)
  int attempts = 100;                           // TF-slim only (torchvision's: 10)
  bool flip = true;
  bool color_distort = true;
  double brightness = 32.0 / 255.0;
  double saturation_min = 0.5, saturation_max = 1.5;
};

// Refuses values no draw can honour (each named): areas outside (0, 1] or min above max,
// min_covered outside [0, 1], aspect ratios not positive or min above max, attempts below 1,
// a brightness delta outside [0, 1], saturation factors negative or min above max; NaN anywhere.
void check_augment(const TrainAugment& aug);

// The crop box of the train transform in an image of width x height.
Box sample_crop(int width, int height, const TrainAugment& aug, RandomStream& rng);
// The central crop (fraction of each side, in whole pixels as TensorFlow's central_crop) and the
// 12-crop boxes (6 regions, the corners of the central crop's size; flips are separate).
Box central_crop(int width, int height, double fraction = 0.875);
std::vector<Box> twelve_crop_boxes(int width, int height, double fraction = 0.875);

// Resamples `region` of `src` to size x size RGB (antialiased when shrinking > 2x).
Image resize_region(const Image& src, const Box& region, int size);
void flip_horizontal(Image& img);

// TF-slim's fast distort_color: brightness (+delta) then saturation (x factor, in HSV), as
// its default fast_mode does (one ordering; the other is supported), then clipped to [0, 1].
struct ColorJitter {
  bool brightness_first = true;
  float delta = 0, saturation = 1;
};
ColorJitter sample_color_jitter(const TrainAugment& aug, RandomStream& rng);

// The last step, in one pass over the pixels: optional left-right flip, optional colour
// jitter, then float32 CHW normalised (or uint8 CHW), written to out[0 .. 3 * w * h).
void write_chw(const Image& img, bool flip, const ColorJitter* jitter, Normalization norm, float* out);
void write_chw(const Image& img, bool flip, const ColorJitter* jitter, uint8_t* out);

}  // namespace data
}  // namespace fgvc
