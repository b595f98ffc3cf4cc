// fgvc-demo: the paper's method end to end on real images, on a CPU in minutes (SPEC.md
// section 6). Fashion-MNIST (Debian's dataset-fashion-mnist) is written out as JPEG files: a
// long-tailed training folder (imbalance ~100) and the balanced test folder. Then, with the
// same library code as the fgvc-* binaries:
//   stage 1  train a small residual network (resnet20) on the long-tailed folder
//   stage 2  fine-tune it on a more balanced subset (fgvc-subset's) at a lower learning rate
//   eval     top-1 overall, on head and on tail classes, for both stages (the paper's Table 4)
//   EMD      class-mean features, domain similarity between groups of classes and greedy
//            selection of the source classes most similar to a target group (section 4)
//   report   report.md, PNG plots and results.json in the run folder, printed last.
//
//   fgvc-demo --out runs/demo
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>

#include "apps/app.h"
#include "data/decode.h"
#include "data/idx.h"
#include "data/subset.h"
#include "emd/domain.h"
#include "nn/models/registry.h"
#include "tensor/atomic_file.h"
#include "tensor/warning.h"
#include "train/evaluate.h"
#include "train/features.h"
#include "train/plots.h"
#include "train/trainer.h"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Fashion-MNIST's ten classes, by label; folder names sort in label order.
const char* const kClasses[10] = {"0-tshirt-top", "1-trouser", "2-pullover", "3-dress", "4-coat",
                                  "5-sandal",     "6-shirt",   "7-sneaker",  "8-bag",   "9-ankle-boot"};
// The groups whose domain similarity the demo measures, by label.
const std::vector<std::pair<std::string, std::vector<int>>> kGroups = {
    {"tops", {0, 2, 3, 4, 6}}, {"footwear", {5, 7, 9}}, {"other", {1, 8}}};

struct Options {
  std::string out = "runs/demo", data_dir = "/usr/share/datasets/fashion-mnist", model = "resnet20";
  int64_t largest = 2000;          // training images of the largest class
  double imbalance = 100;          // largest / smallest class
  int64_t test_per_class = 1000;   // all of Fashion-MNIST's test set
  int64_t epochs1 = 10, epochs2 = 3, max_per_class = 100, batch_size = 64, head_threshold = 100;
  // lr2: the paper's transfer-learning rate; its stage 2 on iNat (after far longer training) used
  // 1e-6, which moves a network trained for 10 small epochs too little to see.
  double lr1 = 0.045, lr2 = 0.0045, gamma = 0.01;  // gamma: SPEC.md section 7
  int input_size = 28, workers = 2;
  uint64_t seed = 0;
};

// Training images of class c: largest * imbalance^(-c/9), from class 0 (head) to 9 (tail).
std::vector<int64_t> long_tail_counts(const Options& o) {
  std::vector<int64_t> counts;
  for (int c = 0; c < 10; ++c)
    counts.push_back(std::max<int64_t>(1, std::llround(o.largest * std::pow(o.imbalance, -c / 9.0))));
  return counts;
}

// Writes the first counts[c] images of each class as root/<class>/<index>.jpg (grayscale
// JPEG, so the decoder's gray-to-RGB path runs). Returns the counts written.
std::vector<int64_t> write_folder(const std::string& root, const fgvc::data::IdxImages& images,
                                  const std::vector<uint8_t>& labels, const std::vector<int64_t>& counts) {
  if (static_cast<int64_t>(labels.size()) != images.count)
    throw fgvc::Error(root + ": " + std::to_string(labels.size()) + " labels for " + std::to_string(images.count) +
                      " images (mismatched IDX files)");
  std::vector<int64_t> written(10, 0);
  for (int c = 0; c < 10; ++c) fs::create_directories(fs::path(root) / kClasses[c]);
  for (int64_t i = 0; i < images.count; ++i) {
    const int c = labels[i];
    if (c > 9 || written[c] >= counts[c]) continue;
    const std::vector<uint8_t> jpeg = fgvc::data::encode_jpeg(images.image(i), static_cast<int>(images.cols),
                                                              static_cast<int>(images.rows), 1, 95);
    std::FILE* f = std::fopen((fs::path(root) / kClasses[c] / (std::to_string(i) + ".jpg")).c_str(), "wb");
    if (!f || std::fwrite(jpeg.data(), 1, jpeg.size(), f) != jpeg.size() || std::fclose(f) != 0)
      throw fgvc::Error("cannot write images under " + root);
    written[c]++;
  }
  return written;
}

