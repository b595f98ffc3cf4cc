#!/usr/bin/env bash
# ctest: installs the build into a temporary prefix, then configures, builds and runs
# tests/install_consumer against it with find_package(fgvc).
set -euo pipefail
build_dir=$1
shift  # the rest: extra cmake arguments for the consumer (sanitizer flags)
src_dir=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build_dir" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src_dir" -B "$tmp/build" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" "$@" >/dev/null
cmake --build "$tmp/build" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib:${LD_LIBRARY_PATH:-}" "$tmp/build/consumer"
# The installed apps run as they are, finding the installed library without LD_LIBRARY_PATH.
env -u LD_LIBRARY_PATH "$tmp/prefix/bin/fgvc-model-info" --device cpu --model resnet20 --json >/dev/null
