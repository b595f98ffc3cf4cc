#include "train/plots.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "train/chart.h"

namespace fgvc {
namespace train {

namespace fs = std::filesystem;

std::vector<std::vector<std::string>> read_csv(std::istream& in) {
  std::vector<std::vector<std::string>> records;
  std::vector<std::string> fields(1);
  bool quoted = false, any = false;
  for (char ch; in.get(ch);) {
    any = true;
    if (quoted && ch == '"' && in.peek() == '"') fields.back() += '"', in.get();
    else if (ch == '"') quoted = !quoted;
    else if (ch == ',' && !quoted) fields.emplace_back();
    else if ((ch == '\n' || ch == '\r') && !quoted) {
      if (ch == '\r' && in.peek() == '\n') in.get();
      records.push_back(std::move(fields));
      fields.assign(1, std::string());
      any = false;
    } else fields.back() += ch;
  }
  if (any) records.push_back(std::move(fields));
  return records;
}

namespace {

// One colour per run.
const Rgb kColors[] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}};

struct Metrics {
  std::vector<double> step, loss, val_step, top1, top5;  // top1/top5 in percent
  std::vector<double> train_step, train_top1;            // the epochs' training top-1, in percent
};

// A field's number, or NaN where the line lacks it or holds something else.
double number(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : NAN;
}

// False when the run has no metrics.jsonl. Lines that are not what training writes (one cut
// short by a crash, say) are passed over: the plots show the rest.
bool read_metrics(const std::string& run, Metrics* m) {
  std::ifstream in(fs::path(run) / "metrics.jsonl");
  if (!in) return false;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("kind") || !j["kind"].is_string()) continue;
    const std::string kind = j["kind"].get<std::string>();
    const double step = number(j, "step");
    if (kind == "step" && std::isfinite(step)) {
      m->step.push_back(step);
      m->loss.push_back(number(j, "loss"));
    } else if (kind == "epoch" && std::isfinite(step)) {
      if (std::isfinite(number(j, "val_top1"))) {
        m->val_step.push_back(step);
        m->top1.push_back(100 * number(j, "val_top1"));
        m->top5.push_back(100 * number(j, "val_top5"));
      }
      if (std::isfinite(number(j, "train_top1"))) {  // absent in runs of before 2026-11-27
        m->train_step.push_back(step);
        m->train_top1.push_back(100 * number(j, "train_top1"));
      }
    }
  }
  return true;
}

struct ClassRow {
  std::string name;
  double train_images, top1;
};

// per_class.csv (train/evaluate.h): class,train_images,val_images,top1,top5, names CSV-quoted.
std::vector<ClassRow> read_per_class(const std::string& run) {
  std::vector<ClassRow> rows;
  std::ifstream in(fs::path(run) / "per_class.csv");
  const std::vector<std::vector<std::string>> records = read_csv(in);
  for (size_t r = 1; r < records.size(); ++r) {  // after the header
    const std::vector<std::string>& fields = records[r];
    if (fields.size() < 4 || fields[1].empty()) continue;  // no training counts: nothing to sort by
    try {
      // A class without validation images has no accuracy: a gap in the curve, not 0%.
      const double top1 = std::stod(fields[2]) > 0 ? 100 * std::stod(fields[3]) : NAN;
      rows.push_back({fields[0], std::stod(fields[1]), top1});
    } catch (const std::exception&) {
      continue;
    }
  }
  return rows;
}

// A run's name in a legend: its folder's ("runs/stage1/" -> "stage1").
std::string label(const std::string& run) {
  fs::path p = fs::path(run).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

}  // namespace

std::string make_plots(const std::string& run_dir) { return make_plots(std::vector<std::string>{run_dir}, run_dir); }

