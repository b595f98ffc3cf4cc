#include "dist/mpi_environment.h"

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "dist/communicator.h"
#include "tensor/error.h"

namespace fgvc {
namespace dist {

MpiEnvironment& MpiEnvironment::get() {
  static MpiEnvironment env;
  return env;
}

MpiEnvironment::MpiEnvironment() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    FGVC_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) == MPI_SUCCESS, "MPI",
               "MPI_Init_thread failed");
    // The loader's and OpenMP's threads run beside the main thread, which alone calls MPI.
    FGVC_CHECK(provided >= MPI_THREAD_FUNNELED, "MPI", "this MPI gives thread level ", provided,
               ", below MPI_THREAD_FUNNELED (", MPI_THREAD_FUNNELED, ") that training's threads need");
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  // Another MPI's launcher (MPICH's Hydra sets PMI_SIZE, which this build's Open MPI does not
  // read) starts N copies that each find a world of 1: N runs, each rank 0, each writing the
  // same run folder. Only that is refused: Open MPI's own count when it set one, else PMI's
  // (which a Slurm shell can pass on to a correct mpirun's ranks with another value).
  const char* name = std::getenv("OMPI_COMM_WORLD_SIZE") ? "OMPI_COMM_WORLD_SIZE" : "PMI_SIZE";
  const char* launched = std::getenv(name);
  FGVC_CHECK(size_ > 1 || !launched || std::atoi(launched) <= 1, "MPI", "the launcher started ", launched,
             " processes ($", name, ") but MPI sees a world of 1: start the job with the mpirun of the MPI this build links");
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &local_rank_);
  MPI_Comm_free(&local);
}

MpiEnvironment::~MpiEnvironment() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void abort_job(int code) noexcept {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

void wait_for(MPI_Request* request, const char* op) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(collective_timeout_seconds());
  int done = 0;
  for (int spins = 0;; ++spins) {
    FGVC_CHECK(MPI_Test(request, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS, op, "MPI_Test failed");
    if (done) return;
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(std::string(op) + ": timed out after " + std::to_string(static_cast<int>(collective_timeout_seconds())) +
                  " s waiting for the other ranks (did one fail? $FGVC_COLLECTIVE_TIMEOUT sets the limit)");
    if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(200));  // long waits: stop spinning
  }
}

}  // namespace dist
}  // namespace fgvc
