// Models by the names of SPEC.md section 3 (--model).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace fgvc {
namespace nn {

// Throws an Error listing the known names for an unknown one.
std::shared_ptr<Module> create_model(const std::string& name, int64_t num_classes = 1000);
std::vector<std::string> model_names();

}  // namespace nn
}  // namespace fgvc
