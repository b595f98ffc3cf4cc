// fgvc-model-info: what a network is made of: parameters, buffers, multiply-accumulates and
// output shape at an input size; --layers adds the per-layer table, --time each layer's
// measured forward and backward time (as `caffe time` does).
//   fgvc-model-info --model inception_v4 --input-size 560 --layers
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "apps/app.h"
#include "autograd/autocast.h"
#include "autograd/ops.h"
#include "kernels/conv2d.h"
#include "nn/models/registry.h"
#include "optim/optimizer.h"
#include "tensor/cuda_runtime.h"
#include "tensor/random.h"

namespace {

using fgvc::nn::Module;

struct LayerRow {
  std::string name, type;
  fgvc::Shape output;
  int64_t params = 0, macs = 0;
  uint64_t first_node = 0, end_node = 0;  // autograd nodes its forward created
  bool ran = true;  // false: a layer with parameters this pass did not call (an aux head in eval)
  std::vector<double> forward_s, backward_s;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Records every leaf module's forward (modules without children: the layers themselves).
class Recorder : public fgvc::nn::ForwardObserver {
 public:
  explicit Recorder(const Module& root) { name_tree(root, ""); }
  void before(const Module& m, const fgvc::Tensor&) override {
    if (!m.named_children().empty()) return;
    fgvc::cuda_synchronize();
    started_[&m] = {std::chrono::steady_clock::now(), fgvc::autograd::nodes_created()};
  }
  void after(const Module& m, const fgvc::Tensor& x, const fgvc::Tensor& y) override {
    if (!m.named_children().empty()) return;
    fgvc::cuda_synchronize();
    const auto [t0, first] = started_.at(&m);
    LayerRow& row = row_for(m);
    row.type = m.type_name();
    row.output = y.shape();
    row.macs = m.macs(x.shape(), y.shape());
    row.params = m.num_parameters();
    row.first_node = first;
    row.end_node = fgvc::autograd::nodes_created();
    row.forward_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  void next_pass() { pass_counter_.clear(); }
  // Rows for the layers with parameters that the recorded passes never called (Inception-v3's
  // auxiliary classifier in eval mode, or below the input size it needs), in the model's order,
  // so that the table's parameters add up to the model's.
  void add_layers_not_run(const Module& m) {
    for (auto& [n, child] : m.named_children()) {
      add_layers_not_run(*child);
      if (!child->named_children().empty() || child->num_parameters() == 0) continue;
      const std::string& name = names_[child.get()];
      if (std::any_of(rows.begin(), rows.end(), [&](const LayerRow& r) { return r.name == name; })) continue;
      LayerRow row;
      row.name = name, row.type = child->type_name(), row.params = child->num_parameters(), row.ran = false;
      rows.push_back(row);
    }
  }
  // The row whose forward created the node with this sequence number.
  LayerRow* owner(uint64_t sequence) {
    for (LayerRow& r : rows) if (sequence >= r.first_node && sequence < r.end_node) return &r;
    return nullptr;
  }
  std::vector<LayerRow> rows;

 private:
  void name_tree(const Module& m, const std::string& prefix) {
    for (auto& [n, child] : m.named_children()) {
      names_[child.get()] = prefix + n;
      name_tree(*child, prefix + n + ".");
    }
  }
  // A module may run several times in one forward (shared layers): one row per call.
  LayerRow& row_for(const Module& m) {
    const int call = pass_counter_[&m]++;
    const std::string key = names_[&m] + (call ? "#" + std::to_string(call) : "");
    for (LayerRow& r : rows) if (r.name == key) return r;
    rows.push_back({});
    rows.back().name = key;
    return rows.back();
  }
  std::map<const Module*, std::string> names_;
  std::map<const Module*, std::pair<std::chrono::steady_clock::time_point, uint64_t>> started_;
  std::map<const Module*, int> pass_counter_;
};

std::string shape_text(const fgvc::Shape& s) { return fgvc::shape_str(s); }

}  // namespace

int main(int argc, char** argv) {
  std::string model_name;
  int64_t num_classes = 1000, batch = 2;  // --time: a training step; batch norm there needs two images
  int size = 0, repeats = 3;  // size 0: the model's default (299; 32 for the CIFAR ResNets), as fgvc-train's
  bool layers = false, time = false, whole_model = false, cudnn_benchmark = false;
  std::string optimizer = "none", amp = "off";
  return fgvc::app::run(
      "fgvc-model-info", "Parameters, buffers, MACs, output shape and per-layer table of a model", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--model", model_name, "model name (resnet50, inception_v3, ...)")->required()->check(fgvc::app::ModelName);
        cli.add_option("--num-classes", num_classes, "classes of the classifier (default 1000)")->check(fgvc::app::ClassCount);
        cli.add_option("--input-size", size, "input size S for S x S images (default 299; 32 for resnet20/32/56)")->check(fgvc::app::InputSize);
        cli.add_flag("--layers", layers, "print the per-layer table");
        CLI::Option* time_flag = cli.add_flag("--time", time, "measure each layer's forward and backward time (a training step; Inception-v4/-ResNet-v2 without the "
                     "auxiliary classifier fgvc-train adds)");
        cli.add_option("--batch-size", batch, "batch for --time (default 2: batch norm in a training step needs two values per channel)")->check(fgvc::app::BatchSize)
            ->needs(time_flag);
        cli.add_option("--optimizer", optimizer,
                       "with --time: a whole training step (label-smoothed cross-entropy, aux loss, backward, "
                       "this optimizer's update) instead of forward + backward of sum(logits)")
            ->check(CLI::IsMember({"none", "rmsprop", "sgd"}))
            ->needs(time_flag);
        cli.add_flag("--whole-model", whole_model,
                     "with --time: time the whole model only, without the per-layer synchronisation (the "
                     "figure to compare on a GPU)")
            ->needs(time_flag);
        cli.add_option("--amp", amp, "with --time on CUDA: mixed precision, 16-bit convolutions and activations (bf16 or fp16; default off)")
            ->check(CLI::IsMember({"off", "bf16", "fp16"}))
            ->needs(time_flag);
        cli.add_flag("--cudnn-benchmark", cudnn_benchmark,
                     "with --time on CUDA: cuDNN times every convolution algorithm in the warm-up and keeps the "
                     "fastest (PyTorch's cudnn.benchmark)")
            ->needs(time_flag);
        cli.add_option("--repeats", repeats, "timed passes for --time, after one warm-up (default 3)")
            ->check(fgvc::app::Repeats)
            ->needs(time_flag);
      },
      [&](const fgvc::app::Common& common) {
        using namespace fgvc;
        const Device device = common.resolved_device();
        if (amp != "off" && !device.is_cuda())
          throw app::UsageError("--amp " + amp + " needs a CUDA device (this run is on " + device.str() + ")");
        const DType amp_dtype = amp == "bf16" ? DType::BFloat16 : amp == "fp16" ? DType::Float16 : DType::Float32;
        kernels::set_cudnn_benchmark(cudnn_benchmark);
        std::shared_ptr<nn::Classifier> model;
        app::check_model_name(model_name);
        if (size == 0) size = nn::default_input_size(model_name);
        model = nn::create_model(model_name, num_classes);  // timm's and torchvision's layouts and counts
        // --time takes a training step, with the auxiliary loss of a model that has the head,
        // where the input is large enough for it (fgvc-train with --aux-weight 0 trains without).
        app::check_input_size(model_name, size, false);
        const bool aux_loss = time && model->has_aux_classifier() && size >= nn::min_input_size(model_name, true);
        model->set_aux_enabled(aux_loss);
        model->to(device);
        std::vector<double> model_forward_s, model_step_s;
        int64_t buffers = 0;
        for (auto& [n, b] : model->named_buffers()) buffers += b.numel();
        Recorder rec(*model);
        // The hooks below point at `rec`: unhooked on every way out, an exception included.
        struct Unhook {
          ~Unhook() {
            nn::Module::set_observer(nullptr);
            autograd::set_backward_timer(nullptr);
          }
        } unhook;
        nn::Module::set_observer(&rec);
        Generator gen(0);
        const Tensor x = randn({time ? batch : 1, 3, size, size}, gen, DType::Float32, device);
        Tensor y;
        if (!time) {
          model->eval();
          NoGradGuard no_grad;
          y = model->forward(x);
        } else {
          model->train();
          autograd::set_backward_timer([&](const autograd::Node& node, double s) {
            if (LayerRow* r = rec.owner(node.sequence)) r->backward_s.push_back(s);
          });
          // A training step as fgvc-train takes it (RMSProp/SGD with the paper's defaults).
          std::unique_ptr<optim::Optimizer> opt;
          if (optimizer == "rmsprop") opt = std::make_unique<optim::RMSProp>(model->named_parameters(), 0.9, 0.9, 1.0, 4e-5);
          if (optimizer == "sgd") opt = std::make_unique<optim::SGD>(model->named_parameters(), 0.9, 4e-5);
          std::vector<int64_t> label_values;
          for (int64_t i = 0; i < batch; ++i) label_values.push_back(i % num_classes);
          const Tensor labels = Tensor::from_vector(label_values, {batch}).to(device);
          // A batch of one fails where a batch norm sees one value per channel (a 1 x 1 grid):
          // that is the flag's doing, and named so (exit 2).
          try {
            for (int pass = 0; pass <= repeats; ++pass) {
              rec.next_pass();
              if (pass == 1) {  // the first pass warms up: drop its timings
                for (LayerRow& r : rec.rows) r.forward_s.clear(), r.backward_s.clear();
                if (whole_model) {  // the warm-up recorded shapes and MACs; time the rest without syncs
                  nn::Module::set_observer(nullptr);
                  autograd::set_backward_timer(nullptr);
                }
              }
              const auto t0 = std::chrono::steady_clock::now();
              {
                AutocastGuard autocast(amp_dtype);
                y = model->forward(x);
              }
              cuda_synchronize();
              const auto t1 = std::chrono::steady_clock::now();
              if (opt) {
                AutocastGuard autocast(amp_dtype);
                Tensor loss = cross_entropy(y, labels, 0.1);
                if (model->aux_logits().defined())
                  loss = add(loss, mul(cross_entropy(model->aux_logits(), labels, 0.1), 0.4));
                backward(loss);
                opt->step(0.045);
                opt->zero_grad();
              } else {
                backward(sum(y));
              }
              cuda_synchronize();
              const auto t2 = std::chrono::steady_clock::now();
              if (pass > 0) {  // whole-model wall times, every op included
                model_forward_s.push_back(std::chrono::duration<double>(t1 - t0).count());
                model_step_s.push_back(std::chrono::duration<double>(t2 - t0).count());
              }
            }
          } catch (const Error& e) {
            if (batch != 1) throw;
            throw app::UsageError("--batch-size 1: a training step of " + model_name + " at " + std::to_string(size) +
                                  " px needs 2 or more (" + e.what() + ")");
          }
          autograd::set_backward_timer(nullptr);
        }
        nn::Module::set_observer(nullptr);
        rec.add_layers_not_run(*model);
        int64_t macs = 0;
        for (const LayerRow& r : rec.rows) macs += r.macs;
        if (time) macs /= batch;  // per image
        const Shape out = y.shape();  // the batch's: 1, or --batch-size with --time (MACs are per image)

        // Inception-v3's auxiliary classifier (torchvision's, always built) is left out of the
        // counts usually quoted (23,834,568 at 1000 classes): given beside the whole model's.
        const int64_t params = model->num_parameters();
        int64_t aux_params = 0;
        for (auto& [n, p] : model->named_parameters())
          if (n.rfind("AuxLogits.", 0) == 0) aux_params += p.numel();
        nlohmann::json j{{"model", model_name}, {"params", params}, {"params_without_aux", params - aux_params},
                         {"buffers", buffers},
                         {"macs", macs}, {"output_shape", out}, {"input_size", size}, {"num_classes", num_classes},
                         {"device", device.str()}};
        if (!common.json) {
          std::printf("model        %s (%lld classes) at %d x %d\n", model_name.c_str(), (long long)num_classes, size, size);
          std::printf("parameters   %lld", (long long)params);
          if (aux_params > 0) std::printf(" (%lld without the auxiliary classifier)", (long long)(params - aux_params));
          std::printf("\n");
          std::printf("buffers      %lld\n", (long long)buffers);
          std::printf("MACs         %.3f G per image\n", macs / 1e9);
          std::printf("output       %s\n", shape_text(out).c_str());
        }
        const bool layer_times = time && !whole_model;
        if (layers || layer_times) {
          nlohmann::json rows = nlohmann::json::array();
          if (!common.json) {
            std::printf("\n%-42s %-14s %-20s %12s %10s", "layer", "type", "output", "params", "MMACs");
            if (layer_times) std::printf(" %10s %10s", "fwd ms", "bwd ms");
            std::printf("\n");
          }
          double total_f = 0, total_b = 0;
          for (const LayerRow& r : rec.rows) {
            const double f = median(r.forward_s) * 1e3;
            // Backward: all of this layer's node timings in the timed passes, per pass.
            double b = 0;
            for (double s : r.backward_s) b += s;
            b = r.backward_s.empty() ? 0 : b * 1e3 / repeats;
            total_f += f, total_b += b;
            Shape o = r.output;
            if (!time && r.ran) o[0] = 1;
            if (!common.json) {
              std::printf("%-42s %-14s %-20s %12lld %10.1f", r.name.c_str(), r.type.c_str(),
                          r.ran ? shape_text(o).c_str() : "(not run)", (long long)r.params,
                          (time ? r.macs / batch : r.macs) / 1e6);
              if (layer_times && r.ran) std::printf(" %10.2f %10.2f", f, b);
              std::printf("\n");
            }
            nlohmann::json row{{"name", r.name}, {"type", r.type}, {"output_shape", nullptr}, {"params", r.params},
                               {"macs", time ? r.macs / batch : r.macs}, {"ran", r.ran}};
            if (r.ran) row["output_shape"] = o;
            if (layer_times && r.ran) row["forward_ms"] = f, row["backward_ms"] = b;
            rows.push_back(row);
          }
          if (layer_times && !common.json)
            std::printf("%-42s %-14s %-20s %12s %10s %10.2f %10.2f\n", "total", "", "", "", "", total_f, total_b);
          j["layers"] = rows;
          if (layer_times) j["layers_forward_ms"] = total_f, j["layers_backward_ms"] = total_b;
        }
        if (time) {
          j["batch_size"] = batch, j["amp"] = amp, j["whole_model"] = whole_model, j["cudnn_benchmark"] = cudnn_benchmark;
          // Whole model, wall clock (without --whole-model, with the observer's synchronisation:
          // high on a GPU).
          j["forward_ms"] = median(model_forward_s) * 1e3;
          j["step_ms"] = median(model_step_s) * 1e3;
          j["optimizer"] = optimizer;
          j["aux_loss"] = aux_loss;
          if (device.is_cuda()) j["peak_gpu_mib"] = cuda_memory_stats(device.index).peak_allocated / 1048576.0;
          if (!common.json)
            std::printf("whole model: forward %.1f ms, %s %.1f ms (batch %lld, median of %d)\n",
                        median(model_forward_s) * 1e3,
                        optimizer == "none" ? "forward + backward" : ("training step with " + optimizer).c_str(),
                        median(model_step_s) * 1e3, (long long)batch, repeats);
          if (!common.json && model->has_aux_classifier() && !aux_loss)
            std::printf("(without the auxiliary loss: %s's auxiliary classifier needs an input of at least %d)\n",
                        model_name.c_str(), nn::min_input_size(model_name, true));
        }
        return j;
      });
}
