// The NCCL communicator (CUDA tensors): one process per GPU, NCCL's unique id sent from rank 0
// over MPI, collectives on the device's stream (so they follow the kernels that produced the
// gradients). wait() polls an event with the collective deadline; on a timeout the NCCL
// communicator is aborted so no kernel waits forever.
// Known limit (to measure in a GPU session): on the compute stream, an all-reduce also delays
// the backward kernels queued after it; a separate communication stream with event waits
// would let them run side by side.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <thread>

#include "dist/communicator.h"
#include "dist/mpi_environment.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/error.h"

#define FGVC_NCCL_CHECK(expr)                                                                               \
  do {                                                                                                      \
    ncclResult_t fgvc_r_ = (expr);                                                                          \
    if (fgvc_r_ != ncclSuccess)                                                                             \
      throw ::fgvc::Error(std::string("NCCL error: ") + #expr + ": " + ncclGetErrorString(fgvc_r_));       \
  } while (0)

namespace fgvc {
namespace dist {

namespace {

ncclDataType_t nccl_type(DType t, const char* op) {
  switch (t) {
    case DType::Float32: return ncclFloat32;
    case DType::Float64: return ncclFloat64;
    case DType::Int64: return ncclInt64;
    case DType::BFloat16: return ncclBfloat16;
    case DType::Float16: return ncclFloat16;
    default: throw Error(std::string(op) + ": NCCL collectives take floating tensors or int64, got " + dtype_name(t));
  }
}

class NcclCommunicator : public Communicator {
 public:
  explicit NcclCommunicator(Device device) : env_(MpiEnvironment::get()), device_(device.index) {
    // The GPU was chosen from the launcher's local-rank variable, before MPI started; the local
    // rank MPI itself finds must agree, or two ranks would share a GPU (NCCL's error for that
    // names neither).
    int gpus = 0;
    if (cudaGetDeviceCount(&gpus) != cudaSuccess) cudaGetLastError(), gpus = 0;
    FGVC_CHECK(gpus <= 0 || device_ == env_.local_rank() % gpus, "NCCL set-up", "rank ", env_.rank(), " is rank ",
               env_.local_rank(), " on its machine but was given GPU ", device_, " (the launcher's local rank: ",
               local_rank_from_environment(),
               "; read from OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, PMI_LOCAL_RANK or SLURM_LOCALID)");
    ncclUniqueId id;
    if (env_.rank() == 0) FGVC_NCCL_CHECK(ncclGetUniqueId(&id));
    MPI_Request request;
    FGVC_CHECK(MPI_Ibcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD, &request) == MPI_SUCCESS, "NCCL set-up",
               "MPI_Ibcast failed");
    wait_for(&request, "NCCL set-up");
    cuda::DeviceGuard guard(device_);
    FGVC_CUDA_CHECK(cudaFree(nullptr));  // the device's context, made before the barrier
    // ncclCommInitRank blocks, without a deadline, until every rank has joined: first every
    // rank must arrive here (a rank stuck before it, say in making its CUDA context, then
    // times the others out instead of hanging them).
    MPI_Request arrived;
    FGVC_CHECK(MPI_Ibarrier(MPI_COMM_WORLD, &arrived) == MPI_SUCCESS, "NCCL set-up", "MPI_Ibarrier failed");
    wait_for(&arrived, "NCCL set-up");
    FGVC_NCCL_CHECK(ncclCommInitRank(&comm_, env_.size(), id, env_.rank()));
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  int rank() const override { return env_.rank(); }
  int size() const override { return env_.size(); }
  int local_rank() const override { return env_.local_rank(); }
  std::string backend() const override { return "nccl"; }

  std::unique_ptr<Pending> all_reduce_sum_async(Tensor& t) override {
    check(t, "all_reduce");
    t.bump_version();  // written in place
    cuda::DeviceGuard guard(device_);
    FGVC_NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                  nccl_type(t.dtype(), "all_reduce"), ncclSum, comm_, cuda::stream(device_)));
    return std::make_unique<StreamPending>(this, "all_reduce");
  }
  void broadcast(Tensor& t, int root) override {
    check(t, "broadcast");
    t.bump_version();  // written in place
    cuda::DeviceGuard guard(device_);
    FGVC_NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                  nccl_type(t.dtype(), "broadcast"), root, comm_, cuda::stream(device_)));
    StreamPending(this, "broadcast").wait();
  }
  void barrier() override {
    MPI_Request request;
    FGVC_CHECK(MPI_Ibarrier(MPI_COMM_WORLD, &request) == MPI_SUCCESS, "barrier", "MPI_Ibarrier failed");
    wait_for(&request, "barrier");
  }
  [[noreturn]] void abort(int code) noexcept override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  // Completion of the work queued so far on the stream, polled against the deadline.
  class StreamPending : public Pending {
   public:
    StreamPending(NcclCommunicator* owner, const char* op) : owner_(owner), op_(op) {
      cuda::DeviceGuard guard(owner_->device_);
      FGVC_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
      FGVC_CUDA_CHECK(cudaEventRecord(event_, cuda::stream(owner_->device_)));
    }
    ~StreamPending() override { FGVC_CUDA_CHECK_NOTHROW(cudaEventDestroy(event_)); }
    void wait() override {
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::duration<double>(collective_timeout_seconds());
      for (;;) {
        FGVC_CHECK(owner_->comm_ != nullptr, op_, "the NCCL communicator was aborted");
        const cudaError_t e = cudaEventQuery(event_);
        if (e == cudaSuccess) return;
        FGVC_CHECK(e == cudaErrorNotReady, op_, "CUDA error while waiting: ", cudaGetErrorString(e));
        ncclResult_t async = ncclSuccess;
        const ncclResult_t query = ncclCommGetAsyncError(owner_->comm_, &async);
        FGVC_CHECK(query == ncclSuccess, op_, "cannot query NCCL's state: ", ncclGetErrorString(query));
        FGVC_CHECK(async == ncclSuccess, op_, "NCCL failed: ", ncclGetErrorString(async), " (",
                   ncclGetLastError(owner_->comm_), ")");
        if (std::chrono::steady_clock::now() > deadline) {
          ncclCommAbort(owner_->comm_);
          owner_->comm_ = nullptr;
          throw Error(std::string(op_) + ": timed out waiting for the other ranks (did one fail?)");
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }

   private:
    NcclCommunicator* owner_;
    const char* op_;
    cudaEvent_t event_ = nullptr;
  };

  void check(const Tensor& t, const char* op) const {
    FGVC_CHECK(comm_ != nullptr, op, "the NCCL communicator was aborted");
    FGVC_CHECK(t.device().is_cuda() && t.device().index == device_ && t.is_contiguous(), op,
               "the NCCL backend takes contiguous tensors on cuda:", device_, ", got ", t.device().str());
  }

  MpiEnvironment& env_;
  int device_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

namespace detail {
std::unique_ptr<Communicator> make_nccl_communicator(Device device) { return std::make_unique<NcclCommunicator>(device); }
}  // namespace detail

}  // namespace dist
}  // namespace fgvc
