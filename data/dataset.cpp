#include "data/dataset.h"

#include "data/decode.h"
#include "tensor/atomic_file.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tensor/error.h"
#include "tensor/warning.h"

namespace fgvc {
namespace data {

namespace fs = std::filesystem;

std::vector<int64_t> Dataset::counts() const {
  std::vector<int64_t> c(classes.size(), 0);
  for (const Sample& s : samples) c[static_cast<size_t>(s.label)]++;
  return c;
}

namespace {

// A class index; more is a mistyped column. 2^20 is 48 times ImageNet-21k's 21,841 classes, and
// a list's labels name as many classes ("0", "1", ...: 2^24 took seconds and a gigabyte).
constexpr int64_t kMaxListLabel = int64_t(1) << 20;

// Files an ImageFolder takes: those named as images, of the formats we decode and of those we
// do not (WebP, TIFF, ...: then skipped with a warning and counted like any unreadable file
// rather than left out unseen), and any other file whose first bytes are an image we decode
// (a JPEG without an extension). Other files (notes, .DS_Store) are passed over.
bool image_extension(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  for (const char* known : {".jpg", ".jpeg", ".jpe", ".jfif", ".pjpeg", ".pjp", ".png", ".bmp", ".dib", ".gif",
                            ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".jp2", ".ppm", ".pgm",
                            ".pnm", ".tga", ".psd"})
    if (e == known) return true;
  return false;
}

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

bool image_file(const fs::directory_entry& e) {
  if (image_extension(e.path())) return true;
  if (hidden(e.path())) return false;  // hidden files (.DS_Store) are never images here
  std::error_code ec;
  if (!e.is_regular_file(ec)) return false;
  return read_image_head(e.path().string()).is_image();
}

// A UTF-8 byte order mark at the start of a text file (Windows editors write one) is not
// part of its first line.
void strip_bom(std::string* line) {
  if (line->rfind("\xEF\xBB\xBF", 0) == 0) line->erase(0, 3);
}

// Class names are recorded in JSON (config.json, checkpoints, domain files), which holds UTF-8
// text only: a name in another encoding (a Latin-1 folder name) is refused when the data set is
// read, with its odd bytes shown as \xNN, rather than failing later without naming it.
bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b >> 6) != 0x2) return false;
      cp = cp << 6 | (b & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8 either.
    static const uint32_t kLeast[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kLeast[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return false;
    i += len;
  }
  return true;
}

void check_class_name(const std::string& name, const std::string& where) {
  // Names are written one per line (NAME.classes.txt) and as fields of tab-separated lines
  // (fgvc-select): refused here, when the data is read, not after an hour of extraction.
  FGVC_CHECK(name.find_first_of("\t\r\n") == std::string::npos, "dataset", where, ": class name '", name,
             "' holds a tab or a line break (rename it)");
  if (valid_utf8(name)) return;
  std::string shown;
  for (char ch : name) {
    const auto c = static_cast<unsigned char>(ch);
    char hex[5];
    std::snprintf(hex, sizeof hex, "\\x%02X", c);
    shown += c < 0x80 ? std::string(1, ch) : std::string(hex);
  }
  throw Error("dataset: " + where + ": class name '" + shown + "' is not UTF-8 text (rename it)");
}

}  // namespace

Dataset load_image_folder(const std::string& root) {
  std::error_code ec;
  FGVC_CHECK(fs::is_directory(root, ec), "dataset", root, ": not a folder");
  Dataset d;
  d.source = root;
  std::vector<fs::path> class_dirs;
  std::vector<std::string> loose;  // images beside the class folders: in no class
  for (const auto& e : fs::directory_iterator(root, ec)) {
    std::error_code status_ec;  // a link that loops is no class folder (nor an error)
    if (!e.is_directory(status_ec)) {
      if (image_extension(e.path())) loose.push_back(e.path().filename().string());
      continue;
    }
    // A hidden folder (.ipynb_checkpoints, .git) is no class: taken as one it would be class 0
    // and shift every label. Said, since torchvision's ImageFolder does take it.
    if (hidden(e.path())) {
      warn("%s: hidden folder '%s' is not a class, skipped", root.c_str(),
           e.path().filename().c_str());
      continue;
    }
    class_dirs.push_back(e.path());
  }
  FGVC_CHECK(!ec, "dataset", root, ": ", ec.message());
  std::sort(class_dirs.begin(), class_dirs.end());
  if (!loose.empty()) {  // said, not dropped unseen (SPEC.md section 5)
    std::sort(loose.begin(), loose.end());
    warn("%s: %zu image(s) beside the class folders belong to no class, skipped ('%s'%s)", root.c_str(), loose.size(),
         loose[0].c_str(), loose.size() > 1 ? ", ..." : "");
  }
  FGVC_CHECK(!class_dirs.empty(), "dataset", root,
             ": no class folders (an ImageFolder has one sub-folder of images per class)");
  for (const fs::path& dir : class_dirs) {
    std::vector<std::string> files;
    // Linked folders are followed, each real folder once: a link back up the tree (or two links
    // to one folder) is not listed again, so neither loops nor counts its images twice.
    std::set<fs::path> folders_listed{fs::canonical(dir, ec)};
    FGVC_CHECK(!ec, "dataset", dir.string(), ": ", ec.message());
    for (fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec), end;
         !ec && it != end; it.increment(ec)) {
      const fs::directory_entry& e = *it;
      std::error_code status_ec;
      if (e.is_directory(status_ec)) {
        if (hidden(e.path())) {  // a notebook's checkpoints would be every image again
          warn("%s: hidden folder skipped", e.path().c_str());
          it.disable_recursion_pending();
          continue;
        }
        std::error_code canonical_ec;
        const fs::path real = fs::canonical(e.path(), canonical_ec);
        if (!canonical_ec && !folders_listed.insert(real).second) {
          warn("%s: the folder %s, listed already (through a link), not listed again",
               e.path().c_str(), real.c_str());
          it.disable_recursion_pending();
        }
        continue;
      }
      // A link whose target is gone or loops is kept too: unreadable, so warned about and
      // counted when it is decoded.
      if ((e.is_regular_file(status_ec) || e.is_symlink(status_ec)) && image_file(e)) files.push_back(e.path().string());
    }
    FGVC_CHECK(!ec, "dataset", dir.string(), ": ", ec.message());
    std::sort(files.begin(), files.end());
    const int64_t label = static_cast<int64_t>(d.classes.size());
    check_class_name(dir.filename().string(), root);
    // Kept as a class (its index stays the folder's place), but said: a model trained on it has
    // an output that never sees an example (torchvision's ImageFolder refuses such a folder).
    if (files.empty())
      warn("%s: class folder '%s' has no images", root.c_str(),
           dir.filename().string().c_str());
    d.classes.push_back(dir.filename().string());
    for (std::string& f : files) d.samples.push_back({std::move(f), label});
  }
  FGVC_CHECK(!d.samples.empty(), "dataset", root, ": no images (JPEG, PNG, BMP, GIF, PGM/PPM) in its ",
             class_dirs.size(), " class folders");
  return d;
}

