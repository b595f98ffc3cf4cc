// Inception-v4 (Szegedy et al. 2017) block by block as timm builds it (features.0 ..
// features.21, then last_linear), with timm's parameter names so its weights load by name;
// and, as TF-slim builds it for training, dropout 0.2 before the classifier and, on request
// (fgvc-train with --aux-weight > 0), an auxiliary classifier on Mixed_6h (AuxLogits.*, which
// timm's model and files leave out: 3,359,464 more parameters at 1000 classes).
// Convolutions are BasicConv2d (conv + batch norm eps 0.001 + ReLU; timm's ConvNormAct with
// the same conv/bn names); average pools leave the padding out of the divisor.
#pragma once
#include "nn/models/inception_v3.h"

namespace fgvc {
namespace nn {

class InceptionV4 : public Classifier {
 public:
  explicit InceptionV4(int64_t num_classes, bool aux_classifier = false);
  Tensor forward_impl(const Tensor& x) override { return classify(features(x)); }
  Tensor classify(const Tensor& f) override { return last_linear_->forward(dropout_->forward(f)); }
  Tensor features(const Tensor& x) override;  // pooled 1536-d
  int64_t feature_dim() const override { return 1536; }
  bool has_aux_classifier() const override { return aux_ != nullptr; }
  // timm's files have no auxiliary classifier: a model with one keeps its own initialisation
  // of it, and one without it ignores a file's (a checkpoint trained with it).
  std::vector<std::string> classifier_prefixes() const override { return {"last_linear.", "AuxLogits.fc."}; }
  std::vector<std::string> optional_prefixes() const override { return {"AuxLogits."}; }
  std::string type_name() const override { return "InceptionV4"; }

 private:
  std::vector<std::shared_ptr<Module>> features_;  // features.0 .. features.21
  std::shared_ptr<Module> aux_;                    // on Mixed_6h, features.17 (TF-slim's AuxLogits), or none
  std::shared_ptr<Dropout> dropout_;
  std::shared_ptr<Linear> last_linear_;
};

}  // namespace nn
}  // namespace fgvc
