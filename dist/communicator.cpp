#include "dist/communicator.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "fgvc/config.h"
#include "tensor/error.h"

namespace fgvc {
namespace dist {

namespace {

class SingleProcess : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  std::string backend() const override { return "none"; }
  std::unique_ptr<Pending> all_reduce_sum_async(Tensor&) override {
    struct Done : Pending {
      void wait() override {}
    };
    return std::make_unique<Done>();
  }
  void broadcast(Tensor&, int root) override {
    FGVC_CHECK(root == 0, "broadcast", "root ", root, " in a world of 1");
  }
  void barrier() override {}
  [[noreturn]] void abort(int code) noexcept override { std::exit(code); }
};

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

}  // namespace

std::unique_ptr<Communicator> single_process() { return std::make_unique<SingleProcess>(); }

bool launched_by_mpi() { return env("OMPI_COMM_WORLD_SIZE") || env("PMI_SIZE") || env("PMIX_RANK"); }

int local_rank_from_environment() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMI_LOCAL_RANK", "SLURM_LOCALID"})
    if (const char* v = env(name)) return std::atoi(v);
  return 0;
}

// Slurm's tasks per node, "4" or "2(x3),1" (two on each of three nodes, then one), for the
// node numbered SLURM_NODEID; 0 when it does not say.
static int slurm_tasks_on_this_node() {
  const char* list = env("SLURM_STEP_TASKS_PER_NODE");
  if (!list) list = env("SLURM_TASKS_PER_NODE");
  if (!list) return 0;
  const char* id = env("SLURM_NODEID");
  long node = id ? std::atol(id) : 0;
  for (const char* p = list; *p;) {
    char* end = nullptr;
    const long tasks = std::strtol(p, &end, 10);
    if (end == p) return 0;
    long repeat = 1;
    if (std::strncmp(end, "(x", 2) == 0) repeat = std::strtol(end + 2, &end, 10), end += *end == ')';
    if (node < repeat) return static_cast<int>(tasks);
    node -= repeat;
    p = *end == ',' ? end + 1 : end;
  }
  return 0;
}

int local_size_from_environment() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"})
    if (const char* v = env(name)) return std::atoi(v);
  return slurm_tasks_on_this_node();
}

double collective_timeout_seconds() {
  const char* v = env("FGVC_COLLECTIVE_TIMEOUT");
  const double s = v ? std::atof(v) : 600.0;
  return s > 0 ? s : 600.0;
}

std::unique_ptr<Communicator> make_communicator(Device device) {
  if (!launched_by_mpi()) {
    // srun without an MPI plugin (--mpi=none) starts its tasks with no MPI variables: each
    // would be a run of its own, every one writing the same --out.
    const char* tasks = env("SLURM_STEP_NUM_TASKS");
    FGVC_CHECK(!tasks || std::atoi(tasks) <= 1, "distributed training", "srun started ", tasks,
               " tasks without MPI's variables (srun --mpi=none?): each would train alone and write the same --out; "
               "start them with srun --mpi=pmix, or with mpirun");
    return single_process();
  }
  return device.is_cuda() ? detail::make_nccl_communicator(device) : detail::make_mpi_communicator();
}

#if !FGVC_WITH_MPI
void abort_job(int code) noexcept { std::exit(code); }
namespace detail {
std::unique_ptr<Communicator> make_mpi_communicator() {
  throw Error("distributed training: started by mpirun, but this build has no MPI (install libopenmpi-dev, rebuild)");
}
}  // namespace detail
#endif
#if !FGVC_WITH_NCCL
namespace detail {
std::unique_ptr<Communicator> make_nccl_communicator(Device) {
  throw Error("distributed training on CUDA: this build has no NCCL (needs the CUDA toolkit's NCCL and MPI)");
}
}  // namespace detail
#endif

}  // namespace dist
}  // namespace fgvc
