// Pricing::Rows on the GPU (emd/transport_simplex.h): each pass prices every cell of the cost
// matrix, which stays on the device, and hands the host each row's most negative reduced
// cost. The host pivots on its threaded tree between passes, so a pass, not a pivot, pays
// the round trip: the potentials up (m + n doubles), one kernel, the row minimums (reduced
// cost, column and the cell's cost) down.
//
// One warp per row: lane l takes columns l, l + 32, ... (coalesced), keeping its smallest
// reduced cost below -tol and that cost's first column; the warp then combines the lanes,
// ties to the smaller column. The reduced cost is (c_ij - u_i) - v_j, as the CPU's pass
// computes it, so both give the same bits and the solvers take the same pivots.
#include <algorithm>
#include <chrono>
#include <memory>

#include "emd/transport_simplex.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"

namespace fgvc {
namespace emd {
namespace detail {

namespace {

constexpr int kRowThreads = 256;  // 8 rows per block

__global__ void row_minimum_kernel(const double* cost, int m, int n, const double* pot, double tol, double* reduced,
                                   int* column, double* cell_cost) {
  const int row = static_cast<int>((blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x) / 32);
  const int lane = threadIdx.x & 31;
  if (row >= m) return;  // the whole warp: row is the same for its 32 lanes
  const double* c = cost + static_cast<long long>(row) * n;
  const double* v = pot + m;
  const double ui = pot[row];
  double best = -tol;
  int at = -1;
  for (int j = lane; j < n; j += 32) {
    const double r = c[j] - ui - v[j];
    if (r < best) best = r, at = j;  // strictly: a lane keeps its first column of a tie
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const double other = __shfl_down_sync(0xffffffffu, best, offset);
    const int other_at = __shfl_down_sync(0xffffffffu, at, offset);
    if (other_at >= 0 && (at < 0 || other < best || (other == best && other_at < at))) best = other, at = other_at;
  }
  if (lane == 0) {
    reduced[row] = best;
    column[row] = at;
    cell_cost[row] = at >= 0 ? c[at] : 0.0;
  }
}

class CudaRowPricer : public RowPricer {
 public:
  CudaRowPricer(const double* cost, int m, int n, int device, const double* device_cost)
      : m_(m), n_(n), device_(device), own_cost_(device_cost == nullptr) {
    if (device_cost) cost_ = const_cast<double*>(device_cost);
    try {
      acquire(cost);
    } catch (...) {
      release();  // a failed allocation gives back what the others took
      throw;
    }
  }

  ~CudaRowPricer() override { release(); }
  CudaRowPricer(const CudaRowPricer&) = delete;
  CudaRowPricer& operator=(const CudaRowPricer&) = delete;

  void price(const double* pot, double tol, int64_t want, std::vector<RowMinimum>* out) override;
  double device_seconds() const override { return seconds_; }

 private:
  void acquire(const double* cost) {
    const int m = m_, n = n_;
    cuda::DeviceGuard guard(device_);
    stream_ = cuda::stream(device_);
    const size_t cells = static_cast<size_t>(m) * n;
    if (own_cost_) cost_ = static_cast<double*>(cuda::allocate(sizeof(double) * cells, device_));
    pot_ = static_cast<double*>(cuda::allocate(sizeof(double) * (m + n), device_));
    reduced_ = static_cast<double*>(cuda::allocate(sizeof(double) * m, device_));
    column_ = static_cast<int*>(cuda::allocate(sizeof(int) * m, device_));
    cell_cost_ = static_cast<double*>(cuda::allocate(sizeof(double) * m, device_));
    // Page-locked host buffers: small copies each pass, without a staging copy in the driver.
    FGVC_CUDA_CHECK(cudaMallocHost(&host_pot_, sizeof(double) * (m + n)));
    FGVC_CUDA_CHECK(cudaMallocHost(&host_reduced_, sizeof(double) * m));
    FGVC_CUDA_CHECK(cudaMallocHost(&host_column_, sizeof(int) * m));
    FGVC_CUDA_CHECK(cudaMallocHost(&host_cell_cost_, sizeof(double) * m));
    for (cudaEvent_t& e : events_) FGVC_CUDA_CHECK(cudaEventCreate(&e));
    if (own_cost_)
      FGVC_CUDA_CHECK(cudaMemcpyAsync(cost_, cost, sizeof(double) * cells, cudaMemcpyHostToDevice, stream_));
  }

