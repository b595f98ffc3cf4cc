// fgvc-subset: the more balanced subset for the second, fine-tuning stage of long-tailed
// training: at most N images of each class (all of a class with fewer), chosen with a seed.
//   fgvc-subset --data train/ --max-per-class 30 --out subset.txt [--seed 0]
#include <cstdio>
#include <filesystem>

#include "apps/app.h"
#include "data/dataset.h"
#include "data/decode.h"
#include "data/subset.h"
#include "tensor/warning.h"

int main(int argc, char** argv) {
  std::string data, out;
  int64_t max_per_class = 0, threshold = 100;
  uint64_t seed = 0;
  return fgvc::app::run(
      "fgvc-subset", "Write a class-balanced subset (at most N images per class) as a list file", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--data", data, "training set: ImageFolder, .txt list or .json (COCO)")->required()->check(fgvc::app::NonEmptyPath);
        cli.add_option("--max-per-class", max_per_class, "images kept per class at most")
            ->required()
            ->check(fgvc::app::Count);
        // A .txt list, the one kind of list every binary reads back (its class names go beside it,
        // in NAME.classes.txt).
        cli.add_option("--out", out, "list file to write, NAME.txt (paths relative to it; names in NAME.classes.txt)")
            ->required()
            ->check(CLI::Validator(
                [](std::string& path) -> std::string {
                  if (path.size() < 5 || path.compare(path.size() - 4, 4, ".txt") != 0)
                    return "a list file ends in .txt, got '" + path + "'";
                  if (std::filesystem::is_directory(path)) return "'" + path + "' is a folder; name a .txt file";
                  return std::string();
                },
                "FILE.txt"));
        cli.add_option("--seed", seed, "random seed (default 0)")->check(fgvc::app::Seed);
        cli.add_option("--head-threshold", threshold, "head classes have at least this many images (default 100)")->check(fgvc::app::Count);
      },
      [&](const fgvc::app::Common& common) {
        using namespace fgvc::data;
        (void)common.resolved_device(/*make_current=*/false);  // validates --device, as every binary does (nothing here runs on it)
        const Dataset full = fgvc::prefix_errors("--data", [&] { return load_dataset(data); });
        // A drawn file that is empty, missing or not an image by its first bytes is passed over,
        // named, and another of its class drawn: stage 2 gets N images it can read where the
        // class has them. (Only the first bytes are read: a file corrupt further in is found
        // when the trainer decodes it, skipped and counted there.)
        int64_t passed_over = 0;
        const auto usable = [&](const Sample& s) {
          const std::string why = read_image_head(s.path).problem();
          if (why.empty()) return true;
          fgvc::warn("%s %s: passed over, another image of class '%s' drawn", s.path.c_str(), why.c_str(),
                     full.classes[static_cast<size_t>(s.label)].c_str());
          ++passed_over;
          return false;
        };
        const Dataset sub = balanced_subset(full, max_per_class, seed, usable);
        fgvc::app::prepare_output_file("--out", out, fgvc::app::data_inputs("--data", data));
        write_list_file(out, sub);
        const LongTailStats before = long_tail_stats(full, threshold), after = long_tail_stats(sub, threshold);
        // Head and tail are the full set's (a class is head by its own training images); the
        // subset keeps what it keeps of each.
        const std::vector<bool> head = head_classes(before.counts, threshold);
        int64_t head_kept = 0, tail_kept = 0;
        for (size_t k = 0; k < head.size(); ++k) (head[k] ? head_kept : tail_kept) += after.counts[k];
        if (!common.json) {
          std::printf("%-8s %8s %8s %8s %10s %12s %12s\n", "", "images", "largest", "smallest", "imbalance",
                      "head images", "tail images");
          std::printf("%-8s %8zu %8lld %8lld %10.1f %12lld %12lld\n", "full", full.samples.size(),
                      (long long)before.largest, (long long)before.smallest, before.imbalance,
                      (long long)before.head_images, (long long)before.tail_images);
          std::printf("%-8s %8zu %8lld %8lld %10.1f %12lld %12lld\n", "subset", sub.samples.size(),
                      (long long)after.largest, (long long)after.smallest, after.imbalance, (long long)head_kept,
                      (long long)tail_kept);
          std::printf("wrote %s (%zu classes: %lld head, with at least %lld images, and %lld tail)\n", out.c_str(),
                      full.classes.size(), (long long)before.head_classes, (long long)threshold,
                      (long long)before.tail_classes);
          if (passed_over) std::printf("%lld unreadable file(s) passed over\n", (long long)passed_over);
        }
        return nlohmann::json{{"images", sub.samples.size()}, {"images_full", full.samples.size()},
                              {"classes", full.classes.size()}, {"max_per_class", max_per_class},
                              {"imbalance_full", before.imbalance}, {"imbalance", after.imbalance},
                              {"counts", after.counts}, {"out", out}, {"passed_over", passed_over},
                              {"head_threshold", threshold}, {"head_classes", before.head_classes},
                              {"tail_classes", before.tail_classes}, {"head_images_full", before.head_images},
                              {"tail_images_full", before.tail_images}, {"head_images", head_kept},
                              {"tail_images", tail_kept}};
      });
}
