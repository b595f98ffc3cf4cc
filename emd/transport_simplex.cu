// CUDA side of emd/transport_simplex.h: the transportation simplex with one thread block
// per problem, pivoting to the optimum inside one kernel launch (no host round trip per
// pivot). The basis is the array tree of emd/array_tree.h (parent, subtree sizes, the
// preorder in an array), in shared memory when it fits. Each pivot:
//   1. pricing: the block's threads scan the next block of cells in parallel (reduced cost
//      c_ij - u_i - v_j; each thread's share by emd/cell_pricing.h, four loads in flight and
//      no division per cell) and reduce to the most negative one, as the CPU solver's block
//      pricing does; Bland's rule (the first improvable cell) after a long degenerate run;
//   2. warp 0 finds the cycle the entering cell closes (two lanes climb, one from each end),
//      moves theta round it and turns the tree (emd/warp_plan.h: plan_pivot of
//      emd/array_tree.h spread over 32 lanes);
//   3. all threads move the preorder positions that change to their new places and shift
//      the moved subtree's potentials (two parallel passes, a barrier after each).
// Every 1024 pivots, and before optimality is declared, all potentials are recomputed from
// the tree by pointer jumping (pot_x = c(x, parent x) - pot_parent: after jumping to an
// ancestor a, pot_x = acc_x +- pot_a, the sign by whether x and a are on the same side),
// so incremental drift never decides the answer. The start (the CPU solver's greedy
// least-cost tree) and the answer's assembly run on the host, shared with the CPU solver
// (detail:: in the header).
#include "emd/transport_simplex.h"

#include <chrono>
#include <climits>
#include <cmath>
#include <memory>

#include "emd/array_tree.h"
#include "emd/cell_pricing.h"
#include "emd/warp_plan.h"
#include "tensor/cuda_check.h"
#include "tensor/cuda_context.h"
#include "tensor/cuda_runtime.h"
#include "tensor/error.h"

