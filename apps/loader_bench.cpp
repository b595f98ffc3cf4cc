// fgvc-loader-bench: input-pipeline throughput (read, decode, augment, batch), images/s,
// and the files skipped as unreadable. --save-grid writes one batch as a PNG grid.
//   fgvc-loader-bench --data photos/ --input-size 299 --mode train --workers 2 --images 2000
#include <stb/stb_image_write.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "apps/app.h"
#include "data/dataset.h"
#include "data/loader.h"

namespace {

// The first images of a batch in a grid of 8 columns, un-normalised to RGB.
void save_grid(const fgvc::data::Batch& batch, const fgvc::data::LoaderOptions& o, const std::string& path) {
  const int S = o.size, n = static_cast<int>(std::min<int64_t>(batch.images.size(0), 32));
  if (n == 0) throw fgvc::Error("--save-grid: the first batch has no images");
  const int cols = std::min(n, 8), rows = (n + cols - 1) / cols;
  std::vector<uint8_t> grid(static_cast<size_t>(rows) * S * cols * S * 3, 0);
  const std::vector<float> px = batch.images.to_vector<float>();
  static const float kMean[3] = {0.485f, 0.456f, 0.406f}, kStd[3] = {0.229f, 0.224f, 0.225f};
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < S; ++y)
        for (int x = 0; x < S; ++x) {
          float v = px[((static_cast<size_t>(i) * 3 + c) * S + y) * S + x];
          if (!o.uint8_output)
            v = o.normalization == fgvc::data::Normalization::Inception ? (v + 1.0f) * 127.5f
                                                                        : (v * kStd[c] + kMean[c]) * 255.0f;
          const size_t gy = static_cast<size_t>(i / cols) * S + y, gx = static_cast<size_t>(i % cols) * S + x;
          grid[(gy * cols * S + gx) * 3 + c] = static_cast<uint8_t>(std::clamp(v + 0.5f, 0.0f, 255.0f));
        }
  if (!stbi_write_png(path.c_str(), cols * S, rows * S, 3, grid.data(), cols * S * 3))
    throw fgvc::Error("--save-grid " + path + ": cannot write it");
}

}  // namespace

int main(int argc, char** argv) {
  std::string data, mode = "train", grid, normalization = "inception";
  int64_t images = 1000;
  fgvc::data::LoaderOptions o;
  o.warn = true;
  return fgvc::app::run(
      "fgvc-loader-bench", "Input pipeline throughput: decode + augment + batch", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--data", data, "ImageFolder, .txt list or .json (COCO)")->required()->check(fgvc::app::NonEmptyPath);
        cli.add_option("--input-size", o.size, "output size S (default 299)")->check(fgvc::app::InputSize);
        cli.add_option("--mode", mode, "train, eval or eval12 (default train)")
            ->check(CLI::IsMember({"train", "eval", "eval12"}));
        cli.add_option("--workers", o.workers, "worker threads (default 1)")->check(fgvc::app::Threads);
        cli.add_option("--images", images, "images to load, in whole batches: the last may go past it (default 1000; epochs repeat)")->check(fgvc::app::Count);
        cli.add_option("--batch-size", o.batch_size, "batch size (default 32)")->check(fgvc::app::BatchSize);
        cli.add_option("--normalization", normalization, "inception ([-1, 1]) or imagenet (mean/std)")
            ->check(CLI::IsMember({"inception", "imagenet"}));
        cli.add_flag("--no-color-distort", [&](int64_t) { o.augment.color_distort = false; }, "no colour distortion");
        cli.add_option_function<std::string>(
               "--crop",
               [&](const std::string& crop) {
                 o.augment.crop = fgvc::data::crop_style(crop);
                 o.augment.area_min = fgvc::data::default_area_min(o.augment.crop);
               },
               "train mode's random crop: tf-slim (default) or torchvision (RandomResizedCrop, areas from 0.08)")
            ->check(CLI::IsMember({"tf-slim", "torchvision"}));
        cli.add_option("--seed", o.seed, "random seed (default 0)")->check(fgvc::app::Seed);
        cli.add_option("--save-grid", grid, "write the first batch as a PNG grid (NAME.png)")
            ->check(fgvc::app::OutputFile)
            ->check(CLI::Validator(
                [](std::string& path) -> std::string {  // PNG bytes under another name mislead viewers
                  std::string ext = std::filesystem::path(path).extension().string();
                  for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
                  return ext == ".png" ? "" : "the grid is a PNG: name it NAME.png, got '" + path + "'";
                },
                "FILE.png"));
      },
      [&](const fgvc::app::Common& common) {
        using namespace fgvc::data;
        (void)common.resolved_device();  // validates --device; batches are pinned when CUDA is usable
        o.mode = mode == "train" ? Mode::Train : (mode == "eval" ? Mode::Eval : Mode::Eval12);
        o.normalization = normalization == "inception" ? Normalization::Inception : Normalization::ImageNet;
        Loader loader(fgvc::prefix_errors("--data", [&] { return load_dataset(data); }), o);
        int64_t done = 0;
        Batch first;  // the first batch with an image, for --save-grid (drawn after the timing)
        fgvc::app::prepare_output_file("--save-grid", grid, fgvc::app::data_inputs("--data", data));
        fgvc::app::refuse_data_image("--save-grid", grid, "--data", loader.dataset());
        const auto t0 = std::chrono::steady_clock::now();
        for (uint64_t epoch = 0; done < images; ++epoch) {
          loader.start_epoch(epoch);
          Batch b;
          int64_t before = done;
          while (done < images && loader.next(&b)) {
            if (!grid.empty() && first.indices.empty() && !b.indices.empty()) first = b;
            done += static_cast<int64_t>(b.indices.size());
          }
          if (done == before) throw fgvc::Error("--data " + data + ": no readable image");
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double rate = done / seconds;
        const int64_t skipped = loader.skipped_files();  // each unreadable file once, however many epochs
        if (!grid.empty()) save_grid(first, o, grid);
        if (!common.json) {
          std::printf("%lld images in %.2f s: %.1f images/s (%s, %d px, %d worker%s)\n", (long long)done, seconds, rate,
                      mode.c_str(), o.size, o.workers, o.workers == 1 ? "" : "s");
          std::printf("skipped %lld unreadable file(s)\n", (long long)skipped);
          if (!grid.empty()) std::printf("grid: %s\n", grid.c_str());
        }
        return nlohmann::json{{"images_per_sec", rate}, {"images", done},     {"skipped", skipped},
                              {"seconds", seconds},     {"size", o.size},     {"workers", o.workers},
                              {"mode", mode}};
      });
}
