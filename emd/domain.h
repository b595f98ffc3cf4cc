// Domains and the paper's domain similarity (section 4 of Cui et al. 2018).
// A domain is a set of classes, each with the mean feature of its images and its image
// count; weights are the counts normalised to sum 1. The similarity of two domains is
// exp(-gamma * EMD) with Euclidean ground distances between class means; source classes
// for a target are selected greedily by the similarity of each single source class to
// the target.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "emd/transport_simplex.h"
#include "tensor/tensor.h"

namespace fgvc {
namespace emd {

struct Domain {
  Tensor features;                  // [m, d] float32 or float64
  std::vector<double> counts;       // m image counts (weights before normalisation)
  std::vector<std::string> classes; // m names
  std::string name;                 // where it came from (file path), for messages
};

// Domain files (SPEC.md section 5): safetensors with `features` F32/F64 [m, d], `counts` I64
// [m], metadata {"classes": JSON list, "model": ..., "layer": ...}. Loading validates
// everything and throws an Error naming the file: non-finite features, negative or all-zero
// counts, an empty domain, missing tensors, a mismatched class list.
Domain load_domain(const std::string& path);
void save_domain(const std::string& path, const Domain& domain, const std::string& model = "",
                 const std::string& layer = "");
void validate_domain(const Domain& domain);

struct Similarity {
  double emd = 0, similarity = 0;
  int64_t iterations = 0;
  double seconds = 0;           // distances + solve
  double solve_seconds = 0;
};

// sim(S, T) = exp(-gamma * EMD(S, T)). Distances and the simplex run on `device` (a CUDA
// device: cuBLAS distances and the GPU solver).
Similarity domain_similarity(const Domain& source, const Domain& target, double gamma = 0.01,
                             Device device = Device::cpu(), const Options& options = {});
// One source against many targets; on a CUDA device all solves share one launch (the
// batched solver), or with options.pricing = Pricing::Rows run one after another, each by
// passes on the GPU and pivots on the host (solve_cuda). `seconds` is the whole call's time,
// `solve_seconds` the solver's.
std::vector<Similarity> domain_similarities(const Domain& source, const std::vector<Domain>& targets,
                                            double gamma = 0.01, Device device = Device::cpu(),
                                            const Options& options = {});

struct Selected {
  int64_t index;          // source class
  std::string name;
  double similarity;      // sim({(s_i, 1)}, target)
  std::string target;     // the target that selected it (the most similar one if several)
  double emd = 0;         // EMD({(s_i, 1)}, target): the ranking (similarity may round to 0 or 1)
};

// For each target t, the k_t source classes with the highest sim({(s_i, 1)}, T_t) (a
// single source class: the EMD is the weighted mean distance to the target's classes),
// ranked by that EMD; classes with count 0 are never selected (a k_t above the classes with
// images is an error). The union over targets, most similar first.
std::vector<Selected> select_source_classes(const Domain& source, const std::vector<Domain>& targets,
                                            const std::vector<int64_t>& k_per_target, double gamma = 0.01,
                                            Device device = Device::cpu());

}  // namespace emd
}  // namespace fgvc
