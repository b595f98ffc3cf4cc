// fgvc-extract: a domain file for EMD domain similarity (SPEC.md section 5): the mean of the
// penultimate-layer features of each class's images, and the class's image count.
//   fgvc-extract --model resnet50 --weights resnet50.safetensors --data cub200/train --out cub200.safetensors
#include <cstdio>

#include "apps/app.h"
#include "autograd/grad_mode.h"
#include "data/loader.h"
#include "emd/domain.h"
#include "nn/models/registry.h"
#include "tensor/safetensors.h"

int main(int argc, char** argv) {
  std::string model_name, weights, data_path, out;
  int size = 0;
  fgvc::data::LoaderOptions o;
  o.mode = fgvc::data::Mode::Eval;
  return fgvc::app::run(
      "fgvc-extract", "Per-class mean features and image counts of a dataset, as a domain file", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--model", model_name, "model name")->required();
        cli.add_option("--weights", weights, "weights (.safetensors)")->required();
        cli.add_option("--data", data_path, "ImageFolder, .txt list or .json (COCO)")->required();
        cli.add_option("--out", out, "domain file to write (.safetensors)")->required();
        cli.add_option("--input-size", size, "input size (default 299 for Inception models, 224 otherwise)")
            ->check(CLI::PositiveNumber);
        cli.add_option("--batch-size", o.batch_size, "batch size (default 32)")->check(CLI::PositiveNumber);
        cli.add_option("--workers", o.workers, "loader threads (default 1)")->check(CLI::PositiveNumber);
      },
      [&](const fgvc::app::Common& common) {
        using namespace fgvc;
        const Device device = common.resolved_device();
        const bool inception = model_name.rfind("inception", 0) == 0;
        o.size = size > 0 ? size : (inception ? 299 : 224);
        o.normalization = inception ? data::Normalization::Inception : data::Normalization::ImageNet;
        const SafetensorsFile w = read_safetensors(weights);
        const Tensor fc = nn::classifier_weight(w.tensors);
        FGVC_CHECK(fc.defined(), "fgvc-extract", weights, ": no classifier weight [K, D]");
        std::shared_ptr<nn::Classifier> model;
        try {
          model = nn::create_model(model_name, fc.size(0));
        } catch (const Error& e) {
          throw app::UsageError(std::string("--model: ") + e.what());
        }
        model->load_state_dict(w.tensors, /*strict=*/true);
        model->to(device);
        model->eval();

        data::Dataset dataset = data::load_dataset(data_path);
        const std::vector<std::string> classes = dataset.classes;
        const int64_t m = static_cast<int64_t>(classes.size()), dim = model->feature_dim();
        std::vector<double> sums(static_cast<size_t>(m * dim), 0.0);
        std::vector<double> counts(static_cast<size_t>(m), 0.0);
        data::Loader loader(std::move(dataset), o);
        loader.start_epoch(0);
        data::Batch batch;
        NoGradGuard no_grad;
        while (loader.next(&batch)) {
          const std::vector<float> f = model->features(batch.images.to(device)).to_vector<float>();
          const std::vector<int64_t> labels = batch.labels.to_vector<int64_t>();
          for (size_t i = 0; i < labels.size(); ++i) {
            counts[labels[i]] += 1;
            for (int64_t k = 0; k < dim; ++k) sums[labels[i] * dim + k] += f[i * dim + k];
          }
        }
        std::vector<double> means(sums.size(), 0.0);
        for (int64_t c = 0; c < m; ++c)
          for (int64_t k = 0; k < dim; ++k) means[c * dim + k] = counts[c] > 0 ? sums[c * dim + k] / counts[c] : 0.0;
        emd::Domain domain;
        domain.features = Tensor::from_vector(means, {m, dim}).to(DType::Float32);
        domain.counts = counts;
        domain.classes = classes;
        domain.name = out;
        emd::save_domain(out, domain, model_name, "global average pool (penultimate)");
        int64_t images = 0;
        for (double c : counts) images += static_cast<int64_t>(c);
        if (!common.json)
          std::printf("%lld images of %lld classes -> %s (%lld-d means; %lld unreadable file(s) skipped)\n",
                      (long long)images, (long long)m, out.c_str(), (long long)dim, (long long)loader.skipped());
        return nlohmann::json{{"classes", m}, {"images", images}, {"dim", dim}, {"skipped", loader.skipped()},
                              {"out", out}};
      });
}
