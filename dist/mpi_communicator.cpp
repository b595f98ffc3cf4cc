// The MPI communicator (CPU tensors): non-blocking collectives completed by polling with a
// deadline, so a dead or stuck rank turns into an error here rather than a hang.
#include <mpi.h>

#include <cstdlib>
#include <mutex>
#include <utility>
#include <vector>

#include "dist/communicator.h"
#include "dist/mpi_environment.h"
#include "tensor/error.h"

namespace fgvc {
namespace dist {

namespace {

MPI_Datatype mpi_type(DType t, const char* op) {
  switch (t) {
    case DType::Float32: return MPI_FLOAT;
    case DType::Float64: return MPI_DOUBLE;
    case DType::Int64: return MPI_INT64_T;
    default: throw Error(std::string(op) + ": MPI collectives take float32, float64 or int64, got " + dtype_name(t));
  }
}

// A collective given up on (its deadline passed, or an error elsewhere ended the wait) may
// still write into its buffer whenever the other ranks get to it: the request and the buffer's
// storage are kept until the process ends, so that nothing freed (and reused) is written.
void abandon(MPI_Request request, const Tensor& buffer) {
  static std::mutex mu;
  static auto* kept = new std::vector<std::pair<MPI_Request, Tensor>>();  // never freed, by design
  std::lock_guard<std::mutex> lock(mu);
  kept->emplace_back(request, buffer);
}

class MpiPending : public Communicator::Pending {
 public:
  MpiPending(MPI_Request request, const Tensor& buffer, const char* op) : request_(request), buffer_(buffer), op_(op) {}
  ~MpiPending() override {
    if (request_ == MPI_REQUEST_NULL) return;
    int done = 0;
    MPI_Test(&request_, &done, MPI_STATUS_IGNORE);
    if (!done) abandon(request_, buffer_);
  }
  void wait() override { wait_for(&request_, op_); }

 private:
  MPI_Request request_;
  Tensor buffer_;  // what the collective writes into: alive as long as it may be written
  const char* op_;
};

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator() : env_(MpiEnvironment::get()) {}
  int rank() const override { return env_.rank(); }
  int size() const override { return env_.size(); }
  int local_rank() const override { return env_.local_rank(); }
  std::string backend() const override { return "mpi"; }

  std::unique_ptr<Pending> all_reduce_sum_async(Tensor& t) override {
    check(t, "all_reduce");
    t.bump_version();  // written in place
    MPI_Request request;
    FGVC_CHECK(MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.dtype(), "all_reduce"),
                              MPI_SUM, MPI_COMM_WORLD, &request) == MPI_SUCCESS,
               "all_reduce", "MPI_Iallreduce failed");
    return std::make_unique<MpiPending>(request, t, "all_reduce");
  }
  void broadcast(Tensor& t, int root) override {
    check(t, "broadcast");
    t.bump_version();  // written in place
    MPI_Request request;
    FGVC_CHECK(MPI_Ibcast(t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.dtype(), "broadcast"), root,
                          MPI_COMM_WORLD, &request) == MPI_SUCCESS,
               "broadcast", "MPI_Ibcast failed");
    MpiPending(request, t, "broadcast").wait();
  }
  void barrier() override {
    MPI_Request request;
    FGVC_CHECK(MPI_Ibarrier(MPI_COMM_WORLD, &request) == MPI_SUCCESS, "barrier", "MPI_Ibarrier failed");
    wait_for(&request, "barrier");
  }
  [[noreturn]] void abort(int code) noexcept override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  static void check(const Tensor& t, const char* op) {
    FGVC_CHECK(t.device().is_cpu() && t.is_contiguous(), op, "the MPI backend takes contiguous CPU tensors, got ",
               t.device().str());
    FGVC_CHECK(t.numel() <= 2147483647, op, t.numel(), " elements is more than one MPI call takes");
  }
  MpiEnvironment& env_;
};

}  // namespace

namespace detail {
std::unique_ptr<Communicator> make_mpi_communicator() { return std::make_unique<MpiCommunicator>(); }
}  // namespace detail

}  // namespace dist
}  // namespace fgvc