Dataset load_list_file(const std::string& path) {
  std::ifstream in(path);
  FGVC_CHECK(in, "dataset", path, ": cannot open");
  const fs::path base = fs::path(path).parent_path();
  Dataset d;
  d.source = path;
  std::string line;
  int64_t max_label = -1;
  int64_t commented_entries = 0;  // '#' lines shaped as 'path label' whose path does not exist
  int first_commented = 0;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line_no == 1) strip_bom(&line);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t begin = line.find_first_not_of(" \t");
    if (begin == std::string::npos) continue;
    // The label is the last field; the path is everything before it (paths may hold spaces;
    // blanks around it are not part of it).
    const size_t end = line.find_last_not_of(" \t");
    const size_t sep = line.find_last_of(" \t", end);
    const std::string label_text = sep == std::string::npos ? std::string() : line.substr(sep + 1, end - sep);
    char* rest = nullptr;
    const long long label = label_text.empty() ? -1 : std::strtoll(label_text.c_str(), &rest, 10);
    // All of it a number: strtoll would stop at a NUL byte inside it as at the end.
    const bool has_label = !label_text.empty() && rest == label_text.c_str() + label_text.size() && label >= 0;
    // A line starting with '#' is a comment, unless it is 'path label' naming a file that
    // exists (a name starting with '#', which must not be dropped unseen).
    if (line[begin] == '#') {
      if (!has_label || sep <= begin) continue;
      const fs::path p = line.substr(begin, line.find_last_not_of(" \t", sep) + 1 - begin);
      std::error_code ec;
      if (!fs::exists(p.is_absolute() ? p : base / p, ec)) {
        // A comment, or an entry whose file is missing ("#0001.jpg 3"; "# version 2" is a
        // comment): said once, below, not dropped unseen.
        const bool entry_like = begin + 1 < line.size() && line[begin + 1] != ' ' && line[begin + 1] != '\t';
        if (entry_like && commented_entries++ == 0) first_commented = line_no;
        continue;
      }
    }
    FGVC_CHECK(sep != std::string::npos && sep > begin, "dataset", path, ":", line_no,
               ": expected 'path label', got '", line, "'");
    FGVC_CHECK(has_label, "dataset", path, ":", line_no, ": label '", label_text, "' is not a non-negative integer");
    const size_t path_end = line.find_last_not_of(" \t", sep);
    FGVC_CHECK(label < kMaxListLabel, "dataset", path, ":", line_no, ": label ", label_text,
               " is not below ", kMaxListLabel, " (a label is a class index)");
    const fs::path p = line.substr(begin, path_end + 1 - begin);
    d.samples.push_back({(p.is_absolute() ? p : base / p).string(), label});
    max_label = std::max<int64_t>(max_label, label);
  }
  if (commented_entries > 0)
    warn("%s: %lld line(s) starting with '#' read as comments, though shaped as 'path label' (line %d first): their "
         "files do not exist",
         path.c_str(), static_cast<long long>(commented_entries), first_commented);
  FGVC_CHECK(!d.samples.empty(), "dataset", path, ": no samples");
  const std::string names_path = list_classes_path(path);
  std::error_code ec;
  if (!fs::exists(names_path, ec)) {
    for (int64_t c = 0; c <= max_label; ++c) d.classes.push_back(std::to_string(c));
    d.numbered = true;
    return d;
  }
  std::ifstream names(names_path);
  FGVC_CHECK(names, "dataset", names_path, ": cannot open");
  std::set<std::string> seen;
  std::vector<std::string> lines;
  for (std::string name; std::getline(names, name);) {
    if (lines.empty()) strip_bom(&name);
    if (!name.empty() && name.back() == '\r') name.pop_back();
    lines.push_back(name);
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();  // blank lines at the end
  for (const std::string& name : lines) {
    FGVC_CHECK(!name.empty(), "dataset", names_path, ":", d.classes.size() + 1, ": empty class name");
    FGVC_CHECK(seen.insert(name).second, "dataset", names_path, ": class '", name, "' named twice");
    check_class_name(name, names_path);
    d.classes.push_back(name);
  }
  FGVC_CHECK(max_label < static_cast<int64_t>(d.classes.size()), "dataset", path, ": label ", max_label, " but ",
             names_path, " names ", d.classes.size(), " classes");
  return d;
}

