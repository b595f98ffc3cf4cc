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
  bool numbered = false;             // a list file without class names: labels are indices, the names their numbers

  std::vector<int64_t> counts() const;  // images per class
};

Dataset load_image_folder(const std::string& root);
// A list file; its class names, where it has them, come from the file beside it
// (list_classes_path), so that a training set written as a list (fgvc-subset's) is matched to a
// validation folder by name, and keeps classes that lost all their images.
Dataset load_list_file(const std::string& path);
// The class names of a list file, one per line in label order: subset.txt -> subset.classes.txt.
std::string list_classes_path(const std::string& list_path);
Dataset load_coco_json(const std::string& path);
// A folder, a .txt list or a .json file, by what `path` is.
Dataset load_dataset(const std::string& path);

// The first way `found` differs from `expected` as class lists, for an error message: a class
// of `found` missing from `expected`, one of `expected` missing from `found`, or, with the
// same names, the first output they order differently; "" when the lists are equal. The
// names say where each list came from ("--data train/", "the checkpoint").
std::string class_difference(const std::vector<std::string>& expected, const std::string& expected_name,
                             const std::vector<std::string>& found, const std::string& found_name);

// `d` on the label set `classes` (a training set's): by name, so that a validation folder that
// lacks a class, or orders its classes otherwise, lines up; a list file's labels are indices
// already and must be below classes.size(). A class outside `classes` is an error naming
// `what` (e.g. "--val v/") and where `classes` came from (`against`: "--data train/").
// Afterwards d.classes == classes.
Dataset align_classes(Dataset d, const std::vector<std::string>& classes, const std::string& what,
                      const std::string& against);

// Why `folder`, an output folder (fgvc-train's run folder), may not be written where it is:
// inside an ImageFolder's root (its plots would become images of a class, or of a new class
// named after it, the next time the folder is read) or a folder that holds images of a list
// or COCO file itself (its files would replace theirs). "" where neither; `flag` and
// `data_flag` name the two in the answer.
std::string output_folder_among_images(const std::string& flag, const std::string& folder,
                                       const std::string& data_flag, const Dataset& data);

// Writes a list file whose paths are relative to its own folder (so load_list_file reads it
// back), and the class names beside it (none for a numbered dataset); atomic (temporary file
// + rename).
void write_list_file(const std::string& path, const Dataset& d);

}  // namespace data
}  // namespace fgvc
