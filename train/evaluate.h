// Evaluation as the paper reports it: top-1 and top-5 accuracy over a validation set, for
// one model or an ensemble (softmax probabilities averaged over the models and, with 12-crop
// evaluation, over the views), per class, and split into head and tail classes by their
// number of training images (the paper's Table 4).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/loader.h"
#include "nn/models/registry.h"

namespace fgvc {
namespace train {

struct ClassResult {
  int64_t images = 0, top1 = 0, top5 = 0;  // images, and how many of them were right
};

struct EvalResult {
  int64_t images = 0, top1 = 0, top5 = 0;
  // Mean cross-entropy of the averaged probabilities (no smoothing); +inf where a true class
  // has probability 0 in every model and view (a logit of -inf), NaN where a score is NaN.
  double loss = 0;
  int64_t skipped = 0;
  // Images with a NaN or +inf logit (no probabilities): counted as wrong. A logit of -inf is a
  // class ruled out, probability 0, and scores normally.
  int64_t nonfinite = 0;
  std::vector<ClassResult> per_class;
  double top1_accuracy() const { return images ? double(top1) / images : 0.0; }
  double top5_accuracy() const { return images ? double(top5) / images : 0.0; }
};

// A model of an ensemble with the loader that feeds it (its own input size and
// normalisation). All loaders must be in evaluation mode over the same dataset, so their
// batches hold the same images in the same order.
struct EnsembleMember {
  nn::Classifier* model;
  data::Loader* loader;
};

// Runs every member in evaluation mode without recording a graph, on `device`. `progress`
// (optional) hears (batches done, batches in all) after each batch.
EvalResult evaluate(const std::vector<EnsembleMember>& members, Device device,
                    const std::function<void(int64_t, int64_t)>& progress = {});

// Accuracy over the images of the head classes (at least `threshold` training images) and of
// the tail classes (the rest). Every class counts in its group; one without validation images
// adds no image to it.
struct HeadTailResult {
  int64_t threshold = 100;
  int64_t head_classes = 0, tail_classes = 0, head_images = 0, tail_images = 0;
  double head_top1 = 0, tail_top1 = 0, head_top5 = 0, tail_top5 = 0;
};
HeadTailResult head_tail(const EvalResult& r, const std::vector<int64_t>& train_counts, int64_t threshold);

// One line per class: class,train_images,val_images,top1,top5 (accuracies as fractions, empty
// for a class without validation images);
// train_images is empty when train_counts is. Written atomically.
void write_per_class_csv(const std::string& path, const EvalResult& r, const std::vector<std::string>& classes,
                         const std::vector<int64_t>& train_counts);

}  // namespace train
}  // namespace fgvc
