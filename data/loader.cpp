#include "data/loader.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "data/decode.h"
#include "data/subset.h"
#include "tensor/cuda_runtime.h"
#include "tensor/warning.h"

namespace fgvc {
namespace data {

Loader::Loader(Dataset dataset, LoaderOptions options) : dataset_(std::move(dataset)), options_(options) {
  FGVC_CHECK(options_.batch_size > 0, "Loader", "batch size must be positive, got ", options_.batch_size);
  FGVC_CHECK(options_.size > 0, "Loader", "image size must be positive, got ", options_.size);
  FGVC_CHECK(options_.workers > 0 && options_.prefetch > 0, "Loader", "needs at least one worker and one batch of prefetch");
  FGVC_CHECK(!dataset_.samples.empty(), "Loader", "dataset ", dataset_.source.empty() ? std::string("(made in memory)") : dataset_.source, " is empty");
  if (options_.mode == Mode::Train) check_augment(options_.augment);
  options_.pinned = options_.pinned && cuda_available();
}

Loader::~Loader() { stop_workers(); }

int64_t Loader::batches_per_epoch() const {
  const int64_t total = static_cast<int64_t>(dataset_.samples.size()), b = options_.batch_size;
  const int64_t w = options_.world_size, r = options_.rank;
  // This rank's share; with drop_last, the smallest share, so that every rank steps alike.
  const int64_t n = options_.drop_last ? total / w : (total - r + w - 1) / w;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

void Loader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  stopping_ = false;
}

void Loader::start_epoch(uint64_t epoch, int64_t first_batch) {
  stop_workers();
  const int64_t n = static_cast<int64_t>(dataset_.samples.size());
  if (options_.mode == Mode::Train && options_.shuffle) {
    order_ = shuffled_order(n, options_.seed, epoch);
  } else {
    order_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order_[i] = i;
  }
  if (options_.world_size > 1) order_ = rank_share(order_, options_.rank, options_.world_size);
  epoch_ = epoch;
  end_ = batches_per_epoch();
  FGVC_CHECK(first_batch >= 0 && first_batch <= end_, "Loader::start_epoch", "first batch ", first_batch,
             " is not within the epoch's ", end_, " batches");
  next_to_make_ = next_to_hand_ = first_batch;
  skipped_ = 0;
  new_skipped_ = 0;
  reported_ = false;
  failure_ = nullptr;
  ready_.clear();
  for (int w = 0; w < options_.workers; ++w) threads_.emplace_back([this] { worker_loop(); });
}

void Loader::worker_loop() {
  for (;;) {
    int64_t b;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] {
        // Batches ahead of the consumer count those in the making too: one per worker on
        // top of `prefetch`, or some workers would sit idle while the queue is short.
        return stopping_ || next_to_make_ >= end_ ||
               next_to_make_ < next_to_hand_ + options_.prefetch + options_.workers;
      });
      if (stopping_ || next_to_make_ >= end_) return;
      b = next_to_make_++;
    }
    Batch batch;
    std::exception_ptr failure;
    try {
      batch = make_batch(b, epoch_);
    } catch (...) {  // e.g. out of memory: handed to the consumer, not std::terminate
      failure = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (failure && !failure_) failure_ = failure;
      ready_.emplace(b, std::move(batch));
    }
    cv_.notify_all();
  }
}

int64_t Loader::ready_batches() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(ready_.size());
}

bool Loader::next(Batch* out) {
  std::unique_lock<std::mutex> lock(mu_);
  if (next_to_hand_ >= end_) {
    if (options_.warn && new_skipped_ > 0 && !reported_) {  // once, at the end of an epoch that warned
      if (options_.mode == Mode::Train)  // epochs counted from 1, as training reports them
        warn("%lld unreadable file(s) skipped in epoch %llu",
             static_cast<long long>(skipped_), static_cast<unsigned long long>(epoch_ + 1));
      else
        warn("%lld unreadable file(s) skipped", static_cast<long long>(skipped_));
      reported_ = true;
    }
    return false;
  }
  cv_.wait(lock, [&] { return ready_.count(next_to_hand_) > 0; });
  if (failure_) std::rethrow_exception(failure_);
  auto it = ready_.find(next_to_hand_);
  *out = std::move(it->second);
  ready_.erase(it);
  ++next_to_hand_;
  skipped_ += out->skipped;
  // Counted here, not where the batch was made: a batch made ahead and never used (the run
  // ended first) was not part of the run, and its files are neither warned about nor
  // counted; what is warned about is counted. A file is warned about once per loader.
  std::vector<const Batch::SkippedFile*> first_time;
  for (const Batch::SkippedFile& f : out->skipped_files)
    if (warned_.insert(f.index).second) first_time.push_back(&f);
  new_skipped_ += static_cast<int64_t>(first_time.size());
  lock.unlock();
  cv_.notify_all();
  if (options_.warn)
    for (const Batch::SkippedFile* f : first_time) warn("skipped %s", f->error.c_str());
  return true;
}

