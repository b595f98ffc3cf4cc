// fgvc-extract: a domain file for EMD domain similarity (SPEC.md section 5): the mean of the
// penultimate-layer features of each class's images, and the class's image count.
//   fgvc-extract --model resnet50 --weights resnet50.safetensors --data cub200/train --out cub200.safetensors
#include <cstdio>

#include "apps/app.h"
#include "data/loader.h"
#include "emd/domain.h"
#include "nn/models/registry.h"
#include "tensor/safetensors.h"
#include "tensor/warning.h"
#include "train/checkpoint.h"
#include "train/features.h"

int main(int argc, char** argv) {
  std::string model_name, weights, data_path, out;
  int size = 0;
  fgvc::data::LoaderOptions o;
  o.mode = fgvc::data::Mode::Eval;
  return fgvc::app::run(
      "fgvc-extract", "Per-class mean features and image counts of a dataset, as a domain file", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--model", model_name, "model name")->required()->check(fgvc::app::ModelName);
        cli.add_option("--weights", weights, "weights (.safetensors)")->required()->check(fgvc::app::NonEmptyPath);
        cli.add_option("--data", data_path, "ImageFolder, .txt list or .json (COCO)")->required()->check(fgvc::app::NonEmptyPath);
        cli.add_option("--out", out, "domain file to write (.safetensors)")->required()->check(fgvc::app::OutputFile);
        cli.add_option("--input-size", size, "input size (default: the size a checkpoint was trained at, else 299; 32 for resnet20/32/56)")
            ->check(fgvc::app::InputSize);
        cli.add_option("--batch-size", o.batch_size, "batch size (default 32)")->check(fgvc::app::BatchSize);
        cli.add_option("--workers", o.workers, "loader threads (default 1)")->check(fgvc::app::Threads);
      },
      [&](const fgvc::app::Common& common) {
        using namespace fgvc;
        const Device device = common.resolved_device();
        app::check_model_name(model_name);
        const train::RecordedRun run = prefix_errors("--weights", [&] {
          train::RecordedRun r = train::read_recorded_run(weights);
          r.check_model(model_name);
          return r;
        });
        o.size = size > 0 ? size : (run.input_size > 0 ? run.input_size : nn::default_input_size(model_name));
        app::check_input_size(model_name, o.size);
        o.normalization = nn::is_inception(model_name) ? data::Normalization::Inception : data::Normalization::ImageNet;
        const std::map<std::string, Tensor> w = prefix_errors("--weights", [&] { return nn::read_model_weights(weights); });  // a checkpoint: its moving average
        // The features come before the classifier, so a backbone (timm's num_classes=0) will
        // do: its model gets a classifier of one class that never runs.
        const Tensor fc = nn::classifier_weight(w);
        const std::shared_ptr<nn::Classifier> model =
            nn::create_model(model_name, fc.defined() && fc.size(0) > 0 ? fc.size(0) : 1);
        try {
          // Strict; a missing optional head (timm's Inception-v3) is allowed.
          nn::load_weights(*model, w, /*reset_classifier=*/!fc.defined());
        } catch (const Error& e) {
          throw Error(weights + ": " + e.what());
        }
        model->to(device);
        model->eval();

        data::Loader loader(prefix_errors("--data", [&] { return data::load_dataset(data_path); }), o);
        std::vector<std::pair<std::string, std::string>> inputs = app::data_inputs("--data", data_path);
        inputs.push_back({"--weights", weights});
        fgvc::app::prepare_output_file("--out", out, inputs);
        app::refuse_data_image("--out", out, "--data", loader.dataset());
        emd::Domain domain = train::class_mean_features(*model, loader, device);
        const int64_t m = static_cast<int64_t>(domain.classes.size()), dim = model->feature_dim();
        const std::vector<double>& counts = domain.counts;
        int64_t images = 0;
        for (double c : counts) images += static_cast<int64_t>(c);
        FGVC_CHECK(images > 0, "--data", data_path, ": no readable image (", loader.skipped(), " file(s) skipped)");
        // A class whose every file was unreadable keeps count 0 and a zero mean: selection
        // leaves it out, so it is named here rather than dropped without a word.
        for (int64_t c = 0; c < m; ++c)
          if (counts[c] == 0)
            warn("class '%s' has no readable image: count 0, never selected", domain.classes[c].c_str());
        domain.name = out;
        emd::save_domain(out, domain, model_name, "global average pool (penultimate)");
        if (!common.json)
          std::printf("%lld images of %lld classes at %d px -> %s (%lld-d means; %lld unreadable file(s) skipped)\n",
                      (long long)images, (long long)m, o.size, out.c_str(), (long long)dim, (long long)loader.skipped());
        return nlohmann::json{{"classes", m}, {"images", images}, {"dim", dim}, {"skipped", loader.skipped()},
                              {"out", out}, {"input_size", o.size}};
      });
}