  // Never throws (it runs in the destructor and on a failed construction): the device is
  // switched by hand, errors are ignored, and what cannot be freed is left to the driver.
  void release() noexcept {
    // An error pending before (someone else's launch) is theirs to find; one that appears here
    // (a failed free inside cuda::release too) is ours to clear.
    const bool pending_before = cudaPeekAtLastError() != cudaSuccess;
    int previous = -1;
    bool failed = cudaGetDevice(&previous) != cudaSuccess;
    const bool switched = !failed && cudaSetDevice(device_) == cudaSuccess;
    failed |= !switched;
    try {
      if (stream_) failed |= cudaStreamSynchronize(stream_) != cudaSuccess;  // nothing of ours may still be in flight
      for (cudaEvent_t e : events_)
        if (e) failed |= cudaEventDestroy(e) != cudaSuccess;
      for (void* p : {static_cast<void*>(host_pot_), static_cast<void*>(host_reduced_), static_cast<void*>(host_column_),
                      static_cast<void*>(host_cell_cost_)})
        if (p) failed |= cudaFreeHost(p) != cudaSuccess;
      for (void* p : {own_cost_ ? static_cast<void*>(cost_) : nullptr, static_cast<void*>(pot_),
                      static_cast<void*>(reduced_), static_cast<void*>(column_), static_cast<void*>(cell_cost_)})
        if (p) cuda::release(p, device_);
    } catch (...) {
      failed = true;
    }
    if (switched && previous >= 0) failed |= cudaSetDevice(previous) != cudaSuccess;
    // An error ignored here must not surface at the next, unrelated launch.
    if (failed || (!pending_before && cudaPeekAtLastError() != cudaSuccess)) cudaGetLastError();
  }

  int m_, n_, device_;
  bool own_cost_;  // cost_ allocated here (else the caller's, on the device already)
  cudaStream_t stream_ = nullptr;
  double *cost_ = nullptr, *pot_ = nullptr, *reduced_ = nullptr, *cell_cost_ = nullptr;
  int* column_ = nullptr;
  double *host_pot_ = nullptr, *host_reduced_ = nullptr, *host_cell_cost_ = nullptr;
  int* host_column_ = nullptr;
  cudaEvent_t events_[2] = {nullptr, nullptr};
  double seconds_ = 0;
};

void CudaRowPricer::price(const double* pot, double tol, int64_t want, std::vector<RowMinimum>* out) {
  cuda::DeviceGuard guard(device_);
  std::copy(pot, pot + m_ + n_, host_pot_);
  FGVC_CUDA_CHECK(cudaMemcpyAsync(pot_, host_pot_, sizeof(double) * (m_ + n_), cudaMemcpyHostToDevice, stream_));
  FGVC_CUDA_CHECK(cudaEventRecord(events_[0], stream_));
  const unsigned blocks = static_cast<unsigned>((static_cast<long long>(m_) * 32 + kRowThreads - 1) / kRowThreads);
  row_minimum_kernel<<<blocks, kRowThreads, 0, stream_>>>(cost_, m_, n_, pot_, tol, reduced_, column_, cell_cost_);
  FGVC_CHECK_LAUNCH();
  FGVC_CUDA_CHECK(cudaEventRecord(events_[1], stream_));
  FGVC_CUDA_CHECK(cudaMemcpyAsync(host_reduced_, reduced_, sizeof(double) * m_, cudaMemcpyDeviceToHost, stream_));
  FGVC_CUDA_CHECK(cudaMemcpyAsync(host_column_, column_, sizeof(int) * m_, cudaMemcpyDeviceToHost, stream_));
  FGVC_CUDA_CHECK(cudaMemcpyAsync(host_cell_cost_, cell_cost_, sizeof(double) * m_, cudaMemcpyDeviceToHost, stream_));
  FGVC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  float ms = 0;
  FGVC_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[0], events_[1]));
  seconds_ += ms / 1e3;
  out->clear();
  for (int i = 0; i < m_; ++i)
    if (host_column_[i] >= 0) out->push_back({host_reduced_[i], i, host_column_[i], host_cell_cost_[i]});
  if (want > 0 && static_cast<int64_t>(out->size()) > want) {  // the most negative, by a strict order
    std::nth_element(out->begin(), out->begin() + want, out->end(), [](const RowMinimum& x, const RowMinimum& y) {
      return x.reduced < y.reduced || (x.reduced == y.reduced && x.i < y.i);
    });
    out->resize(static_cast<size_t>(want));
    // In row order, as a full pass hands them on: the solver breaks ties between equal
    // reduced costs by position, which nth_element leaves unspecified.
    std::sort(out->begin(), out->end(), [](const RowMinimum& x, const RowMinimum& y) { return x.i < y.i; });
  }
}

}  // namespace

std::unique_ptr<RowPricer> cuda_row_pricer(const double* cost, int m, int n, int device, const double* device_cost) {
  return std::make_unique<CudaRowPricer>(cost, m, n, device, device_cost);
}

}  // namespace detail
}  // namespace emd
}  // namespace fgvc