struct StageResult {
  fgvc::train::EvalResult eval;
  fgvc::train::HeadTailResult head_tail;
  double seconds = 0;
};

// A stage's trained model (its last checkpoint) and the evaluation-mode loader options the
// demo reads test images and class means with.
std::shared_ptr<fgvc::nn::Classifier> stage_model(const std::string& run, const Options& o, fgvc::Device device) {
  auto model = fgvc::nn::create_model(o.model, 10);
  model->load_state_dict(fgvc::nn::read_model_weights(run + "/last.safetensors"), true);
  model->to(device);
  return model;
}

fgvc::data::LoaderOptions eval_options(const Options& o) {
  fgvc::data::LoaderOptions lo;
  lo.mode = fgvc::data::Mode::Eval;
  lo.size = o.input_size;
  lo.normalization = fgvc::data::Normalization::ImageNet;
  lo.batch_size = 256;
  lo.workers = o.workers;
  lo.shuffle = false;
  return lo;
}

StageResult evaluate_stage(const std::string& run, const Options& o, const fgvc::data::Dataset& test,
                           const std::vector<int64_t>& train_counts, fgvc::Device device) {
  using namespace fgvc;
  auto model = stage_model(run, o, device);
  data::Loader loader(test, eval_options(o));
  StageResult r;
  r.eval = train::evaluate({{model.get(), &loader}}, device);
  r.head_tail = train::head_tail(r.eval, train_counts, o.head_threshold);
  std::vector<std::string> names(kClasses, kClasses + 10);
  train::write_per_class_csv(run + "/per_class.csv", r.eval, names, train_counts);
  return r;
}

fgvc::emd::Domain pick(const fgvc::emd::Domain& d, const std::vector<int>& rows, const std::string& name) {
  const int64_t dim = d.features.size(1);
  const std::vector<float> f = d.features.to_vector<float>();
  std::vector<float> sub;
  fgvc::emd::Domain out;
  for (int r : rows) {
    sub.insert(sub.end(), f.begin() + r * dim, f.begin() + (r + 1) * dim);
    out.counts.push_back(d.counts[r]);
    out.classes.push_back(d.classes[r]);
  }
  out.features = fgvc::Tensor::from_vector(sub, {static_cast<int64_t>(rows.size()), dim});
  out.name = name;
  return out;
}

std::string pct(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", 100 * v);
  return buf;
}

// The accuracy table's rows: top-1, head and tail (a group without test images: "-").
std::string accuracy_table(const std::vector<std::pair<std::string, const StageResult*>>& rows) {
  const StageResult& first = *rows.front().second;
  std::ostringstream table;
  table << "| | top-1 | head top-1 (" << first.head_tail.head_classes << " classes) | tail top-1 ("
        << first.head_tail.tail_classes << " classes) |\n|---|---|---|---|\n";
  const auto group = [](int64_t images, double v) { return images > 0 ? pct(v) + "%" : std::string("-"); };
  for (const auto& [name, s] : rows)
    table << "| " << name << " | " << pct(s->eval.top1_accuracy()) << "% | "
          << group(s->head_tail.head_images, s->head_tail.head_top1) << " | "
          << group(s->head_tail.tail_images, s->head_tail.tail_top1) << " |\n";
  return table.str();
}

