// Helpers shared by the benchmarks: skipping CUDA cases without a device, and timing device
// work without CUDA headers (wall time around launches closed by a synchronisation).
#pragma once
#include <benchmark/benchmark.h>

#include <chrono>
#include <string>

#include "tensor/cuda_runtime.h"
#include "tensor/device.h"

namespace fgvc_bench {

// False, with the benchmark marked as skipped and the reason in its output, when no GPU is usable.
inline bool require_cuda(benchmark::State& state) {
  if (fgvc::cuda_available()) return true;
  state.SkipWithError(("no CUDA device: " + fgvc::cuda_unavailable_reason()).c_str());
  return false;
}

// Times `op` on the device for a benchmark registered with UseManualTime(). Each iteration
// launches it kLaunches times back to back and then waits for the device, so the cost of one
// synchronisation is spread over the launches; the iteration's time is the mean per launch.
// One untimed call first creates handles and fills the caching allocator.
template <class Op>
void time_cuda(benchmark::State& state, Op&& op) {
  constexpr int kLaunches = 20;
  op();
  fgvc::cuda_synchronize();
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kLaunches; ++i) op();
    fgvc::cuda_synchronize();
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    state.SetIterationTime(elapsed.count() / kLaunches);
  }
}

// Registers `name` twice, "cpu/NAME" (real time) and "cuda/NAME" (device time, as time_cuda
// reports it), each calling run(state, device) in milliseconds.
template <class Run>
void register_cpu_and_cuda(const std::string& name, Run run) {
  benchmark::RegisterBenchmark(("cpu/" + name).c_str(), [run](benchmark::State& s) { run(s, fgvc::Device::cpu()); })
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(("cuda/" + name).c_str(), [run](benchmark::State& s) { run(s, fgvc::Device::cuda()); })
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
}

// Times `op` on the host for a benchmark registered with UseRealTime(), after one untimed call.
template <class Op>
void time_cpu(benchmark::State& state, Op&& op) {
  op();
  for (auto _ : state) op();
}

}  // namespace fgvc_bench
