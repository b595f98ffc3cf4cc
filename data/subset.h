// Long-tail statistics, class-balanced sampling and the balanced subset of the paper's
// second training stage (Cui et al. 2018, section 3.2: fine-tune on a more balanced subset).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "data/dataset.h"

namespace fgvc {
namespace data {

struct LongTailStats {
  std::vector<int64_t> counts;  // images per class
  int64_t threshold = 100;      // head: classes with at least this many images
  int64_t head_classes = 0, tail_classes = 0, head_images = 0, tail_images = 0;
  int64_t largest = 0, smallest = 0;  // over classes with images
  double imbalance = 0;               // largest / smallest
};
LongTailStats long_tail_stats(const Dataset& d, int64_t head_threshold = 100);
std::vector<bool> head_classes(const std::vector<int64_t>& counts, int64_t threshold);

// At most max_per_class images of each class (all of a class with fewer), chosen uniformly
// at random with `seed`; the kept samples stay in their original order. With `usable`, a drawn
// sample it refuses is passed over and the next drawn in its place (the same draws as without
// it while every sample is usable).
Dataset balanced_subset(const Dataset& d, int64_t max_per_class, uint64_t seed,
                        const std::function<bool(const Sample&)>& usable = {});

// An epoch order of `n` sample indices in which every class is equally likely: a class
// uniformly at random, then one of its images uniformly at random.
std::vector<int64_t> class_balanced_order(const Dataset& d, int64_t n, uint64_t seed, uint64_t epoch);

// A uniformly random permutation of 0..n-1, a function of (seed, epoch) only.
std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed, uint64_t epoch);

// The distributed sampler's partition: positions rank, rank + world, ... of `order`. The
// shares of ranks 0..world-1 are disjoint and cover `order` exactly once.
std::vector<int64_t> rank_share(const std::vector<int64_t>& order, int rank, int world);

}  // namespace data
}  // namespace fgvc