// A group without test images (no class reaches the head threshold, say) has no accuracy: null.
json stage_json(const StageResult& s) {
  const auto or_null = [](int64_t images, double v) { return images > 0 ? json(v) : json(nullptr); };
  return {{"top1", s.eval.top1_accuracy()},
          {"head", or_null(s.head_tail.head_images, s.head_tail.head_top1)},
          {"tail", or_null(s.head_tail.tail_images, s.head_tail.tail_top1)},
          {"top5", s.eval.top5_accuracy()},
          {"seconds", s.seconds}};
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  return fgvc::app::run(
      "fgvc-demo", "The paper's recipe end to end on Fashion-MNIST images, on the CPU in minutes", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--out", o.out, "run folder (report.md, results.json, plots, both stages)")->capture_default_str()
            ->check(fgvc::app::OutputFolder);
        cli.add_option("--data-dir", o.data_dir, "Fashion-MNIST IDX files (gzipped or not)")->capture_default_str();
        cli.add_option("--largest", o.largest, "training images of the largest class")->capture_default_str()
            ->check(fgvc::app::range_check(10, 6000, true));
        cli.add_option("--imbalance", o.imbalance, "largest / smallest class")->capture_default_str()->check(fgvc::app::range_check(1.0, 1000.0));
        cli.add_option("--test-per-class", o.test_per_class, "test images per class")->capture_default_str()
            ->check(fgvc::app::range_check(1, 1000, true));
        cli.add_option("--epochs1", o.epochs1, "stage 1 epochs")->capture_default_str()->check(fgvc::app::Count);
        cli.add_option("--epochs2", o.epochs2, "stage 2 epochs")->capture_default_str()->check(fgvc::app::Count);
        cli.add_option("--max-per-class", o.max_per_class, "stage 2: the balanced subset's cap per class")
            ->capture_default_str()->check(fgvc::app::Count);
        cli.add_option("--lr1", o.lr1, "stage 1 learning rate")->capture_default_str()->check(fgvc::app::Positive);
        cli.add_option("--lr2", o.lr2, "stage 2 learning rate")->capture_default_str()->check(fgvc::app::Positive);
        cli.add_option("--batch-size", o.batch_size, "images per step")->capture_default_str()->check(fgvc::app::TrainingBatchSize);
        cli.add_option("--head-threshold", o.head_threshold, "head classes: at least this many training images")
            ->capture_default_str()->check(fgvc::app::Count);
        cli.add_option("--gamma", o.gamma, "domain similarity exp(-gamma EMD)")->capture_default_str()->check(fgvc::app::Positive);
        cli.add_option("--workers", o.workers, "loader threads")->capture_default_str()->check(fgvc::app::Threads);
        cli.add_option("--seed", o.seed, "seed")->capture_default_str()->check(fgvc::app::Seed);
      },
      [&](const fgvc::app::Common& common) {
        using namespace fgvc;
        std::setvbuf(stdout, nullptr, _IOLBF, 0);  // our lines and the trainer's progress (stderr) in order
        const auto start = std::chrono::steady_clock::now();
        auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
        // SPEC.md section 6 sizes the demo for 2 CPU cores; with a GPU (the default where there
        // is one) every stage runs there.
        const Device device = common.resolved_device();
        // The inputs first: nothing is touched when they are missing.
        const auto file = [&](const char* name) {
          for (const char* ext : {".gz", ""})
            if (fs::exists(o.data_dir + "/" + name + ext)) return o.data_dir + "/" + name + std::string(ext);
          throw Error(o.data_dir + ": no " + name + "(.gz) (Debian: apt-get install dataset-fashion-mnist)");
        };
        const std::string train_images = file("train-images-idx3-ubyte"), train_labels = file("train-labels-idx1-ubyte"),
                          test_images = file("t10k-images-idx3-ubyte"), test_labels = file("t10k-labels-idx1-ubyte");
        // The demo writes its whole run folder (data/, stage1/, stage2/, the report, results and
        // plots): only into a new or empty folder, or one an earlier demo wrote (its marker file),
        // never over a user's own files.
        {
          std::error_code ec;
          const bool empty_or_new = !fs::exists(o.out) || (fs::is_directory(o.out) && fs::is_empty(o.out, ec));
          if (!empty_or_new && !fs::exists(fs::path(o.out) / ".fgvc-demo"))
            throw Error(o.out + " is not empty and no earlier fgvc-demo wrote it (no .fgvc-demo in it): give --out a "
                        "new or empty folder");
        }
        {
          std::error_code ec;
          fs::create_directories(o.out, ec);
          if (ec) throw Error("--out " + o.out + ": cannot make the folder: " + ec.message());
        }
        const std::string out = fs::canonical(o.out).string();
        const std::string train_dir = out + "/data/train", test_dir = out + "/data/test";
        write_file_atomic((fs::path(out) / ".fgvc-demo").string(),
                          "fgvc-demo's run folder: each run rewrites data/, stage1/, stage2/ and the results here\n");

        // 1. The data: Fashion-MNIST as JPEG folders, long-tailed for training.
        std::printf("== data: Fashion-MNIST from %s as JPEG files\n", o.data_dir.c_str());
        const std::vector<int64_t> want = long_tail_counts(o);
        fs::remove_all(out + "/data");
        const std::vector<int64_t> counts =
            write_folder(train_dir, data::read_idx_images(train_images), data::read_idx_labels(train_labels), want);
        write_folder(test_dir, data::read_idx_images(test_images), data::read_idx_labels(test_labels),
                     std::vector<int64_t>(10, o.test_per_class));
        // A --data-dir with fewer images of a class than the long tail asks for: said, since
        // the imbalance printed below is then not --imbalance's.
        int short_classes = 0, first_short = -1;
        for (int k = 0; k < 10; ++k)
          if (counts[k] < want[k]) short_classes++, first_short = first_short < 0 ? k : first_short;
        if (short_classes)
          warn("%s has fewer images than --largest %lld and --imbalance %g ask for, of %d class(es) (class '%s': %lld "
               "of %lld): the training set below is not that long tail",
               train_images.c_str(), (long long)o.largest, o.imbalance, short_classes, kClasses[first_short],
               (long long)counts[first_short], (long long)want[first_short]);
        const data::Dataset train_set = data::load_dataset(train_dir), test_set = data::load_dataset(test_dir);
        const data::LongTailStats stats = data::long_tail_stats(train_set, o.head_threshold);
        std::printf("training: %zu images, %lld..%lld per class (imbalance %.0f), %lld head / %lld tail classes "
                    "(head: >= %lld images); test: %zu images\n",
                    train_set.samples.size(), (long long)stats.largest, (long long)stats.smallest, stats.imbalance,
                    (long long)stats.head_classes, (long long)stats.tail_classes, (long long)o.head_threshold,
                    test_set.samples.size());

        // 2. Stage 1 on everything; stage 2 on the balanced subset from stage 1's weights.
        train::TrainConfig c;
        c.model = o.model;
        c.input_size = o.input_size;
        c.batch_size = o.batch_size;
        c.workers = o.workers;
        c.seed = o.seed;
        c.color_distort = false;  // gray images: no saturation to distort
        c.min_crop_area = 0.5;    // 28 px images: keep most of the garment
        c.plots = false;
        c.log_every = 10;
        const std::string stage1 = out + "/stage1", stage2 = out + "/stage2";
        fs::remove_all(stage1);
        fs::remove_all(stage2);
        c.data = train_dir;
        c.out = stage1;
        c.epochs = o.epochs1;
        c.lr = o.lr1;
        std::printf("== stage 1: %s on the long-tailed set, %lld epochs (on %s)\n", o.model.c_str(),
                    (long long)o.epochs1, device.str().c_str());
        double t = seconds();
        train::train_model(c, device);
        StageResult s1 = evaluate_stage(stage1, o, test_set, counts, device);
        s1.seconds = seconds() - t;
        std::printf("stage 1, test accuracy (%lld images, %.0f s):\n%s", (long long)s1.eval.images, s1.seconds,
                    accuracy_table({{"stage 1 (long-tailed)", &s1}}).c_str());

        fs::create_directories(stage2);
        const data::Dataset subset = data::balanced_subset(train_set, o.max_per_class, o.seed);
        write_list_file(stage2 + "/balanced.txt", subset);
        c.data = stage2 + "/balanced.txt";
        c.out = stage2;
        c.epochs = o.epochs2;
        c.lr = o.lr2;
        c.init = stage1 + "/last.safetensors";
        std::printf("== stage 2: fine-tune on the balanced subset (%zu images, at most %lld per class), %lld epochs, "
                    "lr %g\n",
                    subset.samples.size(), (long long)o.max_per_class, (long long)o.epochs2, o.lr2);
        t = seconds();
        train::train_model(c, device);
        StageResult s2 = evaluate_stage(stage2, o, test_set, counts, device);
        s2.seconds = seconds() - t;
        std::printf("stage 2, test accuracy (%.0f s):\n%s", s2.seconds,
                    accuracy_table({{"stage 2 (balanced fine-tuning)", &s2}}).c_str());

        const std::string table =
            accuracy_table({{"stage 1 (long-tailed)", &s1}, {"stage 2 (balanced fine-tuning)", &s2}});
        std::printf("== test accuracy before and after stage 2 (%lld images)\n%s", (long long)s1.eval.images,
                    table.c_str());

        // 3. Class-mean features of the training set (stage 2 model), EMD similarity, selection.
        auto model = stage_model(stage2, o, device);
        data::Loader feature_loader(train_set, eval_options(o));
        emd::Domain all = train::class_mean_features(*model, feature_loader, device);
        emd::save_domain(out + "/fashion_mnist.safetensors", all, o.model, "global average pool (penultimate)");
        std::vector<emd::Domain> groups;
        std::vector<std::string> group_names;
        for (const auto& [name, rows] : kGroups) groups.push_back(pick(all, rows, name)), group_names.push_back(name);
        std::vector<std::vector<double>> sim(groups.size(), std::vector<double>(groups.size())), emd_values = sim;
        for (size_t i = 0; i < groups.size(); ++i)
          for (size_t j = 0; j < groups.size(); ++j) {
            const emd::Similarity r = emd::domain_similarity(groups[i], groups[j], o.gamma);
            sim[i][j] = r.similarity;
            emd_values[i][j] = r.emd;
          }
        std::ostringstream sim_table;
        sim_table << "| similarity (EMD) |";
        for (auto& n : group_names) sim_table << " " << n << " |";
        sim_table << "\n|---|";
        for (size_t i = 0; i < groups.size(); ++i) sim_table << "---|";
        sim_table << "\n";
        for (size_t i = 0; i < groups.size(); ++i) {
          sim_table << "| " << group_names[i] << " |";
          for (size_t j = 0; j < groups.size(); ++j) {
            char buf[64];
            std::snprintf(buf, sizeof buf, " %.3f (%.2f) |", sim[i][j], emd_values[i][j]);
            sim_table << buf;
          }
          sim_table << "\n";
        }
        std::printf("== domain similarity exp(-%g EMD) between class groups (class-mean features, weights = "
                    "training counts)\n%s",
                    o.gamma, sim_table.str().c_str());
        // Target: footwear; sources: every other class; the 3 most similar.
        std::vector<int> source_rows;
        for (int r = 0; r < 10; ++r)
          if (std::find(kGroups[1].second.begin(), kGroups[1].second.end(), r) == kGroups[1].second.end())
            source_rows.push_back(r);
        const emd::Domain source = pick(all, source_rows, "not footwear");
        const std::vector<emd::Selected> selected = emd::select_source_classes(source, {groups[1]}, {3}, o.gamma);
        std::ostringstream sel_table;
        sel_table << "| source class | similarity to footwear |\n|---|---|\n";
        json selected_json = json::array();
        for (const auto& s : selected) {
          char buf[32];
          std::snprintf(buf, sizeof buf, "%.4f", s.similarity);
          sel_table << "| " << s.name << " | " << buf << " |\n";
          selected_json.push_back({{"class", s.name}, {"similarity", s.similarity}, {"target", "footwear"}});
        }
        std::printf("== greedy source selection for the target group 'footwear' (top 3 of the other classes)\n%s",
                    sel_table.str().c_str());

        // 4. Report: plots, report.md, results.json.
        train::PlotOptions plot_options;
        plot_options.one_after_another = true;  // stage 2 goes on from stage 1
        plot_options.evaluated_on = "test";
        const std::string plots = train::make_plots({stage1, stage2}, out, plot_options);
        std::vector<int64_t> test_counts = test_set.counts();
        const auto [fewest, most] = std::minmax_element(test_counts.begin(), test_counts.end());
        const std::string test_per_class = *fewest == *most ? std::to_string(*most) + " per class"
                                                            : std::to_string(*fewest) + " to " + std::to_string(*most) +
                                                                  " per class";
        std::ostringstream md;
        md << "# fgvc demo: Fashion-MNIST, long-tailed\n\n"
           << "Training set: " << train_set.samples.size() << " JPEG images written from Fashion-MNIST, "
           << stats.largest << " to " << stats.smallest << " per class (imbalance " << stats.imbalance
           << "); head classes have at least " << o.head_threshold << " training images. Test set: "
           << test_set.samples.size() << " images, " << test_per_class << ". Model: " << o.model
           << " at " << o.input_size << " px, RMSProp (TF-slim defaults), label smoothing 0.1.\n\n"
           << "| class | training images |\n|---|---|\n";
        for (int k = 0; k < 10; ++k) md << "| " << kClasses[k] << " | " << counts[k] << " |\n";
        md << "\n## Stage 1 and stage 2 (the paper's Table 4 shape)\n\n"
           << "Stage 1: " << o.epochs1 << " epochs on the long-tailed set, lr " << o.lr1 << ". Stage 2: "
           << o.epochs2 << " epochs on a balanced subset (at most " << o.max_per_class << " per class, "
           << subset.samples.size() << " images) from stage 1's weights, lr " << o.lr2 << ".\n\n"
           << table << (plots.empty() ? "\n![per-class accuracy](per_class.png)\n\n![training loss](loss.png)\n\n"
                                           "![training and test top-1](accuracy.png)\n\n"
                                         : "\n")
           << "## Domain similarity (EMD between class-mean features)\n\n" << sim_table.str()
           << "\n## Source selection for the target 'footwear'\n\n" << sel_table.str() << "\n"
           << "Total time: " << std::llround(seconds()) << " s on "
           << (device.is_cuda() ? "the GPU (" + device.str() + ")" : std::string("the CPU")) << ".\n";
        if (!plots.empty()) md << "\n(" << plots << ")\n";
        write_file_atomic(out + "/report.md", md.str());
        json results = {{"stage1", stage_json(s1)},
                        {"stage2", stage_json(s2)},
                        {"counts", counts},
                        {"classes", std::vector<std::string>(kClasses, kClasses + 10)},
                        {"head_threshold", o.head_threshold},
                        {"similarity", {{"groups", group_names}, {"matrix", sim}, {"emd", emd_values}, {"gamma", o.gamma}}},
                        {"selected", selected_json},
                        {"device", device.str()},
                        {"seconds", seconds()}};
        write_file_atomic(out + "/results.json", results.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
        if (!plots.empty()) std::printf("%s\n", plots.c_str());
        std::printf("report: %s/report.md\n", out.c_str());
        return results;
      });
}
