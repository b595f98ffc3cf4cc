// fgvc-infer: an evaluation-mode forward of a batch stored in a safetensors file.
//   fgvc-infer --model resnet50 --weights resnet50.safetensors --input x.safetensors --output y.safetensors
// Reads tensor `input` [N, 3, H, W] float32; writes `logits` [N, K] and `features` [N, D]
// (the pooled penultimate layer). --features-only writes `features` alone, and takes weights
// without a classifier (a backbone, as timm saves one made with num_classes=0).
#include <algorithm>
#include <cstdio>

#include "apps/app.h"
#include "autograd/grad_mode.h"
#include "nn/models/registry.h"
#include "tensor/safetensors.h"
#include "train/checkpoint.h"

int main(int argc, char** argv) {
  std::string model_name, weights, input, output;
  int64_t num_classes = 0;
  bool features_only = false;
  return fgvc::app::run(
      "fgvc-infer", "Evaluation-mode forward of tensor `input` through a model with given weights", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--model", model_name, "model name")->required()->check(fgvc::app::ModelName);
        cli.add_option("--weights", weights, "weights (.safetensors, timm/torchvision names)")->required()->check(fgvc::app::NonEmptyPath);
        cli.add_option("--input", input, "tensor `input` [N, 3, H, W] float32 (.safetensors)")->required()->check(fgvc::app::NonEmptyPath);
        cli.add_option("--output", output, "where to write `logits` and `features` (.safetensors; `features` alone with --features-only)")->required()->check(fgvc::app::OutputFile);
        cli.add_option("--num-classes", num_classes, "classes (default: from the weights' classifier)")
            ->check(fgvc::app::ClassCount);
        cli.add_flag("--features-only", features_only,
                     "write `features` alone; the weights may lack the classifier (a backbone)");
      },
      [&](const fgvc::app::Common& common) {
        using namespace fgvc;
        const Device device = common.resolved_device();
        app::check_model_name(model_name);
        prefix_errors("--weights", [&] { train::read_recorded_run(weights).check_model(model_name); });
        const std::map<std::string, Tensor> w = prefix_errors("--weights", [&] { return nn::read_model_weights(weights); });  // a checkpoint: its moving average
        const Tensor fc = nn::classifier_weight(w);  // [K, D], undefined for a backbone
        if (!fc.defined() && !features_only)
          throw Error(weights + ": no classifier weight [K, D] (fc.weight, last_linear.weight, ...) for the logits; "
                      "--features-only writes the features alone");
        // The logits come from the weights' own classifier: another count would be a new,
        // untrained one (fgvc-train --reset-classifier makes that, for fine-tuning).
        if (num_classes != 0 && fc.defined() && fc.size(0) != num_classes)
          throw app::UsageError("--num-classes " + std::to_string(num_classes) + ": the classifier of --weights " + weights +
                                " has " + std::to_string(fc.size(0)) + " classes (" + shape_str(fc.shape()) +
                                "); give " + std::to_string(fc.size(0)) + ", or leave --num-classes out");
        if (num_classes == 0) num_classes = fc.defined() ? fc.size(0) : 1;  // a backbone's classifier is not used
        FGVC_CHECK(num_classes > 0, "--weights", weights, ": its classifier weight ", shape_str(fc.shape()),
                   " has no classes");
        const std::shared_ptr<nn::Classifier> model = nn::create_model(model_name, num_classes);
        try {
          // Strict; a missing optional head (timm's Inception-v3) is allowed, and a backbone
          // leaves the classifier the model was made with (never run with --features-only).
          nn::load_weights(*model, w, /*reset_classifier=*/!fc.defined());
        } catch (const Error& e) {
          throw Error(weights + ": " + e.what());
        }
        model->to(device);
        model->eval();
        const SafetensorsFile in = prefix_errors("--input", [&] { return read_safetensors(input); });
        const auto x = in.tensors.find("input");
        const auto unread = in.unsupported.find("input");
        FGVC_CHECK(unread == in.unsupported.end(), "--input", input, ": 'input' must be float32 [N, 3, H, W], got ",
                   unread->second);
        FGVC_CHECK(x != in.tensors.end(), "--input", input, ": no tensor named 'input'");
        FGVC_CHECK(x->second.dim() == 4 && x->second.size(1) == 3 && x->second.dtype() == DType::Float32, "--input",
                   input, ": 'input' must be float32 [N, 3, H, W], got ", describe(x->second));
        FGVC_CHECK(std::min(x->second.size(2), x->second.size(3)) >= nn::min_input_size(model_name), "--input", input,
                   ": images of ", x->second.size(2), " x ", x->second.size(3), " are below the ",
                   nn::min_input_size(model_name), " x ", nn::min_input_size(model_name), " that ", model_name, " needs");
        fgvc::app::prepare_output_file("--output", output, {{"--weights", weights}, {"--input", input}});
        NoGradGuard no_grad;
        const Tensor features = model->features(x->second.to(device));
        std::map<std::string, Tensor> out{{"features", features.cpu()}};
        if (!features_only) out["logits"] = model->classify(features).cpu();  // the network runs once
        write_safetensors(output, out, {{"model", model_name}, {"weights", weights}});
        nlohmann::json j{{"features_shape", features.shape()}, {"output", output}};
        if (!features_only) j["logits_shape"] = out.at("logits").shape();
        if (!common.json) {
          const std::string logits = features_only ? "" : "logits " + shape_str(out.at("logits").shape()) + ", ";
          std::printf("%s: %sfeatures %s -> %s\n", model_name.c_str(), logits.c_str(), shape_str(features.shape()).c_str(),
                      output.c_str());
        }
        return j;
      });
}
