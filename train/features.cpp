#include "train/features.h"

#include "autograd/grad_mode.h"
#include "tensor/error.h"

namespace fgvc {
namespace train {

emd::Domain class_mean_features(nn::Classifier& model, data::Loader& loader, Device device) {
  FGVC_CHECK(loader.options().mode == data::Mode::Eval, "class_mean_features", "needs an evaluation-mode loader");
  const std::vector<std::string>& classes = loader.dataset().classes;
  const int64_t m = static_cast<int64_t>(classes.size()), dim = model.feature_dim();
  std::vector<double> sums(static_cast<size_t>(m * dim), 0.0), counts(static_cast<size_t>(m), 0.0);
  // Evaluation mode for the pass (batch norm's running statistics, no dropout); a model in
  // training is left in training.
  const bool was_training = model.is_training();
  model.eval();
  struct Restore {
    nn::Classifier& model;
    bool training;
    ~Restore() { model.train(training); }
  } restore{model, was_training};
  NoGradGuard no_grad;
  loader.start_epoch(0);
  data::Batch batch;
  while (loader.next(&batch)) {
    if (batch.indices.empty()) continue;
    const std::vector<float> f = model.features(batch.images.to(device)).to_vector<float>();
    const std::vector<int64_t> labels = batch.labels.to_vector<int64_t>();
    for (size_t i = 0; i < labels.size(); ++i) {
      counts[labels[i]] += 1;
      for (int64_t k = 0; k < dim; ++k) sums[labels[i] * dim + k] += f[i * dim + k];
    }
  }
  std::vector<double> means(sums.size(), 0.0);
  for (int64_t c = 0; c < m; ++c)
    for (int64_t k = 0; k < dim; ++k) means[c * dim + k] = counts[c] > 0 ? sums[c * dim + k] / counts[c] : 0.0;
  emd::Domain domain;
  domain.features = Tensor::from_vector(means, {m, dim}).to(DType::Float32);
  domain.counts = counts;
  domain.classes = classes;
  return domain;
}

}  // namespace train
}  // namespace fgvc
