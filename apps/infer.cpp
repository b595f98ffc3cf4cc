// fgvc-infer: an evaluation-mode forward of a batch stored in a safetensors file.
//   fgvc-infer --model resnet50 --weights resnet50.safetensors --input x.safetensors --output y.safetensors
// Reads tensor `input` [N, 3, H, W] float32; writes `logits` [N, K] and `features` [N, D]
// (the pooled penultimate layer).
#include <algorithm>
#include <cstdio>

#include "apps/app.h"
#include "autograd/grad_mode.h"
#include "nn/models/registry.h"
#include "tensor/safetensors.h"

int main(int argc, char** argv) {
  std::string model_name, weights, input, output;
  int64_t num_classes = 0;
  return fgvc::app::run(
      "fgvc-infer", "Evaluation-mode forward of tensor `input` through a model with given weights", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--model", model_name, "model name")->required()->check(fgvc::app::ModelName);
        cli.add_option("--weights", weights, "weights (.safetensors, timm/torchvision names)")->required()->check(fgvc::app::NonEmptyPath);
        cli.add_option("--input", input, "tensor `input` [N, 3, H, W] float32 (.safetensors)")->required()->check(fgvc::app::NonEmptyPath);
        cli.add_option("--output", output, "where to write `logits` and `features` (.safetensors)")->required()->check(fgvc::app::OutputFile);
        cli.add_option("--num-classes", num_classes, "classes (default: from the weights' classifier)")
            ->check(fgvc::app::ClassCount);
      },
      [&](const fgvc::app::Common& common) {
        using namespace fgvc;
        const Device device = common.resolved_device();
        const std::map<std::string, Tensor> w = nn::read_model_weights(weights);  // a checkpoint: its moving average
        if (num_classes == 0) {  // from the classifier's weight, [K, D]
          const Tensor fc = nn::classifier_weight(w);
          if (!fc.defined())
            throw app::UsageError("--num-classes: not given and " + weights + " has no classifier weight [K, D]");
          num_classes = fc.size(0);
          FGVC_CHECK(num_classes > 0, "--weights", weights, ": its classifier weight ", shape_str(fc.shape()),
                     " has no classes");
        }
        std::shared_ptr<nn::Classifier> model;
        app::check_model_name(model_name);
        model = nn::create_model(model_name, num_classes);
        try {
          nn::load_weights(*model, w);  // strict; a missing optional head (timm's Inception-v3) is allowed
        } catch (const Error& e) {
          throw Error(weights + ": " + e.what());
        }
        model->to(device);
        model->eval();
        const SafetensorsFile in = read_safetensors(input);
        const auto x = in.tensors.find("input");
        FGVC_CHECK(x != in.tensors.end(), "--input", input, ": no tensor named 'input'");
        FGVC_CHECK(x->second.dim() == 4 && x->second.size(1) == 3 && x->second.dtype() == DType::Float32, "--input",
                   input, ": 'input' must be float32 [N, 3, H, W], got ", describe(x->second));
        FGVC_CHECK(std::min(x->second.size(2), x->second.size(3)) >= nn::min_input_size(model_name), "--input", input,
                   ": images of ", x->second.size(2), " x ", x->second.size(3), " are below the ",
                   nn::min_input_size(model_name), " x ", nn::min_input_size(model_name), " that ", model_name, " needs");
        fgvc::app::prepare_output_file("--output", output);
        NoGradGuard no_grad;
        const Tensor features = model->features(x->second.to(device));
        const Tensor logits = model->classify(features);  // the network runs once
        write_safetensors(output, {{"logits", logits.cpu()}, {"features", features.cpu()}},
                          {{"model", model_name}, {"weights", weights}});
        if (!common.json)
          std::printf("%s: logits %s, features %s -> %s\n", model_name.c_str(), shape_str(logits.shape()).c_str(),
                      shape_str(features.shape()).c_str(), output.c_str());
        return nlohmann::json{{"logits_shape", logits.shape()}, {"features_shape", features.shape()}, {"output", output}};
      });
}
