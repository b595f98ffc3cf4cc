#include "tensor/block_pool.h"

namespace fgvc {

namespace {
constexpr size_t kSmall = 1 << 20;
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = 2 << 20;
}  // namespace

BlockPool::BlockPool(std::function<void*(size_t)> obtain, std::function<void(void*, size_t)> give_back,
                     std::function<void()> flush, size_t max_cached)
    : obtain_(std::move(obtain)), give_back_(std::move(give_back)), flush_(std::move(flush)), max_cached_(max_cached) {}

BlockPool::~BlockPool() {
  std::lock_guard<std::mutex> lock(mu_);
  empty_cache_locked();
}

size_t BlockPool::round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  const size_t unit = bytes < kSmall ? kSmallRound : kLargeRound;
  return (bytes + unit - 1) / unit * unit;
}

void* BlockPool::allocate(size_t bytes) {
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  void* ptr = nullptr;
  size_t got = size;
  auto it = free_blocks_.lower_bound(size);
  if (it != free_blocks_.end() && it->first <= 2 * size) {
    ptr = it->second;
    got = it->first;
    free_blocks_.erase(it);
  } else {
    ptr = obtain_(size);
    if (!ptr) {
      empty_cache_locked();
      ptr = obtain_(size);
    }
    if (!ptr) return nullptr;
    stats_.reserved += size;
    stats_.num_backend_allocations++;
  }
  live_[ptr] = got;
  stats_.allocated += got;
  stats_.num_allocations++;
  if (stats_.allocated > stats_.peak_allocated) stats_.peak_allocated = stats_.allocated;
  return ptr;
}

void BlockPool::release(void* ptr) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  if (it == live_.end()) return;
  const size_t size = it->second;
  live_.erase(it);
  stats_.allocated -= size;
  if (stats_.reserved - stats_.allocated > max_cached_) {  // over the cap: not kept
    if (flush_) flush_();
    give_back_(ptr, size);
    stats_.reserved -= size;
    return;
  }
  free_blocks_.emplace(size, ptr);
}

void BlockPool::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  empty_cache_locked();
}

void BlockPool::empty_cache_locked() {
  if (free_blocks_.empty()) return;
  if (flush_) flush_();
  for (auto& [size, ptr] : free_blocks_) {
    give_back_(ptr, size);
    stats_.reserved -= size;
  }
  free_blocks_.clear();
}

PoolStats BlockPool::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BlockPool::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_allocated = stats_.allocated;
}

}  // namespace fgvc