std::string make_plots(const std::vector<std::string>& run_dirs, const std::string& out_dir,
                       const PlotOptions& options) {
  std::string error;
  const bool several = run_dirs.size() > 1;
  std::vector<Metrics> metrics(run_dirs.size());
  for (size_t r = 0; r < run_dirs.size(); ++r)
    if (!read_metrics(run_dirs[r], &metrics[r])) return "plots: no metrics.jsonl in " + run_dirs[r];
  if (options.one_after_another) {
    double offset = 0;  // the steps of the runs before
    for (Metrics& m : metrics) {
      double last = 0;
      for (std::vector<double>* steps : {&m.step, &m.val_step, &m.train_step})
        for (double& s : *steps) last = std::max(last, s), s += offset;
      offset += last;
    }
  }
  const std::string& eval = options.evaluated_on;

  Chart loss(720, 440);
  loss.set_labels("step", "training loss");
  for (size_t r = 0; r < run_dirs.size(); ++r)
    loss.line(metrics[r].step, metrics[r].loss, kColors[r % 4], several ? label(run_dirs[r]) : "");
  if (!loss.write_png((fs::path(out_dir) / "loss.png").string(), &error)) return "plots: " + error;

  // Validation top-1 and top-5 where the run had --val; each epoch's training top-1 (its
  // batches as trained on: augmented, in training mode) in a lighter shade beside them, or alone.
  bool any_accuracy = false;
  for (const Metrics& m : metrics) any_accuracy = any_accuracy || !m.top1.empty() || !m.train_top1.empty();
  if (any_accuracy) {
    Chart acc(720, 440);
    acc.set_labels("step", "accuracy (%)");
    for (size_t r = 0; r < run_dirs.size(); ++r) {
      const std::string name = several ? label(run_dirs[r]) + " " : "";
      if (!metrics[r].top1.empty()) {
        acc.line(metrics[r].val_step, metrics[r].top1, kColors[r % 4], name + eval + " top-1", true);
        acc.line(metrics[r].val_step, metrics[r].top5, kColors[r % 4], name + eval + " top-5", true, true);
      }
      if (!metrics[r].train_top1.empty()) {
        const Rgb c = kColors[r % 4], light{static_cast<uint8_t>((c.r + 255) / 2), static_cast<uint8_t>((c.g + 255) / 2),
                                            static_cast<uint8_t>((c.b + 255) / 2)};
        acc.line(metrics[r].train_step, metrics[r].train_top1, light, name + "training top-1", true);
      }
    }
    if (!acc.write_png((fs::path(out_dir) / "accuracy.png").string(), &error)) return "plots: " + error;
  }

  std::vector<std::vector<ClassRow>> tables;
  std::vector<std::string> table_runs;
  for (const std::string& run : run_dirs) {
    std::vector<ClassRow> rows = read_per_class(run);
    if (!rows.empty()) tables.push_back(std::move(rows)), table_runs.push_back(run);
  }
  if (!tables.empty()) {
    // Classes by the first table's training images, most first (stable: ties keep their order).
    std::vector<ClassRow> order = tables[0];
    std::stable_sort(order.begin(), order.end(), [](const ClassRow& a, const ClassRow& b) { return a.train_images > b.train_images; });
    std::vector<double> counts, x;
    std::vector<std::string> names;
    for (size_t k = 0; k < order.size(); ++k) counts.push_back(order[k].train_images), names.push_back(order[k].name), x.push_back(double(k));
    Chart per_class(840, 460);
    per_class.set_labels("classes, by training images (most first)", eval + " top-1 (%)", "training images per class");
    per_class.set_y_range(0, 100);
    per_class.bars(counts, {217, 217, 217}, "training images");
    if (names.size() <= 40) per_class.set_categories(names);
    for (size_t t = 0; t < tables.size(); ++t) {
      std::map<std::string, double> by_name;
      for (const ClassRow& row : tables[t]) by_name[row.name] = row.top1;
      std::vector<double> top1;
      for (const std::string& n : names) top1.push_back(by_name.count(n) ? by_name[n] : NAN);
      per_class.line(x, top1, kColors[t % 4], (several ? label(table_runs[t]) + " " : "") + "top-1", true);
    }
    if (!per_class.write_png((fs::path(out_dir) / "per_class.png").string(), &error)) return "plots: " + error;
  }
  return "";
}

}  // namespace train
}  // namespace fgvc
