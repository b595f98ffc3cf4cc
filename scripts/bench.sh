#!/usr/bin/env bash
# CPU benchmarks: builds bench_gemm and bench_elementwise in build-bench/ (if needed), runs
# their CPU cases and prints two tables: our GEMM GFLOP/s beside bare OpenBLAS with the
# overhead, and each elementwise op's GB/s as a share of memcpy.
#
# Each case runs 5 times in random order (--benchmark_enable_random_interleaving) and the
# median is reported, with the coefficient of variation as the noise. Threads: all cores by
# default; OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 gives single-core numbers, which are
# steadier on a shared machine (no thread team waiting for a descheduled member).
# Usage: scripts/bench.sh [output folder, default build-bench/results]
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")/.."
build="build-bench"
out=${1:-$build/results}
[[ $# -eq 0 || $out == /* ]] || out=$caller/$out  # a folder given: relative to the caller

fgvc_extra_packages=(python3)  # the report
source scripts/setup-deps.sh
if [[ ! -f $build/build.ninja ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFGVC_BUILD_TESTS=OFF -DFGVC_BUILD_BENCH=ON
fi
cmake --build "$build" --target bench_gemm bench_elementwise
mkdir -p "$out"
load=$(cut -d' ' -f1-3 /proc/loadavg)

# libbenchmark 1.7 takes --benchmark_min_time in seconds as a bare number ("0.2s" is 1.8+).
for bench in bench_gemm bench_elementwise; do
  "$build/bin/$bench" --benchmark_filter='^cpu/' --benchmark_min_time=0.2 --benchmark_repetitions=5 \
    --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/$bench.json" --benchmark_out_format=json >"$out/$bench.txt"
done

{
  echo "CPU: $(nproc --all) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
    "threads: OpenMP ${OMP_NUM_THREADS:-all}, OpenBLAS ${OPENBLAS_NUM_THREADS:-all}; load average before: $load"
  echo
  /usr/bin/python3 scripts/bench_report.py --device cpu --gemm "$out/bench_gemm.json" \
    --elementwise "$out/bench_elementwise.json"
} | tee "$out/results.md"
