#!/usr/bin/env bash
# Fuzzes the readers of untrusted files with libFuzzer (tests/fuzz): builds the targets with
# clang, AddressSanitizer and UndefinedBehaviorSanitizer in build-fuzz/, then runs each for
# SECONDS (default 120) on its working corpus, build-fuzz/corpus/<target>/ (the committed seeds,
# tests/fuzz/corpus/<target>/, plus what earlier runs found; kept between runs, never
# committed: thousands of small files). A crash, sanitizer report, hang or stray exception
# stops that target and leaves the input in build-fuzz/artifacts/: once fixed, copy it into
# tests/fuzz/corpus/<target>/, where every build's ctest replays it.
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs clang and its runtime (Debian clang, libclang-rt-14-dev, libomp-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}
if [[ $# -gt 1 || ! $seconds =~ ^[1-9][0-9]*$ ]]; then  # 0 would be -max_total_time=0: no limit
  echo "fuzz.sh: error: usage: scripts/fuzz.sh [SECONDS]" >&2
  exit 2
fi
missing=()
command -v clang++ >/dev/null || missing+=(clang)
for p in libclang-rt-14-dev libomp-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "fuzz.sh: error: missing ${missing[*]} (apt-get install ${missing[*]})" >&2
  exit 1
fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFGVC_FUZZ=ON -DFGVC_CUDA=OFF \
  -DFGVC_BUILD_BENCH=OFF >/dev/null
targets=(fuzz_image fuzz_safetensors fuzz_dataset)
cmake --build build-fuzz --target "${targets[@]}"
mkdir -p build-fuzz/artifacts
status=0
for t in "${targets[@]}"; do
  scratch=build-fuzz/corpus/$t
  mkdir -p "$scratch"
  cp -n tests/fuzz/corpus/$t/* "$scratch/" 2>/dev/null || true
  dict=()
  [[ -f tests/fuzz/${t#fuzz_}.dict ]] && dict=(-dict="tests/fuzz/${t#fuzz_}.dict")
  echo "---- $t, ${seconds} s"
  rc=0
  build-fuzz/bin/$t -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="build-fuzz/artifacts/$t-" "${dict[@]}" "$scratch" >"build-fuzz/$t.log" 2>&1 || rc=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)|ERROR|SUMMARY|Test unit written' \
    "build-fuzz/$t.log" || true
  if ((rc != 0)); then
    echo "$t: FAILED, exit $rc (log build-fuzz/$t.log; the input is in build-fuzz/artifacts/)" >&2
    status=1
  fi
done
exit $status
