#include "train/evaluate.h"

#include <cmath>
#include <limits>
#include <sstream>

#include "autograd/grad_mode.h"
#include "tensor/atomic_file.h"
#include "tensor/error.h"

namespace fgvc {
namespace train {

EvalResult evaluate(const std::vector<EnsembleMember>& members, Device device,
                    const std::function<void(int64_t, int64_t)>& progress) {
  FGVC_CHECK(!members.empty(), "evaluate", "no model to evaluate");
  const data::Dataset& dataset = members[0].loader->dataset();
  const int64_t K = static_cast<int64_t>(dataset.classes.size());
  EvalResult r;
  r.per_class.resize(static_cast<size_t>(K));
  for (const EnsembleMember& m : members) {
    FGVC_CHECK(m.loader->options().mode != data::Mode::Train, "evaluate", "the loader is in training mode");
    FGVC_CHECK(m.loader->dataset().samples.size() == dataset.samples.size(), "evaluate",
               "ensemble loaders over different datasets");
    m.model->eval();
    m.loader->start_epoch(0);
  }
  NoGradGuard no_grad;
  const int64_t total = members[0].loader->batches_per_epoch();
  std::vector<data::Batch> batches(members.size());
  for (int64_t done = 0;; ++done) {
    bool more = true;
    for (size_t i = 0; i < members.size(); ++i) more = members[i].loader->next(&batches[i]) && more;
    if (!more) break;
    const data::Batch& first = batches[0];
    r.skipped += first.skipped;
    const int64_t n = static_cast<int64_t>(first.indices.size());
    if (n == 0) continue;
    // The probabilities averaged over models and views, kept as their logarithms: per image
    // and class a running log-sum-exp (the largest log-probability and the sum of exp(lp -
    // largest)), in double from the logits. Probabilities themselves round to 0 once logits
    // are ~100 apart in float32 (~745 in double), and classes at 0 would tie.
    std::vector<double> top(static_cast<size_t>(n * K), -INFINITY), sum(static_cast<size_t>(n * K), 0.0);
    std::vector<char> finite(static_cast<size_t>(n), 1);
    for (size_t i = 0; i < members.size(); ++i) {
      FGVC_CHECK(batches[i].indices == first.indices, "evaluate", "ensemble loaders disagree on the images of a batch");
      const Tensor logits = members[i].model->forward(batches[i].images.to(device));
      FGVC_CHECK(logits.dim() == 2 && logits.size(1) == K, "evaluate", "model ", i, " gives logits ",
                 shape_str(logits.shape()), " for ", K, " classes");
      const std::vector<double> x = logits.to_vector<double>();
      const int64_t views = logits.size(0) / n;
      // Each model's views weigh 1 / views, each model 1 / models.
      const double log_weight = -std::log(static_cast<double>(members.size()) * static_cast<double>(views));
      for (int64_t row = 0; row < logits.size(0); ++row) {
        const double* xr = &x[row * K];
        const int64_t j = row / views;
        double largest = -INFINITY;
        for (int64_t c = 0; c < K; ++c) largest = std::max(largest, xr[c]);
        // NaN or +inf (a model with non-finite weights), or every logit -inf: no probabilities
        // for this image.
        bool ok = std::isfinite(largest);
        for (int64_t c = 0; c < K; ++c) ok = ok && !std::isnan(xr[c]);
        if (!ok) {
          finite[j] = 0;
          continue;
        }
        double e = 0;
        for (int64_t c = 0; c < K; ++c) e += std::exp(xr[c] - largest);
        const double lse = largest + std::log(e) - log_weight;
        for (int64_t c = 0; c < K; ++c) {
          const double lp = xr[c] - lse;  // log(weight x probability); -inf (a masked class) adds nothing
          double &t = top[j * K + c], &s = sum[j * K + c];
          if (lp > t) s = s * std::exp(t - lp) + 1.0, t = lp;
          else if (lp > -INFINITY) s += std::exp(lp - t);
        }
      }
    }
    std::vector<double> score(static_cast<size_t>(K));
    for (int64_t j = 0; j < n; ++j) {
      const int64_t label = dataset.samples[first.indices[j]].label;
      // log of the averaged probability
      for (int64_t c = 0; c < K; ++c) score[c] = top[j * K + c] + std::log(sum[j * K + c]);
      // Rank of the true class: the other classes at least as probable (a tie counts against
      // it: a model that cannot tell classes apart is not right by their order). Scores that
      // are not finite (a model with NaN weights) rank it last, outside the top 5 too.
      int64_t rank = 0;
      if (!finite[j]) rank = std::numeric_limits<int64_t>::max(), r.nonfinite++;
      for (int64_t c = 0; c < K && finite[j]; ++c) rank += c != label && score[c] >= score[label];
      ClassResult& cr = r.per_class[label];
      cr.images++, r.images++;
      if (rank == 0) cr.top1++, r.top1++;
      if (rank < 5) cr.top5++, r.top5++;
      // -log of the mean probability; NaN scores: a NaN loss, as the model's.
      r.loss += finite[j] ? -score[label] : NAN;
    }
    if (progress) progress(done + 1, total);
  }
  if (r.images) r.loss /= r.images;
  return r;
}

HeadTailResult head_tail(const EvalResult& r, const std::vector<int64_t>& train_counts, int64_t threshold) {
  FGVC_CHECK(train_counts.size() == r.per_class.size(), "head_tail", "training counts for ", train_counts.size(),
             " classes, results for ", r.per_class.size());
  HeadTailResult h;
  h.threshold = threshold;
  int64_t head1 = 0, head5 = 0, tail1 = 0, tail5 = 0;
  for (size_t c = 0; c < r.per_class.size(); ++c) {
    const ClassResult& cr = r.per_class[c];
    // Every class counts in its group, as in the "all" row, so that the groups' classes add up;
    // one without validation images adds no image and so changes no accuracy.
    if (train_counts[c] >= threshold) {
      h.head_classes++, h.head_images += cr.images, head1 += cr.top1, head5 += cr.top5;
    } else {
      h.tail_classes++, h.tail_images += cr.images, tail1 += cr.top1, tail5 += cr.top5;
    }
  }
  if (h.head_images) h.head_top1 = double(head1) / h.head_images, h.head_top5 = double(head5) / h.head_images;
  if (h.tail_images) h.tail_top1 = double(tail1) / h.tail_images, h.tail_top5 = double(tail5) / h.tail_images;
  return h;
}

void write_per_class_csv(const std::string& path, const EvalResult& r, const std::vector<std::string>& classes,
                         const std::vector<int64_t>& train_counts) {
  std::ostringstream out;
  out.precision(6);
  out << "class,train_images,val_images,top1,top5\n";
  for (size_t c = 0; c < r.per_class.size(); ++c) {
    const ClassResult& cr = r.per_class[c];
    std::string name = c < classes.size() ? classes[c] : std::to_string(c);
    if (name.find_first_of(",\"\r\n") != std::string::npos) {  // CSV quoting
      std::string q = "\"";
      for (char ch : name) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
      name = q + "\"";
    }
    out << name << ',' << (train_counts.empty() ? std::string() : std::to_string(train_counts[c])) << ','
        << cr.images << ',';
    if (cr.images)  // a class without validation images has no accuracy: empty fields, not 0
      out << double(cr.top1) / cr.images << ',' << double(cr.top5) / cr.images;
    else
      out << ',';
    out << '\n';
  }
  write_file_atomic(path, out.str());
}

}  // namespace train
}  // namespace fgvc
