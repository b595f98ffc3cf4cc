// Reading and writing .safetensors files (the huggingface format: an 8-byte little-endian
// header length, a JSON header mapping names to {dtype, shape, data_offsets}, raw data).
// Weights, checkpoints and domain files all use it. Reading validates everything (offsets
// in range and not overlapping, known dtypes, byte sizes matching shapes) and throws an
// fgvc::Error naming the file and the problem; it never crashes on a malformed file.
// Writing is atomic: a temporary file in the same folder, fsync, rename.
#pragma once
#include <map>
#include <string>

#include "tensor/tensor.h"

namespace fgvc {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;            // CPU, contiguous
  std::map<std::string, std::string> metadata;      // the "__metadata__" entry
};

SafetensorsFile read_safetensors(const std::string& path);
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace fgvc