void Loader::give_back(const Batch& batch) {
  std::lock_guard<std::mutex> lock(mu_);
  skipped_ -= batch.skipped;
}

bool Loader::load_sample(int64_t index, uint64_t epoch, void* out, std::string* error) const {
  const Sample& s = dataset_.samples[index];
  std::vector<uint8_t> bytes;
  if (!read_file(s.path, &bytes, error)) return false;
  const ImageHeader header = read_header(bytes, s.path);
  if (!header.error.empty()) {
    *error = header.error;
    return false;
  }
  const int S = options_.size;
  std::vector<Box> boxes;
  RandomStream rng = RandomStream::for_sample(options_.seed, epoch, static_cast<uint64_t>(index));
  if (options_.mode == Mode::Train) boxes.push_back(sample_crop(header.width, header.height, options_.augment, rng));
  else if (options_.mode == Mode::Eval) boxes.push_back(central_crop(header.width, header.height));
  else boxes = twelve_crop_boxes(header.width, header.height);

  // One decode covering every box (for 12 views: the whole image) at the scale the smallest
  // box still needs S x S pixels.
  Box cover = boxes[0];
  double min_w = boxes[0].w, min_h = boxes[0].h;
  for (const Box& b : boxes) {
    const double x1 = std::max(cover.x + cover.w, b.x + b.w), y1 = std::max(cover.y + cover.h, b.y + b.h);
    cover.x = std::min(cover.x, b.x);
    cover.y = std::min(cover.y, b.y);
    cover.w = x1 - cover.x;
    cover.h = y1 - cover.y;
    min_w = std::min(min_w, b.w);
    min_h = std::min(min_h, b.h);
  }
  // The scale that gives the smallest box S pixels gives the covering region this many.
  const int need_w = static_cast<int>(std::ceil(S * cover.w / min_w));
  const int need_h = static_cast<int>(std::ceil(S * cover.h / min_h));
  const Decoded d = decode_image(bytes, s.path, cover, need_w, need_h);
  if (!d.ok()) {
    *error = d.error;
    return false;
  }
  const double fx = d.region.w / cover.w, fy = d.region.h / cover.h;
  const size_t per_view = static_cast<size_t>(3) * S * S;
  int view = 0;
  for (const Box& b : boxes) {
    const Box in_decoded{d.region.x + (b.x - cover.x) * fx, d.region.y + (b.y - cover.y) * fy, b.w * fx, b.h * fy};
    Image img = resize_region(d.image, in_decoded, S);
    const int flips = options_.mode == Mode::Eval12 ? 2 : 1;
    for (int f = 0; f < flips; ++f, ++view) {
      const bool train = options_.mode == Mode::Train;
      const bool flip = train ? options_.augment.flip && rng.uniform() < 0.5 : f == 1;
      ColorJitter jitter;
      if (train && options_.augment.color_distort) jitter = sample_color_jitter(options_.augment, rng);
      const ColorJitter* j = train && options_.augment.color_distort ? &jitter : nullptr;
      if (options_.uint8_output) write_chw(img, flip, j, static_cast<uint8_t*>(out) + view * per_view);
      else write_chw(img, flip, j, options_.normalization, static_cast<float*>(out) + view * per_view);
    }
  }
  return true;
}

Batch Loader::make_batch(int64_t b, uint64_t epoch) const {
  const int64_t n = static_cast<int64_t>(order_.size()), B = options_.batch_size;
  const int64_t lo = b * B, hi = std::min(n, lo + B);
  const int V = views(), S = options_.size;
  const size_t per_image = static_cast<size_t>(V) * 3 * S * S;
  const DType dtype = options_.uint8_output ? DType::UInt8 : DType::Float32;
  Tensor images = Tensor::empty({(hi - lo) * V, 3, S, S}, dtype, Device::cpu(), options_.pinned);
  std::vector<int64_t> labels;
  Batch batch;
  char* base = static_cast<char*>(images.data_ptr());
  for (int64_t p = lo; p < hi; ++p) {
    const int64_t index = order_[p];
    std::string error;
    void* slot = base + static_cast<size_t>(batch.indices.size()) * per_image * dtype_size(dtype);
    if (!load_sample(index, epoch, slot, &error)) {
      batch.skipped++;
      batch.skipped_files.push_back({index, error});
      continue;
    }
    batch.indices.push_back(index);
    for (int v = 0; v < V; ++v) labels.push_back(dataset_.samples[index].label);
  }
  const int64_t kept = static_cast<int64_t>(batch.indices.size());
  batch.images = kept == hi - lo ? images : images.slice(0, 0, kept * V);
  batch.labels = Tensor::from_vector(labels, {static_cast<int64_t>(labels.size())});
  return batch;
}

}  // namespace data
}  // namespace fgvc
