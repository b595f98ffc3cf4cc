// Class-mean features: the mean penultimate-layer feature of each class's images and the
// class's image count, the domain that EMD domain similarity compares (paper section 4).
// fgvc-extract and the demo use it.
#pragma once
#include "data/loader.h"
#include "emd/domain.h"
#include "nn/models/registry.h"

namespace fgvc {
namespace train {

// Runs the model in evaluation mode over one epoch of `loader` (an evaluation-mode loader) on
// `device`; sums in double. Classes without images get a zero mean and a zero count.
emd::Domain class_mean_features(nn::Classifier& model, data::Loader& loader, Device device);

}  // namespace train
}  // namespace fgvc
