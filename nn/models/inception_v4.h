// Inception-v4 (Szegedy et al. 2017) block by block as timm builds it (features.0 ..
// features.21, then last_linear), with timm's parameter names so its weights load by name.
// Convolutions are BasicConv2d (conv + batch norm eps 0.001 + ReLU; timm's ConvNormAct with
// the same conv/bn names); average pools leave the padding out of the divisor.
#pragma once
#include "nn/models/inception_v3.h"

namespace fgvc {
namespace nn {

class InceptionV4 : public Classifier {
 public:
  explicit InceptionV4(int64_t num_classes);
  Tensor forward_impl(const Tensor& x) override { return classify(features(x)); }
  Tensor classify(const Tensor& f) override { return last_linear_->forward(f); }
  Tensor features(const Tensor& x) override;  // pooled 1536-d
  int64_t feature_dim() const override { return 1536; }
  std::vector<std::string> classifier_prefixes() const override { return {"last_linear."}; }
  std::string type_name() const override { return "InceptionV4"; }

 private:
  std::shared_ptr<Sequential> features_;
  std::shared_ptr<Linear> last_linear_;
};

}  // namespace nn
}  // namespace fgvc
