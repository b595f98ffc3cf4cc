#include "emd/domain.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "emd/ground_distance.h"
#include "emd/parallel_each.h"
#include "tensor/safetensors.h"

namespace fgvc {
namespace emd {

namespace {
// validate_domain but for the features' values, which the callers below check through the
// distances instead (an m x n pass, not m x d).
void validate_layout(const Domain& d) {
  const std::string& who = d.name.empty() ? std::string("domain") : d.name;
  FGVC_CHECK(d.features.defined() && d.features.dim() == 2, "domain", who, ": features must be [classes, dim], got ",
             describe(d.features));
  FGVC_CHECK(d.features.dtype() == DType::Float32 || d.features.dtype() == DType::Float64, "domain", who,
             ": features must be F32 or F64, got ", dtype_name(d.features.dtype()));
  const int64_t m = d.features.size(0);
  FGVC_CHECK(m > 0 && d.features.size(1) > 0, "domain", who, ": empty domain (", describe(d.features), ")");
  FGVC_CHECK(static_cast<int64_t>(d.counts.size()) == m, "domain", who, ": ", d.counts.size(), " counts for ", m,
             " classes");
  FGVC_CHECK(static_cast<int64_t>(d.classes.size()) == m, "domain", who, ": ", d.classes.size(), " class names for ",
             m, " classes");
  // Names are what fgvc-select writes, one per class<TAB>similarity<TAB>target line.
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < d.classes.size(); ++i) {
    const std::string& name = d.classes[i];
    FGVC_CHECK(!name.empty(), "domain", who, ": class ", i, " has an empty name");
    FGVC_CHECK(name.find_first_of("\t\r\n") == std::string::npos, "domain", who, ": class ", i,
               " has a tab or a line break in its name");
    const auto [at, fresh] = seen.emplace(name, i);
    FGVC_CHECK(fresh, "domain", who, ": classes ", at->second, " and ", i, " are both named '", name, "'");
  }
  double total = 0;
  for (size_t i = 0; i < d.counts.size(); ++i) {
    FGVC_CHECK(std::isfinite(d.counts[i]) && d.counts[i] >= 0, "domain", who, ": class ", i, " ('", d.classes[i],
               "') has count ", d.counts[i]);
    total += d.counts[i];
  }
  FGVC_CHECK(total > 0, "domain", who, ": all class counts are zero");
}
}  // namespace

void validate_domain(const Domain& d) {
  validate_layout(d);
  const std::string& who = d.name.empty() ? std::string("domain") : d.name;
  const Tensor f = d.features.cpu().contiguous();
  const int64_t dim = d.features.size(1);
  const int64_t n = f.numel();
  // Finite, and small enough that a squared distance stays a float64 number (features are
  // network activations, nowhere near). Every finite float32 is below the limit.
  constexpr double kLargest = 1e150;
  auto check_finite = [&](const auto* p, auto limit) {
    // A branch-free count first, in the features' own type and in blocks with a count of the
    // same width, so that it vectorizes (the whole check of 1000 x 2048 float32: 1.2 ms, against
    // 3.6 ms comparing as float64 into a 64-bit count), then the first bad value is found for the message.
    constexpr int64_t kBlock = 1 << 14;
    int64_t bad = 0;
#pragma omp parallel for reduction(+ : bad) schedule(static) if (n > (1 << 22))
    for (int64_t b = 0; b < n; b += kBlock) {
      const int64_t end = std::min(n, b + kBlock);  // a local: the compiler must know the trip count
      std::conditional_t<sizeof(limit) == 8, int64_t, int32_t> in_block = 0;  // the values' width
      for (int64_t k = b; k < end; ++k) in_block += !(std::fabs(p[k]) <= limit);
      bad += in_block;
    }
    for (int64_t k = 0; bad > 0 && k < n; ++k)
      FGVC_CHECK(std::fabs(p[k]) <= kLargest, "domain", who, ": feature ", k % dim, " of class ", k / dim, " ('",
                 d.classes[k / dim], "') is ", p[k], std::isfinite(p[k]) ? " (beyond 1e150: its squared distances overflow)" : "");
  };
  if (f.dtype() == DType::Float32) check_finite(f.data<float>(), std::numeric_limits<float>::max());
  else check_finite(f.data<double>(), kLargest);
}

Domain load_domain(const std::string& path) {
  const SafetensorsFile file = read_safetensors(path, /*map=*/true);  // features are read once, in place
  Domain d;
  d.name = path;
  const auto f = file.tensors.find("features"), c = file.tensors.find("counts");
  for (const char* name : {"features", "counts"}) {  // of a type fgvc does not hold (I32 counts)
    const auto u = file.unsupported.find(name);
    FGVC_CHECK(u == file.unsupported.end(), "domain", path, ": ", name, " must be ",
               std::string(name) == "counts" ? "I64 [m]" : "F32 or F64 [m, d]", ", got ", u->second);
  }
  FGVC_CHECK(f != file.tensors.end(), "domain", path, ": no 'features' tensor");
  FGVC_CHECK(c != file.tensors.end(), "domain", path, ": no 'counts' tensor");
  FGVC_CHECK(c->second.dim() == 1 && c->second.dtype() == DType::Int64, "domain", path, ": counts must be I64 [m], got ",
             describe(c->second));
  d.features = f->second;
  for (int64_t v : c->second.to_vector<int64_t>()) d.counts.push_back(static_cast<double>(v));
  const auto meta = file.metadata.find("classes");
  if (meta != file.metadata.end()) {
    nlohmann::json names;
    try {
      names = nlohmann::json::parse(meta->second);
    } catch (const nlohmann::json::exception& e) {
      throw Error("domain: " + path + ": metadata 'classes' is not JSON: " + e.what());
    }
    FGVC_CHECK(names.is_array(), "domain", path, ": metadata 'classes' is not a JSON list");
    for (const auto& n : names) {
      FGVC_CHECK(n.is_string(), "domain", path, ": metadata 'classes' holds a non-string");
      d.classes.push_back(n.get<std::string>());
    }
  } else {  // unnamed classes are numbered
    for (size_t i = 0; i < d.counts.size(); ++i) d.classes.push_back(std::to_string(i));
  }
  validate_domain(d);
  return d;
}

void save_domain(const std::string& path, const Domain& d, const std::string& model, const std::string& layer) {
  validate_domain(d);
  std::vector<int64_t> counts;
  for (size_t i = 0; i < d.counts.size(); ++i) {
    // The file holds image counts as I64: a fractional weight would come back rounded.
    FGVC_CHECK(d.counts[i] == std::floor(d.counts[i]) && d.counts[i] < 9007199254740992.0, "domain", path,
               ": class ", i, " ('", d.classes[i], "') has count ", d.counts[i],
               ", not a whole number of images (a domain file holds counts as I64)");
    counts.push_back(static_cast<int64_t>(d.counts[i]));
  }
  write_safetensors(path,
                    {{"features", d.features},
                     {"counts", Tensor::from_vector(counts, {static_cast<int64_t>(counts.size())})}},
                    {{"classes", nlohmann::json(d.classes).dump()}, {"model", model}, {"layer", layer}});
}

namespace {
void check_pair(const Domain& s, const Domain& t) {
  validate_layout(s);
  validate_layout(t);
  FGVC_CHECK(s.features.size(1) == t.features.size(1), "domain_similarity", "feature dimensions differ: ", s.name,
             " has ", s.features.size(1), ", ", t.name, " has ", t.features.size(1));
}

// sim = exp(-gamma * EMD) is a similarity in (0, 1] for gamma >= 0.
void check_gamma(double gamma) {
  FGVC_CHECK(std::isfinite(gamma) && gamma >= 0, "domain_similarity", "gamma ", gamma,
             " must be finite and not negative");
}

// Distances of non-finite features are NaN (or inf): then the domains' own check names the
// class and feature (load_domain has checked files; these may be domains made in memory).
void check_distances(const Tensor& dist, const Domain& s, const Domain& t) {
  const double* p = dist.data<double>();
  bool finite = true;
  for (int64_t k = 0; k < dist.numel(); ++k) finite &= std::isfinite(p[k]);
  if (finite) return;
  validate_domain(s);
  validate_domain(t);
  throw Error("domain_similarity: distances between " + s.name + " and " + t.name + " overflow");
}
}  // namespace

std::vector<Similarity> domain_similarities(const Domain& source, const std::vector<Domain>& targets, double gamma,
                                            Device device, const Options& options) {
  check_gamma(gamma);
  for (const Domain& t : targets) check_pair(source, t);
  const auto t0 = std::chrono::steady_clock::now();
  const Tensor s = source.features.to(device);
  std::vector<Tensor> dist, on_device;  // on the host (for the greedy start), and where computed
  for (const Domain& t : targets) {
    on_device.push_back(pairwise_distances(s, t.features.to(device)));
    dist.push_back(on_device.back().cpu());
    check_distances(dist.back(), source, t);
  }
  std::vector<Result> results;
  if (device.is_cuda() && options.pricing == Pricing::Rows) {  // passes on the GPU, pivots on the host
    for (size_t q = 0; q < targets.size(); ++q)
      results.push_back(solve_cuda(dist[q].data<double>(), dist[q].size(0), dist[q].size(1), source.counts,
                                   targets[q].counts, options, device.index, on_device[q].data<double>()));
  } else if (device.is_cuda()) {  // one launch for all targets, each pricing its distances where they are
    std::vector<Problem> problems;
    for (size_t q = 0; q < targets.size(); ++q)
      problems.push_back({dist[q].data<double>(), dist[q].size(0), dist[q].size(1), source.counts, targets[q].counts,
                          on_device[q].data<double>()});
    results = solve_batch_cuda(problems, options, device.index);
  } else {  // several targets: one per thread at a time (the solver itself is sequential)
    results.resize(targets.size());
    const auto failed = detail::parallel_each(static_cast<int64_t>(targets.size()), [&](int64_t q) {
      results[q] = solve(dist[q].data<double>(), dist[q].size(0), dist[q].size(1), source.counts, targets[q].counts,
                         options);
    });
    if (failed.second) std::rethrow_exception(failed.second);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<Similarity> out;
  for (const Result& r : results) {
    Similarity sim;
    sim.emd = r.cost;
    sim.similarity = std::exp(-gamma * r.cost);
    sim.iterations = r.iterations;
    sim.solve_seconds = r.seconds;
    sim.seconds = seconds;
    out.push_back(sim);
  }
  return out;
}

Similarity domain_similarity(const Domain& source, const Domain& target, double gamma, Device device,
                             const Options& options) {
  return domain_similarities(source, {target}, gamma, device, options).front();
}

std::vector<Selected> select_source_classes(const Domain& source, const std::vector<Domain>& targets,
                                            const std::vector<int64_t>& k_per_target, double gamma, Device device) {
  check_gamma(gamma);
  validate_layout(source);
  FGVC_CHECK(!targets.empty(), "select_source_classes", "no target domain");
  FGVC_CHECK(k_per_target.size() == targets.size(), "select_source_classes", k_per_target.size(), " values of k for ",
             targets.size(), " targets");
  const int64_t m = source.features.size(0);
  int64_t with_images = 0;
  for (double c : source.counts) with_images += c > 0;
  const Tensor source_features = source.features.to(device);  // once, for every target
  std::map<int64_t, Selected> chosen;
  for (size_t t = 0; t < targets.size(); ++t) {
    check_pair(source, targets[t]);
    const int64_t k = k_per_target[t];
    FGVC_CHECK(k >= 0, "select_source_classes", "k = ", k, " for target ", targets[t].name, " is negative");
    FGVC_CHECK(k <= with_images, "select_source_classes", "k = ", k, " for target ", targets[t].name,
               ", but the source ", source.name, " has ", with_images, " classes with images");
    // EMD of a single source class to T: the target-weighted mean distance.
    const Tensor dist = pairwise_distances(source_features, targets[t].features.to(device)).cpu();
    check_distances(dist, source, targets[t]);
    const double* d = dist.data<double>();
    const int64_t n = dist.size(1);
    double total = 0;
    for (double c : targets[t].counts) total += c;
    // Ranked by the EMD itself: exp(-gamma * EMD) rounds to 0 (large gamma) or 1 (tiny
    // gamma) for every class long before the distances stop differing. Classes without
    // images (count 0: no mean feature) are never selected.
    std::vector<double> emd(static_cast<size_t>(m));
    std::vector<int64_t> order;
    for (int64_t i = 0; i < m; ++i) {
      double e = 0;
      for (int64_t j = 0; j < n; ++j) e += targets[t].counts[j] / total * d[i * n + j];
      emd[i] = e;
      if (source.counts[i] > 0) order.push_back(i);
    }
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return emd[x] < emd[y]; });
    for (int64_t r = 0; r < std::min<int64_t>(k, static_cast<int64_t>(order.size())); ++r) {
      const int64_t i = order[r];
      auto it = chosen.find(i);
      if (it == chosen.end() || emd[i] < it->second.emd)
        chosen[i] = {i, source.classes[i], std::exp(-gamma * emd[i]), targets[t].name, emd[i]};
    }
  }
  std::vector<Selected> out;
  for (auto& [i, s] : chosen) out.push_back(s);
  std::stable_sort(out.begin(), out.end(), [](const Selected& x, const Selected& y) { return x.emd < y.emd; });
  return out;
}

}  // namespace emd
}  // namespace fgvc
