// Reading and writing .safetensors files (the huggingface format: an 8-byte little-endian
// header length, a JSON header mapping names to {dtype, shape, data_offsets}, raw data).
// Weights, checkpoints and domain files all use it. Reading validates everything (offsets
// in range and not overlapping, known dtypes, byte sizes matching shapes) and throws an
// fgvc::Error naming the file and the problem; it never crashes on a malformed file.
// Writing is atomic: a temporary file in the same folder, fsync, rename.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace fgvc {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;            // CPU, contiguous
  std::map<std::string, std::string> metadata;      // the "__metadata__" entry
  // Tensors of a standard safetensors type that fgvc does not hold (BOOL, I8, I16, U16, I32,
  // U32, U64, F8_E4M3, F8_E5M2): name -> type. They are checked like the others but not
  // read, so that a file carrying one such extra tensor still loads; whoever needs one names
  // it with its type (a weights file holding one is refused: nn::read_model_weights).
  std::map<std::string, std::string> unsupported;
};

// One tensor as the header describes it.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;          // the file's name for it: "F32", "I64", "I32", ...
  Shape shape;
  uint64_t begin = 0, stop = 0;  // its bytes within the data section
};

// The header alone, validated exactly as read_safetensors validates it, without reading
// any tensor's bytes: for a checkpoint's recorded classes or the names it holds.
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;            // in file order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;                          // the data section's first byte in the file
  uint64_t file_size = 0;
  bool has(const std::string& name) const;
};
SafetensorsHeader read_safetensors_header(const std::string& path);

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
