// Models by the names of SPEC.md section 3 (--model).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"
#include "tensor/safetensors.h"

namespace fgvc {
namespace nn {

// An image classifier: features (the pooled penultimate layer, what domain similarity and
// fgvc-infer's `features` use), then the classifier layer: forward(x) is classify(features(x)),
// so a caller that needs both runs the network once.
class Classifier : public Module {
 public:
  virtual Tensor features(const Tensor& x) = 0;
  // The logits of features [N, feature_dim()] (the Inception models' dropout first, in training).
  virtual Tensor classify(const Tensor& features) = 0;
  // The Inception models' auxiliary classifier (TF-slim's AuxLogits, on the 17 x 17 grid),
  // which fgvc-train weighs into the loss (--aux-weight, 0.4): its logits from the last forward
  // in training mode, undefined otherwise or without one.
  virtual bool has_aux_classifier() const { return false; }
  const Tensor& aux_logits() const { return aux_out_; }
  // Off: training skips the auxiliary classifier (fgvc-train --aux-weight 0), which saves its
  // compute and allows inputs below the 299 it needs. Its parameters stay, gradient-free.
  void set_aux_enabled(bool on) { aux_enabled_ = on; }
  virtual int64_t feature_dim() const = 0;
  // Whose weights --reset-classifier drops: the classifier, and any auxiliary one.
  virtual std::vector<std::string> classifier_prefixes() const { return {"fc."}; }
  // Weights a file may leave out altogether (an auxiliary head that timm drops): the model then
  // keeps its own initialisation of them.
  virtual std::vector<std::string> optional_prefixes() const { return {}; }

 protected:
  // For features(): runs the auxiliary classifier on its grid where training wants it.
  void run_aux(const std::shared_ptr<Module>& aux, const Tensor& grid) {
    aux_out_ = Tensor();
    if (!aux || !aux_enabled_ || !is_training()) return;
    // inception_aux pools 5x5/3, then convolves 5x5 unpadded: 17 x 17 is the least it takes
    // (299 px for Inception-v3), else the pooling's own error would not say what to do.
    FGVC_CHECK(grid.size(2) >= 17 && grid.size(3) >= 17, type_name(),
               "the auxiliary classifier needs a 17 x 17 grid (a 299 px input), this input gives ", grid.size(2), " x ",
               grid.size(3), ": train at 299 px or more, or without it (set_aux_enabled(false))");
    aux_out_ = aux->forward(grid);
  }
  Tensor aux_out_;
  bool aux_enabled_ = true;
};

// fgvc-train checkpoints (train/checkpoint.h) are weights files too: the model's tensors under
// their own names, beside "ema.<name>" (the moving average) and "optim.<name>.<slot>", with
// metadata format = "fgvc-checkpoint".
constexpr const char* kCheckpointFormat = "fgvc-checkpoint";
constexpr const char* kEmaPrefix = "ema.";
constexpr const char* kOptimizerPrefix = "optim.";

// The model's weights in a weights file or a checkpoint. Of a checkpoint with a moving
// average, the averaged weights when prefer_ema (what evaluation and export use), else the
// trained ones; optimizer slots are left out. *used_ema says which it took.
std::map<std::string, Tensor> model_weights(const SafetensorsFile& file, bool prefer_ema = true,
                                            bool* used_ema = nullptr);
std::map<std::string, Tensor> read_model_weights(const std::string& path, bool prefer_ema = true,
                                                 bool* used_ema = nullptr);

// Loads weights by name (timm/torchvision names) from a safetensors file. A file without an
// optional head (an auxiliary classifier) leaves the model's own; a file with one that the
// model was built without has it ignored. With
// reset_classifier the file's classifiers (fc., last_linear., classif., head.fc.; and
// Inception-v3's AuxLogits.fc.) are left out and the model keeps its freshly initialised ones:
// fine-tuning to new classes. A file without Inception-v3's auxiliary head at all (timm's)
// leaves the model's own, and so does one without batch norm's num_batches_tracked counters.
// Strict: any other missing, unexpected, mis-shaped or mistyped (integers for a floating-point
// tensor) key is an error that lists them.
Module::LoadReport load_weights(Classifier& model, const std::string& path, bool reset_classifier = false,
                                bool strict = true);
// The same with weights already read (read_model_weights); errors do not name a file.
Module::LoadReport load_weights(Classifier& model, std::map<std::string, Tensor> weights, bool reset_classifier = false,
                                bool strict = true);

// Throws an Error listing the known names for an unknown one. aux_classifier: Inception-v4 and
// Inception-ResNet-v2 (and its SE variant) with TF-slim's auxiliary classifier, which timm's
// models, files and parameter counts leave out (fgvc-train asks for it when --aux-weight > 0);
// Inception-v3 always has its own (torchvision's), the other models none.
std::shared_ptr<Classifier> create_model(const std::string& name, int64_t num_classes = 1000,
                                         bool aux_classifier = false);
std::vector<std::string> model_names();
// The Inception family (inception_*): TF-slim preprocessing (pixels in [-1, 1]) and batch-norm
// decay 0.9997; ResNets use the ImageNet mean/std. Every network's default input is 299, as the
// paper trains them (the CIFAR ResNets, resnet20/32/56: 32).
bool is_inception(const std::string& model);
int default_input_size(const std::string& model);
// The smallest S x S input the model takes: the Inception family's stem and reductions need
// 75, as in torchvision (the inputs SPEC.md names start at 299); in training, their auxiliary
// classifier (5x5/3 pool then a 5x5 convolution on the 17 x 17 grid) needs 299. ResNets take
// any size.
// tests/test_nn.cpp checks each value against a forward at S and S - 1.
int min_input_size(const std::string& model, bool aux_classifier_in_training = false);
// The classifier's weight [K, D] in a weights file ("fc.weight", timm's "last_linear.weight",
// ...), for reading K from it; undefined when none is there.
Tensor classifier_weight(const std::map<std::string, Tensor>& weights);

}  // namespace nn
}  // namespace fgvc
