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

// map = true: the file is mapped (copy on write) and its tensors view the mapping where
// their bytes are aligned for their dtype (others are copied out): no copy and no fresh
// pages for large read-only inputs such as domain files. Writing to such a tensor changes
// this process's copy only. The file must not be truncated while its tensors live
// (fgvc's writers replace files by renaming, which keeps the mapped one intact). Where the
// file cannot be mapped it is read as with map = false.
SafetensorsFile read_safetensors(const std::string& path, bool map = false);
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace fgvc
