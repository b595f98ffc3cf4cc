#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite.
#   scripts/test.sh              FGVC_CUDA=AUTO, Release, in build/ (CUDA compiles when the
#                                toolkit is present; GPU tests skip without a device)
#   scripts/test.sh --sanitize   FGVC_CUDA=OFF with AddressSanitizer + UBSan, in build-asan/
# Extra arguments after the mode go to ctest (e.g. -L unit, -R Gradcheck).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=release
if [[ "${1:-}" == "--sanitize" ]]; then mode=sanitize; shift; fi

source scripts/setup-deps.sh

jobs=$(nproc)
if [[ $mode == sanitize ]]; then
  build=build-asan
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFGVC_CUDA=OFF -DFGVC_SANITIZE=ON \
    -DFGVC_BUILD_BENCH=OFF
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
  export LSAN_OPTIONS="suppressions='$PWD/scripts/lsan.supp'"  # quoted: a path with spaces
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
else
  build=build
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFGVC_CUDA="${FGVC_CUDA:-AUTO}"
fi
cmake --build "$build" -j "$jobs"
# OpenMP and OpenBLAS both default to one thread per core; the tests pass on any count.
# --timeout: the default for cases without their own (a hang fails that case, not the run).
# --no-tests=error: a mistyped -L or -R fails instead of passing with nothing run.
ctest --test-dir "$build" --output-on-failure --timeout 480 --no-tests=error -j "$jobs" "$@"
