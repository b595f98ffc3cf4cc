// Inception-ResNet-v2 (Szegedy et al. 2017) as timm builds it (conv2d_1a ... conv2d_7b,
// repeat / repeat_1 / repeat_2 of Block35 / Block17 / Block8, classif), with timm's names.
// A residual Inception block concatenates its branches, projects them back with a 1x1
// convolution (with bias), scales the result (0.17, 0.10, 0.20) and adds it to its input.
//
// inception_resnet_v2_se (our naming): a Squeeze-and-Excitation block (reduction 16) after
// every Inception module, as Hu et al. place them: on each residual block's branch after the
// scaling and before the addition, named `se` inside its block (repeat.0.se.fc1.weight, ...),
// and after each module without a residual (mixed_5b_se, mixed_6a_se, mixed_7a_se, as
// inception_v3_se's Mixed blocks). 65,092,718 parameters (1000 classes).
//
// As TF-slim builds it for training: dropout 0.2 before the classifier and, on request
// (fgvc-train with --aux-weight > 0), an auxiliary classifier on the 17 x 17 grid (AuxLogits.*,
// not in timm's model or files: 3,367,656 more parameters at 1000 classes).
#pragma once
#include "nn/models/inception_v3.h"
#include "nn/models/resnet.h"

namespace fgvc {
namespace nn {

class ResidualInceptionBlock : public InceptionBlock {
 public:
  ResidualInceptionBlock(std::string type, std::vector<Branch> branches, int64_t concat_channels, int64_t channels,
                         double scale, bool relu, bool se);
  Tensor forward_impl(const Tensor& x) override;
  double scale() const { return scale_; }  // of the branch, before the add
  bool has_relu() const { return relu_; }  // after the add

 private:
  std::shared_ptr<Conv2d> conv2d_;
  std::shared_ptr<Module> se_;
  double scale_;
  bool relu_;
};

class InceptionResNetV2 : public Classifier {
 public:
  explicit InceptionResNetV2(int64_t num_classes, bool se = false, bool aux_classifier = false);
  Tensor forward_impl(const Tensor& x) override { return classify(features(x)); }
  Tensor classify(const Tensor& f) override { return classif_->forward(dropout_->forward(f)); }
  Tensor features(const Tensor& x) override;  // pooled 1536-d
  int64_t feature_dim() const override { return 1536; }
  bool has_aux_classifier() const override { return aux_ != nullptr; }
  // timm's files have no auxiliary classifier: a model with one keeps its own initialisation
  // of it, and one without it ignores a file's (a checkpoint trained with it).
  std::vector<std::string> classifier_prefixes() const override { return {"classif.", "AuxLogits.fc."}; }
  std::vector<std::string> optional_prefixes() const override { return {"AuxLogits."}; }
  std::string type_name() const override { return "InceptionResNetV2"; }

 private:
  std::vector<std::shared_ptr<Module>> body_;
  std::shared_ptr<Module> aux_;  // on the 17 x 17 grid after repeat_1 (TF-slim's PreAuxLogits), or none
  size_t aux_after_ = 0;         // repeat_1's place in body_
  std::shared_ptr<Dropout> dropout_;
  std::shared_ptr<Linear> classif_;
};

}  // namespace nn
}  // namespace fgvc
