#include "data/subset.h"

#include <algorithm>
#include <numeric>

#include "data/transforms.h"
#include "tensor/error.h"

namespace fgvc {
namespace data {

namespace {
// Keys (xor the seed) of the random streams here; the per-sample augmentation streams have
// RandomStream::kAugmentKey, the default generator (weight initialisation) the seed itself.
constexpr uint64_t kShuffleKey = 0x5bd1e9955bd1e995ull, kSubsetKey = 0x9e3779b97f4a7c15ull,
                   kBalancedKey = 0xc2b2ae3d27d4eb4full;
}  // namespace

std::vector<bool> head_classes(const std::vector<int64_t>& counts, int64_t threshold) {
  std::vector<bool> head(counts.size());
  for (size_t c = 0; c < counts.size(); ++c) head[c] = counts[c] >= threshold;
  return head;
}

LongTailStats long_tail_stats(const Dataset& d, int64_t threshold) {
  LongTailStats s;
  s.counts = d.counts();
  s.threshold = threshold;
  for (int64_t c : s.counts) {
    (c >= threshold ? s.head_classes : s.tail_classes)++;
    (c >= threshold ? s.head_images : s.tail_images) += c;
    if (c > 0) {
      s.largest = std::max(s.largest, c);
      s.smallest = s.smallest == 0 ? c : std::min(s.smallest, c);
    }
  }
  s.imbalance = s.smallest > 0 ? static_cast<double>(s.largest) / s.smallest : 0.0;
  return s;
}

std::vector<int64_t> shuffled_order(int64_t n, uint64_t seed, uint64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  RandomStream rng(seed ^ kShuffleKey, epoch << 32);
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);  // Fisher-Yates
  return order;
}

Dataset balanced_subset(const Dataset& d, int64_t max_per_class, uint64_t seed,
                        const std::function<bool(const Sample&)>& usable) {
  FGVC_CHECK(max_per_class > 0, "balanced_subset", "max_per_class must be positive, got ", max_per_class);
  std::vector<std::vector<int64_t>> by_class(d.classes.size());
  for (size_t i = 0; i < d.samples.size(); ++i) by_class[d.samples[i].label].push_back(static_cast<int64_t>(i));
  std::vector<char> keep(d.samples.size(), 0);
  for (size_t c = 0; c < by_class.size(); ++c) {
    std::vector<int64_t>& idx = by_class[c];
    // A seeded partial Fisher-Yates: the first max_per_class (usable) of a random permutation.
    RandomStream rng(seed ^ kSubsetKey, static_cast<uint64_t>(c) << 32);
    const int64_t n = static_cast<int64_t>(idx.size());
    int64_t kept = 0;
    for (int64_t i = 0; i < n && kept < max_per_class; ++i) {
      std::swap(idx[i], idx[i + rng.below(n - i)]);
      if (!usable || usable(d.samples[idx[i]])) keep[idx[i]] = 1, ++kept;
    }
  }
  Dataset out;
  out.classes = d.classes;
  out.numbered = d.numbered;
  out.source = d.source + " (at most " + std::to_string(max_per_class) + " per class)";
  for (size_t i = 0; i < d.samples.size(); ++i)
    if (keep[i]) out.samples.push_back(d.samples[i]);
  return out;
}

std::vector<int64_t> class_balanced_order(const Dataset& d, int64_t n, uint64_t seed, uint64_t epoch) {
  std::vector<std::vector<int64_t>> by_class(d.classes.size());
  for (size_t i = 0; i < d.samples.size(); ++i) by_class[d.samples[i].label].push_back(static_cast<int64_t>(i));
  std::vector<int64_t> nonempty;
  for (size_t c = 0; c < by_class.size(); ++c)
    if (!by_class[c].empty()) nonempty.push_back(static_cast<int64_t>(c));
  FGVC_CHECK(!nonempty.empty(), "class_balanced_order", "dataset ", d.source, " has no samples");
  RandomStream rng(seed ^ kBalancedKey, epoch << 32);
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto& members = by_class[nonempty[rng.below(static_cast<int64_t>(nonempty.size()))]];
    order[i] = members[rng.below(static_cast<int64_t>(members.size()))];
  }
  return order;
}

std::vector<int64_t> rank_share(const std::vector<int64_t>& order, int rank, int world) {
  FGVC_CHECK(world >= 1 && rank >= 0 && rank < world, "rank_share", "rank ", rank, " of a world of ", world);
  std::vector<int64_t> share;
  share.reserve(order.size() / static_cast<size_t>(world) + 1);
  for (size_t i = static_cast<size_t>(rank); i < order.size(); i += static_cast<size_t>(world)) share.push_back(order[i]);
  return share;
}

}  // namespace data
}  // namespace fgvc
