// The input pipeline: worker threads decode and transform samples into batches ahead of the
// consumer, through a bounded queue of ready batches. The workers never wait on the queue
// while it holds fewer than `prefetch` batches beyond one per worker, so every worker
// decodes at once, and at most prefetch + workers batches are in memory ahead of the consumer.
//
// Determinism: batch b of epoch e holds the samples at positions [b B, (b + 1) B) of the
// epoch's order (a function of seed and epoch), and every random choice of a sample comes
// from the stream of (seed, epoch, sample index). Batches are handed out in order. So the
// batches are the same with 1 or 16 workers, whatever the timing.
//
// Bad files are skipped (the batch is that much smaller) and counted, with one warning line
// naming each the first time its batch is handed out (not again in later epochs);
// skipped() gives the epoch's count, skipped_files() the distinct files over all epochs.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/transforms.h"
#include "tensor/tensor.h"

namespace fgvc {
namespace data {

enum class Mode { Train, Eval, Eval12 };  // Eval12: 12 views per image, [12 B, 3, S, S]

struct LoaderOptions {
  int64_t batch_size = 32;
  int size = 299;                        // output S x S
  Mode mode = Mode::Train;
  Normalization normalization = Normalization::Inception;
  TrainAugment augment;
  int workers = 1;
  int prefetch = 4;                      // batches kept ahead of the consumer, beyond one per worker
  bool shuffle = true;                   // train; eval keeps the dataset order
  bool drop_last = false;
  bool uint8_output = false;             // raw RGB [B, 3, S, S] uint8 instead of normalised float32
  bool pinned = true;                    // page-locked batches when a CUDA device is usable
  bool warn = true;                      // print one warning per skipped file on stderr
  uint64_t seed = 0;
  // Data-parallel training: this process (rank) takes positions rank, rank + W, rank + 2W, ...
  // of each epoch's order (data/subset.h, rank_share), so the ranks' batches b together are
  // batch b of one process with W times the batch size. With drop_last every rank gets the
  // same number of batches (the collectives need it).
  int rank = 0, world_size = 1;
};

struct Batch {
  Tensor images;                 // [B, 3, S, S] (B may be smaller: last batch, skipped files)
  Tensor labels;                 // [B] int64
  std::vector<int64_t> indices;  // dataset index of each image
  int64_t skipped = 0;           // files of this batch that could not be read
  struct SkippedFile {
    int64_t index;      // in the dataset
    std::string error;  // naming the file
  };
  std::vector<SkippedFile> skipped_files;  // which, and why (warned about when the batch is handed out)
};

class Loader {
 public:
  Loader(Dataset dataset, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Starts (or restarts) epoch `epoch` (its order and augmentations), from batch `first`
  // (0 to batches_per_epoch(); the last: the epoch is over).
  void start_epoch(uint64_t epoch, int64_t first_batch = 0);
  // The next batch of the epoch in order; false when the epoch is over.
  bool next(Batch* batch);
  // The batch next() handed out last goes unused (a run stopped before its step): its
  // unreadable files leave skipped(), since a resumed run takes the batch again and counts
  // them then. (They were warned about, and stay in skipped_indices().)
  void give_back(const Batch& batch);
  int64_t batches_per_epoch() const;
  int64_t skipped() const { return skipped_; }
  int64_t skipped_files() const { return static_cast<int64_t>(warned_.size()); }
  const std::set<int64_t>& skipped_indices() const { return warned_; }  // their dataset indices
  const Dataset& dataset() const { return dataset_; }
  const LoaderOptions& options() const { return options_; }

  // One sample as the workers make it (for tests and tools): views x 3 x S x S floats or
  // bytes written to `out`; false (with the reason) for an unreadable file.
  bool load_sample(int64_t index, uint64_t epoch, void* out, std::string* error) const;
  int views() const { return options_.mode == Mode::Eval12 ? 12 : 1; }
  // Batches made and not yet handed out (at most prefetch + workers).
  int64_t ready_batches() const;

 private:
  void stop_workers();
  void worker_loop();
  Batch make_batch(int64_t b, uint64_t epoch) const;

  Dataset dataset_;
  LoaderOptions options_;
  std::vector<int64_t> order_;
  uint64_t epoch_ = 0;
  int64_t next_to_make_ = 0, next_to_hand_ = 0, end_ = 0;
  int64_t skipped_ = 0;
  int64_t new_skipped_ = 0;      // files of this epoch not skipped in an earlier one
  std::set<int64_t> warned_;     // every file skipped so far (dataset indices)
  bool reported_ = false;        // the epoch's skipped count has been printed
  std::map<int64_t, Batch> ready_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::exception_ptr failure_;  // the first error a worker hit
  std::vector<std::thread> threads_;
};

}  // namespace data
}  // namespace fgvc
