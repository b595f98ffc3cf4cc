// fgvc-eval: top-1/top-5 accuracy of a model or an ensemble on a validation set, 1 or 12
// crops, with the head/tail split of the paper's Table 4 and a per-class CSV.
//   fgvc-eval --model inception_v3 --weights runs/stage2/best.safetensors --data inat/val ...
//       ... --train-counts inat/train --per-class per_class.csv
//   fgvc-eval --model inception_v3 --weights a.safetensors --model resnet50 --weights b.safetensors --data val
#include <algorithm>
#include <cstdio>
#include <memory>

#include "apps/app.h"
#include "data/loader.h"
#include "nn/models/registry.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "tensor/warning.h"

int main(int argc, char** argv) {
  std::vector<std::string> models, weights;
  std::string data_path, train_counts_path, per_class;
  int size = 0, crops = 1;
  int64_t threshold = 100, batch_size = 32;
  int workers = 1;
  bool no_ema = false;
  return fgvc::app::run(
      "fgvc-eval", "Top-1/top-5 accuracy of a model or an ensemble, with the head/tail split", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--model", models, "model name; one per --weights, or one for all")->required()->allow_extra_args(false)->check(fgvc::app::ModelName);
        cli.add_option("--weights", weights, "weights or checkpoint (.safetensors); several: an ensemble")->required()->allow_extra_args(false)->check(fgvc::app::NonEmptyPath);
        cli.add_option("--data", data_path, "validation data: ImageFolder, .txt list or .json")->required()->check(fgvc::app::NonEmptyPath);
        cli.add_option("--input-size", size, "input size (default: the size a checkpoint was trained at, else the model's)")->check(fgvc::app::InputSize);
        cli.add_option("--crops", crops, "1 (central crop) or 12 (full + 5 crops, each flipped)")
            ->capture_default_str()->check(CLI::IsMember({1, 12}));
        cli.add_option("--train-counts", train_counts_path, "training data, for the head/tail split by class size")->check(fgvc::app::NonEmptyPath);
        cli.add_option("--head-threshold", threshold, "head classes: at least this many training images")
            ->capture_default_str()->check(fgvc::app::Count);
        cli.add_option("--per-class", per_class, "write per-class accuracy to this CSV")->check(fgvc::app::OutputFile);
        cli.add_option("--batch-size", batch_size, "images per batch")->capture_default_str()->check(fgvc::app::BatchSize);
        cli.add_option("--workers", workers, "loader threads")->capture_default_str()->check(fgvc::app::Threads);
        cli.add_flag("--no-ema", no_ema, "of a checkpoint with a moving average, use the trained weights instead");
      },
      [&](const fgvc::app::Common& common) {
        using namespace fgvc;
        if (models.size() != 1 && models.size() != weights.size())
          throw app::UsageError("give one --model for all --weights, or one per --weights (" +
                                std::to_string(models.size()) + " models, " + std::to_string(weights.size()) + " weights)");
        const Device device = common.resolved_device();
        data::Dataset dataset = prefix_errors("--data", [&] { return data::load_dataset(data_path); });
        std::vector<int64_t> train_counts;
        // The classes the model was trained on, by name (fgvc-train records them in its
        // checkpoints): --data may lack some, or order them otherwise. Every model of an
        // ensemble must have the same.
        std::vector<train::RecordedRun> runs;  // what each weights file records, its header read once
        for (const std::string& w : weights) runs.push_back(prefix_errors("--weights", [&] { return train::read_recorded_run(w); }));
        std::vector<std::string> recorded;  // the first that records them
        std::string recorded_by;
        for (const train::RecordedRun& run : runs) {
          if (run.classes.empty()) continue;
          if (recorded.empty()) recorded = run.classes, recorded_by = run.path;
          else if (run.classes != recorded)
            throw Error(run.path + ": trained on other classes than " + recorded_by + ": " +
                        data::class_difference(recorded, recorded_by, run.classes, run.path));
        }
        if (!train_counts_path.empty()) {
          data::Dataset train_set = prefix_errors("--train-counts", [&] { return data::load_dataset(train_counts_path); });
          app::refuse_data_image("--per-class", per_class, "--train-counts", train_set);
          if (!recorded.empty()) {
            // The same classes by name, in any order (a COCO file's category ids, a list's
            // classes file): counted in the order of the model's outputs. A list of labels
            // alone: its labels are the outputs' indices.
            std::vector<std::string> a = recorded, b = train_set.classes;
            std::sort(a.begin(), a.end());
            std::sort(b.begin(), b.end());
            if (!train_set.numbered && a != b)
              throw Error("--train-counts " + train_counts_path + ": not the classes " + recorded_by +
                          " was trained on: " +
                          data::class_difference(recorded, recorded_by, train_set.classes, "--train-counts"));
            train_set = data::align_classes(std::move(train_set), recorded, "--train-counts " + train_counts_path,
                                            recorded_by);
          }
          // A list of labels alone has no names to match a named data set's classes by.
          if (train_set.numbered && !dataset.numbered)
            throw Error("--train-counts " + train_counts_path + ": a list of labels without class names (no " +
                        data::list_classes_path(train_counts_path) + ") cannot be matched to the classes of --data " +
                        data_path + " by name; give it its classes file, or a folder");
          dataset = data::align_classes(std::move(dataset), train_set.classes, "--data " + data_path,
                                        "--train-counts " + train_counts_path);
          train_counts = train_set.counts();
        } else if (!recorded.empty() && !dataset.numbered) {  // a numbered list's labels are the model's outputs
          dataset = data::align_classes(std::move(dataset), recorded, "--data " + data_path, recorded_by);
        }
        int64_t K = static_cast<int64_t>(dataset.classes.size());
        std::vector<std::shared_ptr<nn::Classifier>> nets;
        std::vector<std::unique_ptr<data::Loader>> loaders;
        std::vector<train::EnsembleMember> members;
        std::vector<int> sizes;  // each model's input size
        for (size_t i = 0; i < weights.size(); ++i) {
          const std::string& name = models.size() == 1 ? models[0] : models[i];
          bool used_ema = false;
          app::check_model_name(name);
          prefix_errors("--weights", [&] { runs[i].check_model(name); });
          const auto w = prefix_errors("--weights", [&] { return nn::read_model_weights(weights[i], !no_ema, &used_ema); });
          const Tensor fc = nn::classifier_weight(w);
          if (!fc.defined()) throw Error(weights[i] + ": no classifier weight [K, D]");
          if (i == 0 && dataset.numbered && fc.size(0) > K) {
            // A list file's labels are class indices: its highest may be below the model's last class.
            std::vector<std::string> numbers;
            for (int64_t c = 0; c < fc.size(0); ++c) numbers.push_back(std::to_string(c));
            dataset = data::align_classes(std::move(dataset), numbers, "--data " + data_path, weights[i] + "'s classifier");
            K = fc.size(0);
          }
          if (fc.size(0) != K)
            throw Error(weights[i] + ": a classifier for " + std::to_string(fc.size(0)) + " classes, --data has " +
                        std::to_string(K) + (train_counts.empty() ? " (--train-counts TRAIN matches them by name)" : ""));
          std::shared_ptr<nn::Classifier> net = nn::create_model(name, K);
          try {
            nn::load_weights(*net, w);  // strict; a missing optional head (timm's Inception-v3) is allowed
          } catch (const Error& e) {
            throw Error(weights[i] + ": " + e.what());
          }
          net->to(device);
          data::LoaderOptions o;
          o.mode = crops == 12 ? data::Mode::Eval12 : data::Mode::Eval;
          o.size = size > 0 ? size : (runs[i].input_size > 0 ? runs[i].input_size : nn::default_input_size(name));
          app::check_input_size(name, o.size);
          sizes.push_back(o.size);
          o.normalization = nn::is_inception(name) ? data::Normalization::Inception : data::Normalization::ImageNet;
          o.batch_size = batch_size;
          o.workers = workers;
          o.shuffle = false;
          o.warn = i == 0;  // one warning per bad file, not one per model
          loaders.push_back(std::make_unique<data::Loader>(dataset, o));
          nets.push_back(net);
          members.push_back({net.get(), loaders.back().get()});
          if (!common.json && used_ema) std::printf("%s: the moving average of the weights\n", weights[i].c_str());
        }
        std::vector<std::pair<std::string, std::string>> inputs = app::data_inputs("--data", data_path);
        for (const auto& input : app::data_inputs("--train-counts", train_counts_path)) inputs.push_back(input);
        for (const std::string& w : weights) inputs.push_back({"--weights", w});
        fgvc::app::prepare_output_file("--per-class", per_class, inputs);
        app::refuse_data_image("--per-class", per_class, "--data", dataset);
        const train::EvalResult r = train::evaluate(members, device);
        FGVC_CHECK(r.images > 0, "--data", data_path, ": no readable image (", r.skipped, " file(s) skipped)");
        if (!per_class.empty()) train::write_per_class_csv(per_class, r, dataset.classes, train_counts);
        const bool one_size = std::count(sizes.begin(), sizes.end(), sizes[0]) == static_cast<std::ptrdiff_t>(sizes.size());
        nlohmann::json out = {{"images", r.images},
                              {"skipped", r.skipped},
                              {"nonfinite", r.nonfinite},
                              {"models", weights.size()},
                              {"crops", crops},
                              {"input_size", one_size ? nlohmann::json(sizes[0]) : nlohmann::json(sizes)},
                              {"top1", r.top1_accuracy()},
                              {"top5", r.top5_accuracy()},
                              {"top1_error", 1 - r.top1_accuracy()},
                              {"top5_error", 1 - r.top5_accuracy()},
                              {"loss", r.loss}};
        if (r.nonfinite) warn("%lld image(s) got NaN or infinite scores (counted as wrong)", (long long)r.nonfinite);
        if (!common.json) {
          std::string at;  // the input size, or each model's
          for (size_t i = 0; i < (one_size ? 1 : sizes.size()); ++i) at += (i ? "/" : "") + std::to_string(sizes[i]);
          std::printf("%lld images (%lld unreadable, skipped), %zu model(s), %d crop(s) at %s px\n", (long long)r.images,
                      (long long)r.skipped, weights.size(), crops, at.c_str());
          std::printf("%-8s %8s %8s %8s %8s %9s %9s\n", "", "classes", "images", "top-1", "top-5", "top-1 err",
                      "top-5 err");
          std::printf("%-8s %8lld %8lld %7.2f%% %7.2f%% %8.2f%% %8.2f%%\n", "all", (long long)K, (long long)r.images,
                      100 * r.top1_accuracy(), 100 * r.top5_accuracy(), 100 * (1 - r.top1_accuracy()),
                      100 * (1 - r.top5_accuracy()));
        }
        if (!train_counts.empty()) {
          const train::HeadTailResult h = train::head_tail(r, train_counts, threshold);
          // A group without validation images has no accuracy: null in JSON, "-" in the table.
          auto group = [](int64_t classes, int64_t images, double top1, double top5) {
            nlohmann::json g = {{"classes", classes}, {"images", images}, {"top1", nullptr}, {"top5", nullptr},
                                {"top1_error", nullptr}, {"top5_error", nullptr}};
            if (images > 0) g["top1"] = top1, g["top5"] = top5, g["top1_error"] = 1 - top1, g["top5_error"] = 1 - top5;
            return g;
          };
          auto row = [](const char* name, int64_t classes, int64_t images, double top1, double top5) {
            if (images > 0)
              std::printf("%-8s %8lld %8lld %7.2f%% %7.2f%% %8.2f%% %8.2f%%\n", name, (long long)classes,
                          (long long)images, 100 * top1, 100 * top5, 100 * (1 - top1), 100 * (1 - top5));
            else
              std::printf("%-8s %8lld %8lld %8s %8s %9s %9s\n", name, (long long)classes, (long long)images, "-", "-", "-",
                          "-");
          };
          out["head"] = group(h.head_classes, h.head_images, h.head_top1, h.head_top5);
          out["tail"] = group(h.tail_classes, h.tail_images, h.tail_top1, h.tail_top5);
          out["head_threshold"] = threshold;
          if (!common.json) {
            row("head", h.head_classes, h.head_images, h.head_top1, h.head_top5);
            row("tail", h.tail_classes, h.tail_images, h.tail_top1, h.tail_top5);
            std::printf("(head: classes with at least %lld training images)\n", (long long)threshold);
          }
        }
        if (!per_class.empty() && !common.json) std::printf("per-class accuracy -> %s\n", per_class.c_str());
        return out;
      });
}
