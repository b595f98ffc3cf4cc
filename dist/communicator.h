// Collectives for data-parallel training (one process per GPU, or per CPU slot, started by
// mpirun): sums across ranks, broadcasts, barriers. Three implementations behind one
// interface, chosen by the tensors' device and the environment:
//   SingleProcess  world size 1 (not started by mpirun): every collective is the identity;
//   MPI            CPU tensors: MPI_Allreduce/MPI_Bcast (Open MPI);
//   NCCL           CUDA tensors: ncclAllReduce/ncclBroadcast on the device's stream, the
//                  communicator's unique id broadcast over MPI; device = local rank.
// Every wait has a deadline ($FGVC_COLLECTIVE_TIMEOUT seconds, default 600): a rank that
// died or hangs makes the others fail with an error instead of waiting forever, and a failing
// rank aborts the whole job (abort()).
#pragma once
#include <memory>
#include <string>

#include "tensor/tensor.h"

namespace fgvc {
namespace dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual int local_rank() const = 0;        // among the ranks on this machine
  virtual std::string backend() const = 0;   // "none", "mpi" or "nccl"

  // An operation in flight; wait() completes it (throws after the deadline).
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  // In-place sum over the ranks of a contiguous float32/float64 tensor.
  virtual std::unique_ptr<Pending> all_reduce_sum_async(Tensor& t) = 0;
  void all_reduce_sum(Tensor& t) { all_reduce_sum_async(t)->wait(); }
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job (after an error on this one); never returns.
  [[noreturn]] virtual void abort(int code) noexcept = 0;
};

// World size 1.
std::unique_ptr<Communicator> single_process();
// True when this process was started by mpirun (Open MPI or a PMI launcher).
bool launched_by_mpi();
// The communicator for tensors on `device`: single_process() unless launched_by_mpi(), then
// MPI for the CPU and NCCL for CUDA. Throws when the build lacks the backend needed.
std::unique_ptr<Communicator> make_communicator(Device device);
// The local rank from the launcher's environment (0 when not launched by mpirun): which GPU
// a process uses, decided before any communicator exists.
int local_rank_from_environment();
// The processes on this machine, from the same environment (0 when unknown).
int local_size_from_environment();
double collective_timeout_seconds();
// Ends every process of the job after an error on this one: MPI_Abort once MPI is running,
// otherwise exit(code). Never returns.
[[noreturn]] void abort_job(int code) noexcept;

namespace detail {
std::unique_ptr<Communicator> make_mpi_communicator();
std::unique_ptr<Communicator> make_nccl_communicator(Device device);
}  // namespace detail

}  // namespace dist
}  // namespace fgvc