namespace fgvc {
namespace emd {

namespace {

constexpr int kThreads = 1024;
// Warp 0 plans each pivot; the shuffles below (offsets 16 ... 1, full masks) assume one whole warp.
static_assert(detail::kLanes == 32, "the pivot plan runs on exactly one warp of 32 lanes");
constexpr int kWarps = kThreads / 32;
constexpr long long kRefreshEvery = 1024;  // pivots between exact recomputations of the potentials

// One problem's state in device memory.
struct DeviceProblem {
  detail::ArrayTree tree;    // m + n nodes; cost m x n row-major
  long long block;           // cells priced per block
  double tol;                // improvable: reduced cost < -tol
  long long max_iterations;  // a guard: the kernel stops there and reports it
  long long degenerate_limit;  // degenerate pivots in a row before Bland's rule (Options::degenerate_limit)
  int* anc[2];               // pointer jumping, double-buffered (global memory)
  double* acc[2];
  long long iterations;  // out
  int status;            // out: 0 optimal, 1 stopped at max_iterations, 2 the tree broke (a bug)
  long long cycles[4];   // out: thread 0's clock in pricing, planning, the passes, recomputing potentials
  int shared_tier;       // out: 2 tree and flows in shared memory, 1 the tree alone, 0 all in global memory
};

// Bytes of the arrays the kernel keeps in shared memory when they fit: pot (double),
// parent, size, order, pos and scratch (int), 28 B a node; and the flows too (8 B more,
// read and written by warp 0's plan every pivot) where those fit as well. With 227 KB a
// block (sm_90), 6089 x 200 keeps the flows in shared memory, 6089 x 555 the tree alone; with
// 163 KB (sm_80), about 4,600 nodes keep their flows there and 5,900 the tree alone.
__host__ __device__ inline size_t tree_bytes(int nodes) { return static_cast<size_t>(nodes) * (8 + 5 * 4); }
__host__ __device__ inline size_t tree_and_flow_bytes(int nodes) { return tree_bytes(nodes) + 8 * static_cast<size_t>(nodes); }
// What a problem of `nodes` nodes takes of `capacity` bytes (0: it stays in global memory).
__host__ __device__ inline size_t shared_bytes(int nodes, size_t capacity) {
  return tree_and_flow_bytes(nodes) <= capacity ? tree_and_flow_bytes(nodes)
         : tree_bytes(nodes) <= capacity        ? tree_bytes(nodes)
                                                : 0;
}

// Every potential from the parent pointers by pointer jumping (jump_start, jump_once in
// emd/array_tree.h); P is the block's shared record. Returns false (in every thread) if the
// parent pointers are not a tree: a guard against a hang.
__device__ bool compute_potentials(DeviceProblem& P) {
  const detail::ArrayTree& t = P.tree;
  const int nodes = t.m + t.n;
  for (int x = threadIdx.x; x < nodes; x += blockDim.x) detail::jump_start(t, x, P.anc[0], P.acc[0]);
  __syncthreads();
  int cur = 0;
  for (int round = 0;; ++round) {
    if (round > 32) return false;  // hops double each round: a tree of < 2^31 nodes needs <= 31
    int active = 0;
    for (int x = threadIdx.x; x < nodes; x += blockDim.x)
      active |= detail::jump_once(t, x, P.anc[cur], P.acc[cur], P.anc[cur ^ 1], P.acc[cur ^ 1]);
    cur ^= 1;
    if (!__syncthreads_or(active)) break;
  }
  for (int x = threadIdx.x; x < nodes; x += blockDim.x) t.pot[x] = P.acc[cur][x];
  __syncthreads();
  return true;
}

using detail::Candidate;
using detail::better;

// The block's best candidate, returned to every thread.
__device__ Candidate block_best(Candidate c, double* warp_r, long long* warp_k) {
  for (int off = 16; off > 0; off /= 2) {
    Candidate o{__shfl_down_sync(0xffffffffu, c.r, off), __shfl_down_sync(0xffffffffu, c.k, off)};
    c = better(c, o);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_r[warp] = c.r, warp_k[warp] = c.k;
  __syncthreads();
  if (warp == 0) {
    c = lane < static_cast<int>(blockDim.x / 32) ? Candidate{warp_r[lane], warp_k[lane]} : Candidate{0.0, -1};
    for (int off = 16; off > 0; off /= 2) {
      Candidate o{__shfl_down_sync(0xffffffffu, c.r, off), __shfl_down_sync(0xffffffffu, c.k, off)};
      c = better(c, o);
    }
    if (lane == 0) warp_r[0] = c.r, warp_k[0] = c.k;
  }
  __syncthreads();
  const Candidate out{warp_r[0], warp_k[0]};
  __syncthreads();  // warp_r/warp_k are reused by the next call
  return out;
}

// kOneThreadPlan: thread 0 plans each pivot (plan_pivot) instead of warp 0 (plan_by_lanes),
// Options::gpu_one_thread_plan; a separate instantiation, so that it costs the default
// kernel no registers.
template <bool kOneThreadPlan>
__global__ void __launch_bounds__(kThreads) simplex_kernel(DeviceProblem* problems, size_t shared_capacity) {
  extern __shared__ __align__(16) unsigned char shared[];
  DeviceProblem& G = problems[blockIdx.x];  // global: input and output
  // What the block works on, one copy in shared memory: the same record with the tree's
  // arrays in shared memory if they fit. (A per-thread copy would live in local memory.)
  __shared__ DeviceProblem P;
  __shared__ detail::Move move;  // warp 0's plan for the pivot's parallel passes
  __shared__ detail::LanePlan plan;
  const int nodes = G.tree.m + G.tree.n;
  const size_t in_shared_bytes = shared_bytes(nodes, shared_capacity);
  const bool in_shared = in_shared_bytes > 0, flow_in_shared = in_shared_bytes == tree_and_flow_bytes(nodes);
  if (threadIdx.x == 0) {
    P = G;
    if (in_shared) {
      double* d = reinterpret_cast<double*>(shared);
      int* i = reinterpret_cast<int*>(d + (flow_in_shared ? 2 : 1) * nodes);
      P.tree.pot = d;
      if (flow_in_shared) P.tree.flow = d + nodes;
      P.tree.parent = i, P.tree.size = i + nodes, P.tree.order = i + 2 * nodes, P.tree.pos = i + 3 * nodes;
      P.tree.scratch = i + 4 * nodes;
    }
  }
  __syncthreads();
  if (in_shared) {
    for (int x = threadIdx.x; x < nodes; x += blockDim.x) {
      P.tree.parent[x] = G.tree.parent[x], P.tree.size[x] = G.tree.size[x], P.tree.order[x] = G.tree.order[x];
      if (flow_in_shared) P.tree.flow[x] = G.tree.flow[x];
    }
    __syncthreads();
  }
  for (int k = threadIdx.x; k < nodes; k += blockDim.x) P.tree.pos[P.tree.order[k]] = k;
  __shared__ double warp_r[kWarps];
  __shared__ long long warp_k[kWarps];
  __shared__ int bland;   // set by thread 0 after each pivot
  __shared__ int broken;  // likewise: plan_pivot found no tree
  const int m = P.tree.m, n = P.tree.n;
  const long long total = static_cast<long long>(m) * n;
  const double* cost = P.tree.cost;
  if (threadIdx.x == 0) bland = 0, broken = 0;
  __syncthreads();
  // Thread 0's bookkeeping, in shared memory rather than in every thread's registers
  // (the kernel has 64 a thread): degenerate pivots in a row, and its clock in each phase.
  __shared__ long long degenerate_run, cycles[4], mark;
  if (threadIdx.x == 0) degenerate_run = 0, cycles[0] = cycles[1] = cycles[2] = cycles[3] = 0;
  auto lap = [&](int phase) {  // thread 0's clock since the last mark goes to `phase`
    if (threadIdx.x != 0) return;
    const long long now = clock64();
    cycles[phase] += now - mark;
    mark = now;
  };
  if (threadIdx.x == 0) mark = clock64();
  int status = compute_potentials(P) ? 0 : 2;
  lap(3);
  long long next = 0, iterations = 0;
  bool refreshed = false;  // the same in every thread: all see the same entering cell
  while (status == 0) {
    if (threadIdx.x == 0) mark = clock64();
    const double* u = P.tree.pot;
    const double* v = P.tree.pot + m;
    Candidate enter{0.0, -1};
    if (!bland) {
      for (long long scanned = 0; scanned < total;) {
        const long long end = min(next + P.block, total);
        const Candidate mine =
            detail::best_of_cells(cost, u, v, n, next + threadIdx.x, blockDim.x, end, Candidate{-P.tol, -1});
        enter = block_best(mine, warp_r, warp_k);
        scanned += end - next;
        next = end == total ? 0 : end;
        if (enter.k >= 0) break;
      }
    } else {
      // Bland: the first improvable cell in row-major order, a chunk of cells at a time.
      const long long chunk = 16LL * blockDim.x;
      for (long long base = 0; base < total && enter.k < 0; base += chunk) {
        const Candidate mine =
            detail::first_improvable(cost, u, v, n, base + threadIdx.x, blockDim.x, min(base + chunk, total), P.tol);
        // All ranked equal, so block_best keeps the smallest cell; then its own reduced cost.
        enter = block_best(Candidate{0.0, mine.k}, warp_r, warp_k);
        if (enter.k >= 0) {
          const int i = static_cast<int>(enter.k / n), j = static_cast<int>(enter.k - static_cast<long long>(i) * n);
          enter.r = cost[enter.k] - u[i] - v[j];
        }
      }
    }
    lap(0);
    if (enter.k < 0) {  // no improvable cell: optimal, once exact potentials agree
      if (refreshed) break;
      if (!compute_potentials(P)) status = 2;
      lap(3);
      refreshed = true;
      continue;
    }
    refreshed = false;
    if (P.max_iterations > 0 && iterations >= P.max_iterations) {
      status = 1;
      break;
    }
    if (threadIdx.x < detail::kLanes) {  // warp 0 plans the pivot (emd/warp_plan.h)
      const int lane = threadIdx.x;
      auto phase = [&](auto step) {
        step(lane);
        __syncwarp();
      };
      auto best = [&](auto share) {
        detail::Leaving c = share(lane);
        for (int off = 16; off > 0; off /= 2) {
          const detail::Leaving o{__shfl_down_sync(0xffffffffu, c.flow, off), __shfl_down_sync(0xffffffffu, c.rank, off),
                                  __shfl_down_sync(0xffffffffu, c.index, off), __shfl_down_sync(0xffffffffu, c.on_a, off)};
          c = detail::better_leaving(c, o);
        }
        // Lane 0 holds the best; every lane gets it.
        return detail::Leaving{__shfl_sync(0xffffffffu, c.flow, 0), __shfl_sync(0xffffffffu, c.rank, 0),
                               __shfl_sync(0xffffffffu, c.index, 0), __shfl_sync(0xffffffffu, c.on_a, 0)};
      };
      if constexpr (kOneThreadPlan) {
        if (lane == 0) {
          const double theta = detail::plan_pivot(P.tree, enter.k, enter.r, &move);
          plan.broken = theta < 0;
          plan.leave.flow = theta;  // what the bookkeeping below reads
        }
      } else {
        detail::plan_by_lanes(P.tree, enter.k, enter.r, &plan, &move, phase, best);
      }
      if (lane == 0) {
        // As on the CPU: after more degenerate pivots in a row than there are nodes, Bland's
        // rule until a pivot moves flow again (no cycling).
        if (plan.broken) broken = 1;
        else if (plan.leave.flow > 0) degenerate_run = 0, bland = 0;
        else if (++degenerate_run > P.degenerate_limit) bland = 1;
      }
    }
    __syncthreads();
    lap(1);
    if (broken) {
      status = 2;
      break;
    }
    for (int x = move.lo + threadIdx.x; x < move.hi; x += blockDim.x) detail::move_to_scratch(P.tree, move, x);
    __syncthreads();
    for (int y = move.lo + threadIdx.x; y < move.hi; y += blockDim.x) detail::place(P.tree, move, y);
    __syncthreads();
    lap(2);
    ++iterations;
    if (iterations % kRefreshEvery == 0) {
      if (!compute_potentials(P)) status = 2;
      lap(3);
    }
  }
  for (int x = threadIdx.x; x < nodes; x += blockDim.x) {
    if (in_shared) G.tree.parent[x] = P.tree.parent[x], G.tree.pot[x] = P.tree.pot[x];
    if (flow_in_shared) G.tree.flow[x] = P.tree.flow[x];
  }
  if (threadIdx.x == 0) {
    G.iterations = iterations, G.status = status;
    G.shared_tier = flow_in_shared ? 2 : in_shared ? 1 : 0;
    for (int c = 0; c < 4; ++c) G.cycles[c] = cycles[c];
  }
}

// Device memory of one call, released on every path out.
struct DeviceBuffer {
  void* ptr = nullptr;
  int device = 0;
  DeviceBuffer(size_t bytes, int dev) : device(dev) { ptr = cuda::allocate(bytes, dev); }
  ~DeviceBuffer() {
    if (ptr) cuda::release(ptr, device);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// Carves typed arrays out of one allocation, each 256-byte aligned.
class Arena {
 public:
  template <class T> T* take(size_t count) {
    const size_t at = (used_ + 255) / 256 * 256;
    used_ = at + count * sizeof(T);
    return base_ ? reinterpret_cast<T*>(static_cast<char*>(base_) + at) : nullptr;
  }
  explicit Arena(void* base = nullptr) : base_(base) {}
  size_t used() const { return used_; }

 private:
  void* base_ = nullptr;
  size_t used_ = 0;
};

void layout(Arena& arena, DeviceProblem& P, int nodes, long long cells) {
  detail::ArrayTree& t = P.tree;
  t.cost = arena.take<double>(static_cast<size_t>(cells));
  t.parent = arena.take<int>(nodes);
  t.size = arena.take<int>(nodes);
  t.order = arena.take<int>(nodes);
  t.pos = arena.take<int>(nodes);
  t.scratch = arena.take<int>(nodes);
  t.flow = arena.take<double>(nodes);
  t.pot = arena.take<double>(nodes);
  t.path_a = arena.take<int>(nodes);
  t.path_b = arena.take<int>(nodes);
  t.stem_pos = arena.take<int>(nodes);
  t.stem_size = arena.take<int>(nodes);
  t.stem_flow = arena.take<double>(nodes);
  for (int b = 0; b < 2; ++b) {
    P.anc[b] = arena.take<int>(nodes);
    P.acc[b] = arena.take<double>(nodes);
  }
}

// Costs the caller says are on `device` must be device memory there: a host pointer or
// another device's memory would fault in the kernel, and a fault ruins the CUDA context.
void check_device_cost(const double* device_cost, int device, const std::string& which) {
  cudaPointerAttributes where{};
  FGVC_CUDA_CHECK(cudaPointerGetAttributes(&where, device_cost));
  FGVC_CHECK(where.type == cudaMemoryTypeDevice && where.device == device, "emd", which,
             "device_cost is not memory of CUDA device ", device);
}

}  // namespace

std::vector<Result> solve_batch_cuda(const std::vector<Problem>& problems, const Options& options, int device) {
  const auto t0 = std::chrono::steady_clock::now();
  detail::check_options(options);
  FGVC_CHECK(options.gpu_threads == 0 ||
                 (options.gpu_threads >= 32 && options.gpu_threads <= kThreads && options.gpu_threads % 32 == 0),
             "emd", "gpu_threads must be 0 or a multiple of 32 up to ", kThreads, ", got ", options.gpu_threads);
  FGVC_CHECK(cuda_available(), "emd", "the CUDA solver needs a CUDA device: ", cuda_unavailable_reason());
  FGVC_CHECK(device >= 0 && device < cuda_device_count(), "emd", "no CUDA device ", device, " (there are ",
             cuda_device_count(), ")");
  if (problems.empty()) return {};
  cuda::DeviceGuard guard(device);
  cudaStream_t stream = cuda::stream(device);

  // Host side: drop weight-0 classes, build each greedy start.
  std::vector<detail::Reduced> reduced;
  std::vector<detail::InitialTree> trees;
  detail::prepare_batch(problems, options, &reduced, &trees);
  std::vector<DeviceProblem> host(problems.size());
  // One allocation for everything: each problem's arrays, then the problem records.
  std::vector<size_t> offsets;
  size_t bytes = 0;
  // A problem whose costs are already on the device (and keep all their classes) is priced
  // there in place: no copy, no room for one.
  auto in_place = [&](size_t q) { return problems[q].device_cost != nullptr && reduced[q].sub.empty(); };
  for (size_t q = 0; q < problems.size(); ++q)
    if (problems[q].device_cost) check_device_cost(problems[q].device_cost, device, "problem " + std::to_string(q) + ": ");
  for (size_t q = 0; q < problems.size(); ++q) {
    const detail::Reduced& r = reduced[q];
    Arena measure;  // null base: only the sizes are used
    DeviceProblem scratch{};
    layout(measure, scratch, r.m() + r.n(), in_place(q) ? 0 : static_cast<long long>(r.m()) * r.n());
    offsets.push_back(bytes);
    bytes += (measure.used() + 255) / 256 * 256;
  }
  const size_t problems_at = bytes;
  DeviceBuffer memory(problems_at + sizeof(DeviceProblem) * problems.size(), device);
  char* base = static_cast<char*>(memory.ptr);

  for (size_t q = 0; q < problems.size(); ++q) {
    const detail::Reduced& r = reduced[q];
    const int nodes = r.m() + r.n();
    const long long cells = static_cast<long long>(r.m()) * r.n();
    DeviceProblem& P = host[q];
    Arena one(base + offsets[q]);
    layout(one, P, nodes, in_place(q) ? 0 : cells);
    if (in_place(q)) P.tree.cost = problems[q].device_cost;
    P.tree.m = r.m();
    P.tree.n = r.n();
    // Pricing on the GPU is cheap next to a pivot's fixed cost, so blocks 4x the CPU's: fewer
    // pivots (measured on an H200: 6089 x 200 took 30% fewer pivots and 23% less time).
    P.block = options.block_size > 0 ? options.block_size
                                     : std::max<long long>(1024, static_cast<long long>(8 * std::sqrt(double(cells))));
    P.block = std::min<long long>(std::max<long long>(P.block, 1), std::max<long long>(cells, 1));
    P.tol = options.tolerance * r.max_cost;
    // Without a limit of the caller's, a guard: a kernel must not run forever, and one that
    // cannot be interrupted must not hold the GPU for long. 100 pivots a node is 10-20 times
    // what the solvers take (bench_emd: 3-9 a node), and about a minute at 20000 x 2000.
    P.max_iterations = options.max_iterations > 0 ? options.max_iterations : 100LL * nodes + 100000;
    P.degenerate_limit = options.degenerate_limit > 0 ? options.degenerate_limit : nodes;
    P.iterations = 0;
    P.status = 0;
    const detail::InitialTree& start = trees[q];
    if (!in_place(q))
      FGVC_CUDA_CHECK(cudaMemcpyAsync(const_cast<double*>(P.tree.cost), r.cost(problems[q].cost), sizeof(double) * cells,
                                      cudaMemcpyHostToDevice, stream));
    FGVC_CUDA_CHECK(cudaMemcpyAsync(P.tree.parent, start.parent.data(), sizeof(int) * nodes, cudaMemcpyHostToDevice, stream));
    FGVC_CUDA_CHECK(cudaMemcpyAsync(P.tree.size, start.size.data(), sizeof(int) * nodes, cudaMemcpyHostToDevice, stream));
    FGVC_CUDA_CHECK(cudaMemcpyAsync(P.tree.order, start.order.data(), sizeof(int) * nodes, cudaMemcpyHostToDevice, stream));
    FGVC_CUDA_CHECK(cudaMemcpyAsync(P.tree.flow, start.flow.data(), sizeof(double) * nodes, cudaMemcpyHostToDevice, stream));
  }
  auto* device_problems = reinterpret_cast<DeviceProblem*>(base + problems_at);
  FGVC_CUDA_CHECK(cudaMemcpyAsync(device_problems, host.data(), sizeof(DeviceProblem) * host.size(),
                                  cudaMemcpyHostToDevice, stream));
  // Shared memory for the tree: as much as the largest problem that fits needs.
  int optin = 0;
  FGVC_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const size_t limit = optin > 2048 ? static_cast<size_t>(optin) - 2048 : 0;  // room for the static shared
  size_t dynamic = 0;
  for (const detail::Reduced& r : reduced) dynamic = std::max(dynamic, shared_bytes(r.m() + r.n(), limit));
  // The limit, not this call's size: another host thread may launch with a larger one.
  auto* kernel = options.gpu_one_thread_plan ? simplex_kernel<true> : simplex_kernel<false>;
  if (dynamic > 0)
    FGVC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(limit)));
  struct Events {  // the kernel's start and end, destroyed on every path out
    cudaEvent_t e[2] = {nullptr, nullptr};
    ~Events() {
      for (cudaEvent_t x : e)
        if (x) cudaEventDestroy(x);
    }
  } timing;
  cudaEvent_t* events = timing.e;
  for (int k = 0; k < 2; ++k) FGVC_CUDA_CHECK(cudaEventCreate(&events[k]));
  FGVC_CUDA_CHECK(cudaEventRecord(events[0], stream));
  const int threads = options.gpu_threads > 0 ? options.gpu_threads : kThreads;
  kernel<<<static_cast<unsigned>(problems.size()), threads, dynamic, stream>>>(device_problems, dynamic);
  FGVC_CHECK_LAUNCH();
  FGVC_CUDA_CHECK(cudaEventRecord(events[1], stream));

  // If a copy below throws, `memory` goes back to the caching allocator while the kernel may
  // still run: safe, because every later use of that memory is ordered after it on `stream`.
  std::vector<DeviceProblem> done(problems.size());
  FGVC_CUDA_CHECK(cudaMemcpyAsync(done.data(), device_problems, sizeof(DeviceProblem) * done.size(),
                                  cudaMemcpyDeviceToHost, stream));
  std::vector<std::vector<int>> parents(problems.size());
  std::vector<std::vector<double>> flows(problems.size()), pots(problems.size());
  for (size_t q = 0; q < problems.size(); ++q) {
    const int nodes = reduced[q].m() + reduced[q].n();
    parents[q].resize(nodes);
    flows[q].resize(nodes);
    pots[q].resize(nodes);
    const detail::ArrayTree& t = host[q].tree;
    FGVC_CUDA_CHECK(cudaMemcpyAsync(parents[q].data(), t.parent, sizeof(int) * nodes, cudaMemcpyDeviceToHost, stream));
    FGVC_CUDA_CHECK(cudaMemcpyAsync(flows[q].data(), t.flow, sizeof(double) * nodes, cudaMemcpyDeviceToHost, stream));
    FGVC_CUDA_CHECK(cudaMemcpyAsync(pots[q].data(), t.pot, sizeof(double) * nodes, cudaMemcpyDeviceToHost, stream));
  }
  FGVC_CUDA_CHECK(cudaStreamSynchronize(stream));
  float kernel_ms = 0;
  FGVC_CUDA_CHECK(cudaEventElapsedTime(&kernel_ms, events[0], events[1]));

  std::vector<int64_t> iterations(problems.size());
  for (size_t q = 0; q < problems.size(); ++q) {
    const std::string which = problems.size() > 1 ? " (problem " + std::to_string(q) + ")" : std::string();
    FGVC_CHECK(done[q].status != 2, "emd", "internal error: the GPU solver's basis stopped being a tree after ",
               done[q].iterations, " pivots", which);
    FGVC_CHECK(done[q].status == 0, "emd", "no optimum after ", done[q].iterations, " pivots on the GPU",
               options.max_iterations > 0 ? " (max_iterations)" : " (the kernel's guard against running forever)",
               which);
    iterations[q] = done[q].iterations;
  }
  // On the host: the polish where costs span many orders of magnitude (usually nothing), the
  // answers in the callers' indices.
  std::vector<Result> out = detail::finish_batch(problems, options, reduced, parents, flows, pots, iterations);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (size_t q = 0; q < problems.size(); ++q) {
    out[q].seconds = seconds;
    out[q].gpu_kernel_seconds = kernel_ms / 1e3;
    out[q].gpu_shared_tier = done[q].shared_tier;
    double total = 0;
    for (long long c : done[q].cycles) total += double(c);
    if (total > 0)
      for (long long c : done[q].cycles) out[q].gpu_phases.push_back(double(c) / total);
  }
  return out;
}

Result solve_cuda(const double* cost, int64_t m, int64_t n, const std::vector<double>& a, const std::vector<double>& b,
                  const Options& options, int device, const double* device_cost) {
  if (options.pricing == Pricing::Rows) {
    FGVC_CHECK(cuda_available(), "emd", "the CUDA solver needs a CUDA device: ", cuda_unavailable_reason());
    FGVC_CHECK(device >= 0 && device < cuda_device_count(), "emd", "no CUDA device ", device, " (there are ",
               cuda_device_count(), ")");
    if (device_cost) check_device_cost(device_cost, device, "");
    Options o = options;
    if (o.row_candidates == 0) o.row_candidates = kGpuRowCandidates;
    // The reduced problem's costs are the caller's matrix itself when no class was dropped.
    return detail::solve_by_rows(cost, m, n, a, b, o, [=](const double* c, int rm, int rn) {
      return detail::cuda_row_pricer(c, rm, rn, device, c == cost ? device_cost : nullptr);
    });
  }
  Problem p{cost, m, n, a, b};
  p.device_cost = device_cost;
  return solve_batch_cuda({p}, options, device).front();
}

}  // namespace emd
}  // namespace fgvc
