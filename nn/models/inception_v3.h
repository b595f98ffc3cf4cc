// Inception-v3 (Szegedy et al. 2016) block by block as torchvision builds it, with its
// parameter names (Conv2d_1a_3x3.conv.weight, Mixed_5b.branch1x1.bn.running_mean, ...), so
// torchvision/timm weights load by name. Batch norm eps 0.001 as in TF-slim.
//
// inception_v3_se (the paper's released code; our naming): a Squeeze-and-Excitation block
// (reduction 16) after each of the 11 Mixed blocks, named Mixed_5b_se, ..., Mixed_7c_se
// (Mixed_5b_se.fc1.weight, ...). 28,822,884 parameters with the aux head (1000 classes).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "nn/models/registry.h"

namespace fgvc {
namespace nn {

// Convolution without bias, batch norm, ReLU: torchvision's BasicConv2d.
class BasicConv2d : public Module {
 public:
  BasicConv2d(int64_t in, int64_t out, int kernel_h, int kernel_w, int stride, int pad_h, int pad_w);
  BasicConv2d(int64_t in, int64_t out, int kernel, int stride = 1, int padding = 0)
      : BasicConv2d(in, out, kernel, kernel, stride, padding, padding) {}
  Tensor forward_impl(const Tensor& x) override { return relu(bn_->forward(conv_->forward(x))); }
  std::string type_name() const override { return "BasicConv2d"; }

 private:
  std::shared_ptr<Conv2d> conv_;
  std::shared_ptr<BatchNorm2d> bn_;
};

// A Mixed block: named branches (each a chain of modules, optionally after a pooling step)
// whose outputs are concatenated along channels. Branches that split in two (InceptionE's
// 3x3 -> 1x3 and 3x1) are expressed with a `fork` of two final convolutions.
class InceptionBlock : public Module {
 public:
  struct Branch {
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> chain;  // run in order
    std::shared_ptr<Module> pool;                                        // run first (no parameters)
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> fork;   // applied to the chain's output, concatenated
    // The pool's name among the block's children (per-layer tables; no state_dict entries).
    // By default the reference's: timm's Sequential slot 0 before a chain starting at "x.1",
    // timm's "branchN" for a pool alone as branch N, else "pool".
    std::string pool_name = {};
  };
  InceptionBlock(std::string type, std::vector<Branch> branches);
  Tensor forward_impl(const Tensor& x) override { return concat_branches(x); }
  std::string type_name() const override { return type_; }

 protected:
  Tensor concat_branches(const Tensor& x);

 private:
  static std::string pool_name(const Branch& b, size_t index);
  std::string type_;
  std::vector<Branch> branches_;
};

// BasicConv2d factories shared by the Inception models: square kernels, and the kh x kw ones
// (1x7, 7x1, 1x3, 3x1) with stride 1 and padding (ph, pw).
std::shared_ptr<Module> basic_conv(int64_t in, int64_t out, int kernel, int stride = 1, int padding = 0);
std::shared_ptr<Module> basic_conv_hw(int64_t in, int64_t out, int kh, int kw, int ph, int pw);
// The 3x3 stride-2 max pool (no padding) of every Inception reduction.
std::shared_ptr<Module> max_pool_3x3_s2();

// The five kinds of Mixed block (torchvision's InceptionA..E), for the model and for tests.
std::shared_ptr<InceptionBlock> inception_a(int64_t in, int64_t pool_features);
std::shared_ptr<InceptionBlock> inception_b(int64_t in);
std::shared_ptr<InceptionBlock> inception_c(int64_t in, int64_t channels_7x7);
std::shared_ptr<InceptionBlock> inception_d(int64_t in);
std::shared_ptr<InceptionBlock> inception_e(int64_t in);

// The auxiliary classifier on a 17 x 17 grid of `in` channels (torchvision's InceptionAux,
// TF-slim's AuxLogits): 5x5/3 average pool, 1x1 convolution to 128, 5x5 convolution to 768,
// global average, a K-way layer. Inception-v4 and Inception-ResNet-v2 use it too.
std::shared_ptr<Module> inception_aux(int64_t in, int64_t num_classes);

// TF-slim's dropout before the Inception models' classifier (dropout_keep_prob 0.8).
constexpr double kInceptionDropout = 0.2;

class InceptionV3 : public Classifier {
 public:
  InceptionV3(int64_t num_classes, bool aux_logits = true, bool se = false);
  Tensor forward_impl(const Tensor& x) override { return classify(features(x)); }
  Tensor classify(const Tensor& f) override { return fc_->forward(dropout_->forward(f)); }
  Tensor features(const Tensor& x) override;  // pooled 2048-d
  int64_t feature_dim() const override { return 2048; }
  bool has_aux_classifier() const override { return aux_ != nullptr; }
  std::string type_name() const override { return "InceptionV3"; }
  // The auxiliary classifier has its own K-way layer; torchvision's files hold it, timm's not.
  std::vector<std::string> classifier_prefixes() const override { return {"fc.", "AuxLogits.fc."}; }
  std::vector<std::string> optional_prefixes() const override { return {"AuxLogits."}; }

 private:
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> stem_, mixed_;
  std::vector<std::shared_ptr<Module>> se_;  // one per Mixed block, or none
  std::shared_ptr<Module> aux_;
  std::shared_ptr<Dropout> dropout_;
  std::shared_ptr<Linear> fc_;
};

}  // namespace nn
}  // namespace fgvc