std::string list_classes_path(const std::string& list_path) {
  fs::path p(list_path);
  return p.replace_extension(".classes.txt").string();
}

Dataset load_coco_json(const std::string& path) {
  std::ifstream in(path);
  FGVC_CHECK(in, "dataset", path, ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error("dataset: " + path + ": not valid JSON: " + e.what());
  }
  for (const char* key : {"images", "annotations", "categories"})
    FGVC_CHECK(j.is_object() && j.contains(key) && j[key].is_array(), "dataset", path, ": no '", key,
               "' list (expected iNaturalist/COCO JSON with images, annotations, categories)");
  const fs::path base = fs::path(path).parent_path();
  Dataset d;
  d.source = path;
  // An id must be a JSON integer that fits int64: 2.5 or 1e30 is an error, not a truncation
  // (a float beyond int64's range converted to it is undefined; found by fuzz_dataset).
  const auto id_of = [&](const nlohmann::json& record, const char* key) {
    const nlohmann::json& v = record.at(key);
    constexpr uint64_t kMaxId = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    FGVC_CHECK(v.is_number_integer() && !(v.is_number_unsigned() && v.get<uint64_t>() > kMaxId), "dataset", path,
               ": '", key, "' must be an integer id, got ", v.dump());
    return v.get<int64_t>();
  };
  // Labels follow the categories' ids in increasing order.
  std::vector<std::pair<int64_t, std::string>> cats;
  try {
    for (const auto& c : j["categories"]) cats.emplace_back(id_of(c, "id"), c.at("name").get<std::string>());
    std::sort(cats.begin(), cats.end());
    std::map<int64_t, int64_t> label_of;
    std::set<std::string> names;
    for (const auto& [id, name] : cats) {
      FGVC_CHECK(!label_of.count(id), "dataset", path, ": category id ", id, " appears twice");
      FGVC_CHECK(!name.empty(), "dataset", path, ": category id ", id, " has an empty name");
      FGVC_CHECK(names.insert(name).second, "dataset", path, ": two categories are named '", name, "'");
      check_class_name(name, path);
      label_of[id] = static_cast<int64_t>(d.classes.size());
      d.classes.push_back(name);
    }
    // One sample per image, in the images' order: an image's label is its annotations'
    // category (several annotations must agree); images without one are left out, and said so.
    std::map<int64_t, int64_t> label_of_image;
    for (const auto& a : j["annotations"]) {
      const int64_t image = id_of(a, "image_id"), cat = id_of(a, "category_id");
      const auto l = label_of.find(cat);
      FGVC_CHECK(l != label_of.end(), "dataset", path, ": annotation with unknown category id ", cat);
      const auto [it, fresh] = label_of_image.emplace(image, l->second);
      FGVC_CHECK(fresh || it->second == l->second, "dataset", path, ": image id ", image,
                 " has annotations of two categories (", d.classes[it->second], ", ", d.classes[l->second], ")");
    }
    std::set<int64_t> images;
    int64_t unannotated = 0;
    for (const auto& im : j["images"]) {
      const int64_t id = id_of(im, "id");
      FGVC_CHECK(images.insert(id).second, "dataset", path, ": image id ", id, " appears twice");
      const auto l = label_of_image.find(id);
      if (l == label_of_image.end()) {
        ++unannotated;
        continue;
      }
      const fs::path p = im.at("file_name").get<std::string>();
      d.samples.push_back({(p.is_absolute() ? p : base / p).string(), l->second});
    }
    for (const auto& [image, label] : label_of_image)
      FGVC_CHECK(images.count(image), "dataset", path, ": annotation for unknown image id ", image);
    if (unannotated)
      warn("%s: %lld image(s) without an annotation left out", path.c_str(),
           static_cast<long long>(unannotated));
  } catch (const nlohmann::json::exception& e) {
    throw Error("dataset: " + path + ": missing or mistyped field: " + e.what());
  }
  FGVC_CHECK(!d.samples.empty(), "dataset", path, ": no annotated images");
  return d;
}

