// MPI itself, initialised once per process on first use and finalised at exit; the MPI and
// NCCL communicators share it. Internal to dist/ (it includes <mpi.h>).
#pragma once
#include <mpi.h>

namespace fgvc {
namespace dist {

class MpiEnvironment {
 public:
  static MpiEnvironment& get();
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }

 private:
  MpiEnvironment();
  ~MpiEnvironment();
  int rank_ = 0, size_ = 1, local_rank_ = 0;
};

// Completes a request by polling until the collective deadline; throws naming `op` then.
void wait_for(MPI_Request* request, const char* op);

}  // namespace dist
}  // namespace fgvc
