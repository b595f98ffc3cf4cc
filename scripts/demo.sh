#!/usr/bin/env bash
# The first command (SPEC.md sections 2 and 6): installs what is missing (the build's Debian
# packages and dataset-fashion-mnist), configures and builds
# (with the CUDA backend when the toolkit is there), then runs fgvc-demo: two-stage
# long-tailed training on Fashion-MNIST images, the head/tail table, EMD domain similarity and
# source selection, and a report. About 2 minutes on 2 CPU cores after the build (README).
#   scripts/demo.sh [RUN_DIR] [fgvc-demo flags...]     (default: runs/demo in the repository)
# A RUN_DIR given is relative to where the script is called from; a first argument that starts
# with '-' is a flag, not RUN_DIR.
set -euo pipefail
caller=$PWD
out=runs/demo
if [[ $# -gt 0 && $1 != -* ]]; then
  out=$1
  shift
  [[ $out == /* ]] || out=$caller/$out
fi
cd "$(dirname "$0")/.."

fgvc_extra_packages=(dataset-fashion-mnist)
source scripts/setup-deps.sh

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DFGVC_CUDA="${FGVC_CUDA:-AUTO}" >/dev/null
cmake --build build -j "$(nproc)" --target fgvc-demo
exec build/bin/fgvc-demo --out "$out" "$@"