Dataset load_dataset(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return load_image_folder(path);
  const std::string ext = fs::path(path).extension().string();
  if (ext == ".txt") return load_list_file(path);
  if (ext == ".json") return load_coco_json(path);
  FGVC_CHECK(fs::exists(path, ec), "dataset", path, ": no such file or folder");
  throw Error("dataset: " + path + ": expected a folder (ImageFolder), a .txt list or a .json (COCO) file");
}

std::string output_folder_among_images(const std::string& flag, const std::string& folder,
                                       const std::string& data_flag, const Dataset& data) {
  std::error_code ec;
  const auto is_under = [](const fs::path& inner, const fs::path& outer) {  // both absolute
    std::string i = inner.lexically_normal().string(), o = outer.lexically_normal().string();
    while (o.size() > 1 && o.back() == '/') o.pop_back();
    while (i.size() > 1 && i.back() == '/') i.pop_back();
    return i == o || i.rfind(o == "/" ? o : o + "/", 0) == 0;
  };
  if (fs::is_directory(data.source, ec)) {
    // By real paths (links resolved), the run folder as far as it exists.
    const fs::path root = fs::weakly_canonical(data.source, ec), out = fs::weakly_canonical(folder, ec);
    if (!ec && is_under(out, root))
      return flag + " " + folder + (is_under(root, out) ? " is " : " is inside ") + data_flag + " " + data.source +
             ", an image folder: the run's plots would join its images; put the run elsewhere";
    return "";
  }
  const fs::file_status status = fs::status(folder, ec);
  if (!fs::is_directory(status)) return "";  // a folder not yet made holds no images
  // A folder of the list's is identified once (a stat of each distinct folder, not of each image).
  std::set<std::string> seen;
  for (const Sample& s : data.samples) {
    const std::string parent = fs::path(s.path).parent_path().string();
    if (!seen.insert(parent).second) continue;
    if (fs::equivalent(parent.empty() ? "." : parent, folder, ec))
      return flag + " " + folder + " holds images of " + data_flag + " " + data.source + " (" + s.path +
             "): the run's files could replace them; put the run elsewhere";
  }
  return "";
}

