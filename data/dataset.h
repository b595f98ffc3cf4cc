// Datasets as (path, label) pairs with class names (SPEC.md section 5):
//  - ImageFolder: a folder with one sub-folder per class (sorted by name: label order);
//  - list file (.txt): lines "relative/path.jpg<TAB or spaces>label", paths relative to the file;
//  - iNaturalist-2017-style COCO JSON (.json): images, annotations, categories.
// Loading never decodes an image; a malformed layout or file is an Error naming file:line.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace fgvc {
namespace data {

struct Sample {
  std::string path;  // absolute or relative to the working directory
  int64_t label;
};

struct Dataset {
  std::vector<Sample> samples;
  std::vector<std::string> classes;  // name of each label
  std::string source;                // what it was loaded from

  std::vector<int64_t> counts() const;  // images per class
};

Dataset load_image_folder(const std::string& root);
Dataset load_list_file(const std::string& path);
Dataset load_coco_json(const std::string& path);
// A folder, a .txt list or a .json file, by what `path` is.
Dataset load_dataset(const std::string& path);

// Writes a list file whose paths are relative to its own folder (so load_list_file reads it
// back); atomic (temporary file + rename).
void write_list_file(const std::string& path, const Dataset& d);

}  // namespace data
}  // namespace fgvc
