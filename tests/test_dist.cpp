// Data parallelism without MPI: the sampler's partition, per-rank loaders that together give
// one big batch, and the gradient reducer's buckets and overlap in a world of one. The
// multi-process cases run under mpirun (test_dist_mpi.cpp).
#include <algorithm>
#include <cstdlib>
#include <set>

#include "autograd/gradcheck.h"
#include "autograd/nn_ops.h"
#include "autograd/ops.h"
#include "data/loader.h"
#include "data/subset.h"
#include "dist/communicator.h"
#include "dist/gradient_reducer.h"
#include "nn/layers.h"
#include "image_files.h"
#include "test_util.h"

namespace fgvc {
namespace {

// The local rank and size from the launcher's variables (Open MPI's, MPICH's, PMI's, Slurm's),
// which decide a process's GPU before MPI starts. Slurm lists tasks per node as "2(x3),1".
TEST(Dist, LocalRankAndSizeFromTheLauncher) {
  ASSERT_EQ(std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE"), nullptr) << "run outside mpirun";
  // The launcher variables this test sets or the library reads, set aside (ctest may run inside
  // a Slurm job or an MPICH environment) and put back at the end.
  const char* const kLauncherVariables[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK",
                                            "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS",
                                            "PMI_LOCAL_SIZE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
                                            "SLURM_NODEID"};
  std::vector<std::pair<std::string, std::string>> saved;
  for (const char* name : kLauncherVariables)
    if (const char* v = std::getenv(name)) saved.emplace_back(name, v);
  for (const char* name : kLauncherVariables) unsetenv(name);
  struct Restore {
    const std::vector<std::pair<std::string, std::string>>& saved;
    ~Restore() {
      for (const auto& [name, value] : saved) setenv(name.c_str(), value.c_str(), 1);
    }
  } restore{saved};
  EXPECT_EQ(dist::local_size_from_environment(), 0);
  setenv("SLURM_LOCALID", "3", 1);
  EXPECT_EQ(dist::local_rank_from_environment(), 3);
  setenv("SLURM_STEP_TASKS_PER_NODE", "2(x3),1,4", 1);
  for (const auto& [node, tasks] : std::vector<std::pair<const char*, int>>{{"0", 2}, {"2", 2}, {"3", 1}, {"4", 4}, {"5", 0}}) {
    setenv("SLURM_NODEID", node, 1);
    EXPECT_EQ(dist::local_size_from_environment(), tasks) << "node " << node;
  }
  setenv("SLURM_STEP_TASKS_PER_NODE", "8", 1);
  setenv("SLURM_NODEID", "0", 1);
  EXPECT_EQ(dist::local_size_from_environment(), 8);
  setenv("SLURM_STEP_TASKS_PER_NODE", "garbage", 1);
  EXPECT_EQ(dist::local_size_from_environment(), 0);
  setenv("PMI_LOCAL_SIZE", "5", 1);  // an MPI launcher's own variable comes first
  EXPECT_EQ(dist::local_size_from_environment(), 5);
  for (const char* name : {"SLURM_LOCALID", "SLURM_STEP_TASKS_PER_NODE", "SLURM_NODEID", "PMI_LOCAL_SIZE"}) unsetenv(name);
  EXPECT_EQ(dist::local_rank_from_environment(), 0);
}

// srun --mpi=none starts its tasks without MPI's variables: each would train alone and all
// would write one --out. Refused; one task (a plain run inside a job) is a run of one.
TEST(Dist, SrunTasksWithoutMpiAreRefused) {
  ASSERT_FALSE(dist::launched_by_mpi()) << "run outside mpirun";
  const char* before = std::getenv("SLURM_STEP_NUM_TASKS");
  const std::string saved = before ? before : "";
  setenv("SLURM_STEP_NUM_TASKS", "4", 1);
  try {
    dist::make_communicator(Device::cpu());
    ADD_FAILURE() << "4 srun tasks without MPI were taken as one run";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("srun started 4 tasks without MPI's variables"), std::string::npos)
        << e.what();
  }
  setenv("SLURM_STEP_NUM_TASKS", "1", 1);
  EXPECT_EQ(dist::make_communicator(Device::cpu())->size(), 1);
  if (before) setenv("SLURM_STEP_NUM_TASKS", saved.c_str(), 1);
  else unsetenv("SLURM_STEP_NUM_TASKS");
}

TEST(Dist, RankSharesCoverTheOrderExactlyOnce) {
  const std::vector<int64_t> order = data::shuffled_order(103, 5, 2);
  for (int world : {1, 2, 3, 8}) {
    std::multiset<int64_t> seen;
    for (int r = 0; r < world; ++r) {
      const std::vector<int64_t> share = data::rank_share(order, r, world);
      EXPECT_LE(share.size(), order.size() / world + 1);
      seen.insert(share.begin(), share.end());
    }
    EXPECT_EQ(seen, std::multiset<int64_t>(order.begin(), order.end())) << world;
  }
  EXPECT_THROW(data::rank_share(order, 2, 2), Error);
}

// Batch b of rank 0 and rank 1 (batch B each) hold together batch b of one process with 2B.
TEST(Dist, RankLoadersTogetherMakeTheBigBatch) {
  const std::string dir = ::testing::TempDir() + "/fgvc_dist_loaders";
  testing::write_class_folder(dir + "/data", {9, 8, 7}, 16, 3);
  const data::Dataset d = data::load_dataset(dir + "/data");
  data::LoaderOptions big;
  big.batch_size = 6;
  big.size = 8;
  big.drop_last = true;
  big.seed = 4;
  data::Loader whole(d, big);
  std::vector<std::unique_ptr<data::Loader>> ranks;
  for (int r = 0; r < 2; ++r) {
    data::LoaderOptions o = big;
    o.batch_size = 3;
    o.rank = r;
    o.world_size = 2;
    ranks.push_back(std::make_unique<data::Loader>(d, o));
  }
  EXPECT_EQ(ranks[0]->batches_per_epoch(), whole.batches_per_epoch());
  EXPECT_EQ(ranks[1]->batches_per_epoch(), whole.batches_per_epoch());
  for (uint64_t epoch : {0, 1}) {
    whole.start_epoch(epoch);
    for (auto& l : ranks) l->start_epoch(epoch);
    data::Batch w, a, b;
    while (whole.next(&w)) {
      ASSERT_TRUE(ranks[0]->next(&a));
      ASSERT_TRUE(ranks[1]->next(&b));
      std::vector<int64_t> both = a.indices;
      both.insert(both.end(), b.indices.begin(), b.indices.end());
      std::sort(both.begin(), both.end());
      std::vector<int64_t> want = w.indices;
      std::sort(want.begin(), want.end());
      EXPECT_EQ(both, want);
      // The same sample gets the same augmentation in either arrangement.
      const size_t j = std::find(w.indices.begin(), w.indices.end(), a.indices[0]) - w.indices.begin();
      EXPECT_EQ(testing::rel_error(a.images.slice(0, 0, 1), w.images.slice(0, static_cast<int64_t>(j), static_cast<int64_t>(j) + 1)), 0.0);
    }
    EXPECT_FALSE(ranks[0]->next(&a));
  }
}

// World of one: gradients come back unchanged, buckets respect the size, and every bucket's
// reduction starts during backward (the overlap), last layers first.
TEST(Dist, ReducerBucketsAndStartsDuringBackward) {
  manual_seed(2);
  nn::Linear a(32, 64), b(64, 64), c(64, 10);
  optim::NamedTensors params;
  for (auto* m : {&a, &b, &c})
    for (auto& [n, t] : m->named_parameters()) params.emplace_back(n, t);
  auto comm = dist::single_process();
  dist::GradientReducer reducer(*comm, params, /*bucket_bytes=*/1024);
  EXPECT_GE(reducer.buckets(), 3u);
  const Tensor x = testing::randn_t({5, 32}, 1);
  auto loss = [&] { return sum(square(c.forward(relu(b.forward(relu(a.forward(x))))))); };
  backward(loss());
  std::vector<Tensor> want;
  for (auto& [n, t] : params) want.push_back(t.grad().clone()), t.zero_grad();
  reducer.prepare();
  backward(loss());
  EXPECT_EQ(reducer.started_early(), reducer.buckets());
  reducer.finish();
  for (size_t i = 0; i < params.size(); ++i) EXPECT_EQ(testing::rel_error(params[i].second.grad(), want[i]), 0.0) << i;
  // A parameter outside the graph (on every rank) keeps no gradient: the optimizer skips it.
  for (auto& [n, t] : params) t.zero_grad();
  reducer.prepare();
  backward(sum(square(relu(b.forward(relu(a.forward(x)))))));  // c unused
  reducer.finish();
  EXPECT_FALSE(c.weight.grad().defined());
  EXPECT_FALSE(c.bias.grad().defined());
  EXPECT_TRUE(a.weight.grad().defined());
}

// Synchronised batch norm with a world of one (the sum over ranks is the identity) is batch
// norm: same output, gradients and running statistics; and its backward passes a gradient check.
TEST(Dist, SyncedBatchNormIsBatchNormOverTheRanksBatches) {
  const Tensor x0 = kernels::add(testing::randn_t({4, 3, 5, 5}, 1, DType::Float64), Tensor::scalar(1.5, DType::Float64));
  const Tensor g0 = testing::randn_t({3}, 2, DType::Float64), b0 = testing::randn_t({3}, 3, DType::Float64);
  const Tensor dy = testing::randn_t({4, 3, 5, 5}, 4, DType::Float64);
  std::vector<Tensor> outs[2];
  for (int synced = 0; synced < 2; ++synced) {
    if (synced) set_batch_norm_all_reduce([](Tensor&) {});
    Tensor x = x0.clone().set_requires_grad(true), g = g0.clone().set_requires_grad(true), b = b0.clone().set_requires_grad(true);
    Tensor rm = Tensor::zeros({3}, DType::Float64), rv = Tensor::ones({3}, DType::Float64);
    const Tensor y = batch_norm(x, g, b, rm, rv, true, 0.1, 1e-3);
    backward(sum(mul(y, dy)));
    outs[synced] = {y, x.grad(), g.grad(), b.grad(), rm, rv};
    set_batch_norm_all_reduce(nullptr);
  }
  for (size_t i = 0; i < outs[0].size(); ++i) EXPECT_LT(testing::rel_error(outs[1][i], outs[0][i]), 1e-12) << i;
  set_batch_norm_all_reduce([](Tensor&) {});
  const GradcheckResult r = gradcheck(
      [](const std::vector<Tensor>& in) {
        Tensor rm = Tensor::zeros({3}, DType::Float64), rv = Tensor::ones({3}, DType::Float64);
        return batch_norm(in[0], in[1], in[2], rm, rv, true, 0.1, 1e-3);
      },
      {x0, g0, b0});
  set_batch_norm_all_reduce(nullptr);
  EXPECT_TRUE(r.ok) << r.message;
  // Two ranks holding the same batch, the other one simulated by the all-reduce (doubling each
  // sum): batch norm over the two batches side by side. The output, running statistics and
  // x's gradient (of the ranks' summed loss) are the first half of plain batch norm's on the
  // doubled batch; gamma's and beta's stay local (half of it: the reducer averages them).
  int calls = 0;
  set_batch_norm_all_reduce([&calls](Tensor& t) {
    ++calls;
    t = kernels::binary(kernels::BinaryOp::Mul, t, 2.0);
  });
  Tensor x = x0.clone().set_requires_grad(true), g = g0.clone().set_requires_grad(true), b = b0.clone().set_requires_grad(true);
  Tensor rm = Tensor::zeros({3}, DType::Float64), rv = Tensor::ones({3}, DType::Float64);
  const Tensor y = batch_norm(x, g, b, rm, rv, true, 0.1, 1e-3);
  backward(sum(mul(y, dy)));
  set_batch_norm_all_reduce(nullptr);
  EXPECT_EQ(calls, 3);  // the sums and the squares forward, the gradient sums backward
  Tensor x2 = kernels::concat({x0, x0}, 0).set_requires_grad(true), g2 = g0.clone().set_requires_grad(true),
         b2 = b0.clone().set_requires_grad(true);
  Tensor rm2 = Tensor::zeros({3}, DType::Float64), rv2 = Tensor::ones({3}, DType::Float64);
  const Tensor y2 = batch_norm(x2, g2, b2, rm2, rv2, true, 0.1, 1e-3);
  backward(sum(mul(y2, kernels::concat({dy, dy}, 0))));
  EXPECT_LT(testing::rel_error(y, y2.slice(0, 0, 4)), 1e-12);
  EXPECT_LT(testing::rel_error(x.grad(), x2.grad().slice(0, 0, 4)), 1e-12);
  EXPECT_LT(testing::rel_error(rm, rm2), 1e-12);
  EXPECT_LT(testing::rel_error(rv, rv2), 1e-12);  // unbiased over 2 x 100 values per channel
  EXPECT_LT(testing::rel_error(kernels::binary(kernels::BinaryOp::Mul, g.grad(), 2.0), g2.grad()), 1e-12);
  EXPECT_LT(testing::rel_error(kernels::binary(kernels::BinaryOp::Mul, b.grad(), 2.0), b2.grad()), 1e-12);
}


// 16-bit activations under synchronised batch norm: the statistics in float32, the output in
// the activations' dtype, as plain batch norm gives it (the next layer expects its dtype).
TEST(Dist, SyncedBatchNormKeeps16BitActivationsIn16Bits) {
  struct Synced {  // a world of one, reset however the test ends
    Synced() { set_batch_norm_all_reduce([](Tensor&) {}); }
    ~Synced() { set_batch_norm_all_reduce(nullptr); }
  };
  for (const DType dt : {DType::BFloat16, DType::Float16}) {
    const Tensor x = kernels::add(testing::randn_t({4, 3, 5, 5}, 1), Tensor::scalar(1.5)).to(dt);
    const Tensor g = testing::randn_t({3}, 2), b = testing::randn_t({3}, 3);
    Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3}), rm_s = Tensor::zeros({3}), rv_s = Tensor::ones({3});
    const Tensor plain = batch_norm(x, g, b, rm, rv, true, 0.1, 1e-3);
    Tensor synced;
    {
      const Synced world_of_one;
      synced = batch_norm(x, g, b, rm_s, rv_s, true, 0.1, 1e-3);
    }
    EXPECT_EQ(plain.dtype(), dt);
    EXPECT_EQ(synced.dtype(), dt) << dtype_name(dt);
    EXPECT_EQ(synced.shape(), plain.shape());
    EXPECT_LT(testing::rel_error(synced, plain), 1e-2) << dtype_name(dt);
    EXPECT_LT(testing::rel_error(rm_s, rm), 1e-5) << dtype_name(dt);
    EXPECT_LT(testing::rel_error(rv_s, rv), 1e-5) << dtype_name(dt);
  }
}

}  // namespace
}  // namespace fgvc