std::string class_difference(const std::vector<std::string>& expected, const std::string& expected_name,
                             const std::vector<std::string>& found, const std::string& found_name) {
  const std::set<std::string> e(expected.begin(), expected.end()), f(found.begin(), found.end());
  for (const std::string& c : found)
    if (!e.count(c))
      return "class '" + c + "' of " + found_name + " is not one of the " + std::to_string(expected.size()) +
             " of " + expected_name;
  for (const std::string& c : expected)
    if (!f.count(c)) return "class '" + c + "' of " + expected_name + " is not in " + found_name;
  for (size_t i = 0; i < std::min(expected.size(), found.size()); ++i)
    if (expected[i] != found[i])
      return "the same classes in another order: output " + std::to_string(i) + " is '" + expected[i] + "' in " +
             expected_name + ", '" + found[i] + "' in " + found_name;
  if (expected.size() != found.size())  // the same names, one of them repeated
    return std::to_string(found.size()) + " classes in " + found_name + ", " + std::to_string(expected.size()) +
           " in " + expected_name;
  return "";
}

Dataset align_classes(Dataset d, const std::vector<std::string>& classes, const std::string& what,
                      const std::string& against) {
  if (d.numbered) {
    for (const Sample& s : d.samples)
      FGVC_CHECK(s.label < static_cast<int64_t>(classes.size()), what, "label ", s.label, " of ", s.path,
                 " is not below the ", classes.size(), " classes of ", against);
  } else {
    std::map<std::string, int64_t> index;
    for (size_t c = 0; c < classes.size(); ++c) index[classes[c]] = static_cast<int64_t>(c);
    std::vector<int64_t> to(d.classes.size(), -1);
    for (size_t c = 0; c < d.classes.size(); ++c) {
      const auto it = index.find(d.classes[c]);
      FGVC_CHECK(it != index.end(), what, "class '", d.classes[c], "' is not one of the ", classes.size(),
                 " classes of ", against);
      to[c] = it->second;
    }
    for (Sample& s : d.samples) s.label = to[static_cast<size_t>(s.label)];
  }
  d.classes = classes;
  d.numbered = false;
  return d;
}

void write_list_file(const std::string& path, const Dataset& d) {
  // Two files cannot be replaced at once: a failure between the two writes leaves the new
  // names beside the old list (each file itself is whole).
  const std::string names_path = list_classes_path(path);
  if (d.numbered) {  // the labels are all there is; names left from an earlier list must not apply
    std::error_code ec;
    fs::remove(names_path, ec);
  } else {
    std::ostringstream names;
    std::set<std::string> seen;
    for (const std::string& c : d.classes) {
      FGVC_CHECK(!c.empty() && c.find_first_of("\r\n") == std::string::npos, "dataset", names_path, ": class name '",
                 c, "' cannot be written one per line");
      FGVC_CHECK(seen.insert(c).second, "dataset", names_path, ": class '", c, "' named twice");
      names << c << '\n';
    }
    write_file_atomic(names_path, names.str());
  }
  // Both sides normalised: lexically_relative reads "a/../b" as three names, not as "b".
  const fs::path base = fs::absolute(fs::path(path)).lexically_normal().parent_path();
  std::ostringstream out;
  for (const Sample& s : d.samples) {
    std::string relative = fs::absolute(s.path).lexically_normal().lexically_relative(base).string();
    FGVC_CHECK(relative.find_first_of("\r\n") == std::string::npos, "dataset", path, ": the file name '", relative,
               "' holds a line break and cannot be a line of a list file");
    // The reader trims blanks around a path: one that starts with a blank is written as
    // "./ name", and one that ends with a blank cannot be written at all.
    FGVC_CHECK(relative.empty() || (relative.back() != ' ' && relative.back() != '\t'), "dataset", path,
               ": the file name '", relative, "' ends with a blank and cannot be a field of a list file");
    if (!relative.empty() && (relative.front() == ' ' || relative.front() == '\t')) relative = "./" + relative;
    out << relative << '\t' << s.label << '\n';
  }
  write_file_atomic(path, out.str());
}

}  // namespace data
}  // namespace fgvc
