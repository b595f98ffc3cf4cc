#!/usr/bin/env bash
# The GPU check of /work/shared/GPU.md, in two halves.
#
#   scripts/gpu-check.sh --prepare
#       Here, without a GPU: builds the library, tests, benches and fgvc-* apps for sm_90 only
#       (Release) in build-gpu/, and gathers into gpu-bundle/ the stripped binaries and every
#       shared library they need that the GPU machine may lack (OpenBLAS, gfortran, gomp,
#       cudart, benchmark, libstdc++, Open MPI), leaving glibc, cuBLAS, cuDNN, NCCL and the
#       driver to that machine, and packs them into gpu-bundle/bundle.tar.xz (OpenBLAS alone is
#       36 MB unpacked), which must stay under the 64 MiB the device tool carries.
#
#   scripts/gpu-check.sh --emd
#       A shorter check: test_emd, test_cuda_parity, test_mixed_precision, test_apps and
#       test_golden (whole models against timm/torchvision, on the GPU too);
#       bench_emd; fgvc-similarity against POT (where POT is installed); the float32 and bf16
#       training steps against PyTorch; then memcheck of the 16-bit kernels and of the GPU
#       solver, racecheck and synccheck of the solver (every mode runs its sanitizers last).
#
#   scripts/gpu-check.sh --kernels
#       A shorter check of the elementwise, reduction and copy kernels: test_cuda_parity,
#       test_elementwise and test_reduce, bench_elementwise and PyTorch's, the fp32 and bf16
#       training steps, then memcheck on the kernels' newer cases (SixteenBitKernels included)
#       and racecheck of the GPU EMD solver (about 4 minutes).
#
#   scripts/gpu-check.sh --run
#       On the GPU machine, from the repository root, with gpu-bundle carried:
#         device run: command "scripts/gpu-check.sh --run", carry ["gpu-bundle"], timeout_s 540
#       Checks that the carried binaries find their libraries, prints the card and cuDNN
#       version, runs every binary's GPU tests (the `gpu` label's; GoogleTest JSON), bench_emd and POT, the CUDA benchmarks and
#       PyTorch's on the same cases, the fp32 and bf16 training steps, resnet50's per-layer
#       times, then the sanitizers (memcheck on test_cuda_parity and test_emd, racecheck and
#       synccheck of the EMD solver). Writes
#       $OUT/gpu-check.log, $OUT/results.md (printed last), the bench JSON and
#       $OUT/tests.tar.gz ($OUT defaults to ./gpu-out). Every step has a timeout; the
#       whole run stays under about 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
bundle="gpu-bundle"

prepare() {
  set -e
  local build=build-gpu
  rm -f "$build/CMakeCache.txt"  # find the libraries CMakeLists.txt asks for now, not the cached ones
  local config=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DFGVC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DFGVC_BUILD_BENCH=ON)
  if ! cmake -S . -B "$build" "${config[@]}" -DFGVC_BUILD_TESTS=ON; then
    echo "WARNING: configuring with the tests failed; bundling the benches alone" >&2
    cmake -S . -B "$build" "${config[@]}" -DFGVC_BUILD_TESTS=OFF
  fi
  cmake --build "$build" --target fgvc bench_gemm bench_elementwise bench_pool
  rm -f "$build"/bin/test_*  # a test that no longer builds must not ship as a stale binary
  cmake --build "$build" -- -k 0 || echo "WARNING: some tests failed to build; bundling those that did" >&2

  rm -rf "$bundle"
  mkdir -p "$bundle/bin" "$bundle/lib"
  echo '*' >"$bundle/.gitignore"  # ignored by git, so it travels only when carried
  cp "$build"/bin/bench_* "$bundle/bin/"
  # test_dist_mpi runs under mpirun (CPU, in CI), not as a GoogleTest binary here.
  find "$build/bin" -maxdepth 1 -type f \( -name 'test_*' -o -name 'fgvc-*' \) ! -name test_dist_mpi \
    -exec cp {} "$bundle/bin/" \;
  cp -L "$build/lib/libfgvc.so.0" "$bundle/lib/"
  # Everything the binaries load except glibc, the CUDA driver and the big NVIDIA libraries.
  local skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libcuda\.so|libcublas|libcublasLt|libcudnn|libnccl)'
  ldd "$bundle"/bin/* "$bundle/lib/libfgvc.so.0" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
    while read -r name path; do
      [[ $name =~ $skip || -e $bundle/lib/$name ]] || cp -L "$path" "$bundle/lib/$name"
    done
  strip --strip-unneeded "$bundle"/bin/* "$bundle"/lib/*

  {
    echo "commit $(git rev-parse HEAD)$([[ -z $(git status --porcelain) ]] || echo ' with uncommitted changes')"
    echo "root $PWD"
    echo "built $(date -u +%FT%TZ) on $(hostname), nvcc $(/usr/local/cuda/bin/nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), sm_90"
  } >"$bundle/MANIFEST.txt"
  ls -l "$bundle/bin" "$bundle/lib"
  local tests
  tests=$(find "$bundle/bin" -name 'test_*' | wc -l)
  echo "unpacked: $(du -sb "$bundle" | cut -f1) bytes"
  tar -C "$bundle" -cf - bin lib MANIFEST.txt | xz -T2 -6 >"$bundle/bundle.tar.xz"
  rm -rf "${bundle:?}/bin" "${bundle:?}/lib" "${bundle:?}/MANIFEST.txt"
  # The device tool carries at most 64 MiB: the bundle plus the working tree that travels with it.
  local bytes tree
  bytes=$(du -sb "$bundle" | cut -f1)
  # (du also counts what exists of a list naming a deleted file, then exits 1: not an error here)
  tree=$({ git ls-files -z -co --exclude-standard | du -cb --files0-from=- 2>/dev/null || true; } | tail -1 | cut -f1)
  echo "$bundle: $((bytes / 1024 / 1024)) MiB packed ($bytes bytes), working tree $((tree / 1024)) KiB;" \
    "$tests test executables"
  if ((bytes + tree >= 64 * 1024 * 1024)); then
    echo "ERROR: $bundle and the working tree are over the 64 MiB the device tool carries" >&2
    return 1
  fi
}

step() { printf '\n==== %s  (%s, %ss)\n' "$*" "$(date +%T)" "$SECONDS"; }

# The whole check ends within the device call's limit (540 s, less the machine's start): each
# step gets at most what is left of FGVC_GPU_CHECK_SECONDS (480), less 20 s for the report, so
# results.md is written even when steps run slow.
budget_end=$((SECONDS + ${FGVC_GPU_CHECK_SECONDS:-480}))
limit() {
  local left=$((budget_end - SECONDS - 20))
  ((left < 1)) && left=1
  echo $(($1 < left ? $1 : left))
}

run() {
  local scratch
  scratch=$(mktemp -d)
  mkdir -p "$scratch/tests"
  : >"$scratch/tests/exit_codes.txt"
  if [[ ! -d $bundle/bin && -f $bundle/bundle.tar.xz ]]; then  # unpack what --prepare packed
    tar -C "$bundle" -xJf "$bundle/bundle.tar.xz" 2>/dev/null ||
      python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bundle/bundle.tar.xz" "$bundle"
  fi
  [[ -d $bundle/bin ]] || { echo "ERROR: no $bundle/: run --prepare here and carry it"; return 1; }
  cat "$bundle/MANIFEST.txt"
  # Tests compiled with absolute paths (test_emd's data, test_apps' fgvc-* binaries) find them
  # through links: the prepare-time root to this copy, build-gpu/bin to the bundle.
  local root
  root=$(sed -n 's/^root //p' "$bundle/MANIFEST.txt")
  if [[ -n $root && ! -e $root ]]; then mkdir -p "$(dirname "$root")" && ln -s "$PWD" "$root"; fi
  if [[ ! -e build-gpu ]]; then mkdir build-gpu && ln -s "../$bundle/bin" build-gpu/bin; fi

  step "library path"
  local libpath="$PWD/$bundle/lib" purelib d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do [[ -d $d ]] && libpath+=":$d"; done
  purelib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)
  for d in "$purelib"/nvidia/*/lib; do [[ -d $d ]] && libpath+=":$d"; done
  echo "LD_LIBRARY_PATH for our binaries: $libpath"
  local missing
  missing=$(for f in "$bundle"/bin/* "$bundle"/lib/*; do
    LD_LIBRARY_PATH=$libpath ldd "$f" | grep 'not found' | sed "s|^|$f: |"; done)
  echo "${missing:-every carried binary finds all its libraries}"
  LD_LIBRARY_PATH=$libpath ldd "$bundle/lib/libfgvc.so.0" | grep -E 'cudart|cublas|cudnn|nccl'

  step "device"
  local gpu cudnn torch_version torch_ok=0
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
  gpu=${gpu:-"nvidia-smi failed"}
  cudnn=$(LD_LIBRARY_PATH=$libpath timeout 20 python3 -c \
    'import ctypes; print(ctypes.CDLL("libcudnn.so.9").cudnnGetVersion())' 2>&1 | tail -1)
  echo "GPU: $gpu"
  echo "cuDNN loaded from our library path: $cudnn"
  torch_version=$(timeout 45 python3 -c \
    'import torch; assert torch.cuda.is_available(); print(torch.__version__, "cuDNN", torch.backends.cudnn.version())') &&
    torch_ok=1
  echo "PyTorch: ${torch_version:-not usable}"

  step "tests"
  local t name rc left filter deadline=$((SECONDS + 150)) tests=("$bundle"/bin/test_*)
  local gpu_filter
  gpu_filter=$(sed -n 's/^set(FGVC_GPU_TESTS "\(.*\)")$/\1/p' tests/CMakeLists.txt)
  gpu_filter+=:$(sed -n 's/^set(FGVC_GPU_BRANCH_TESTS "\(.*\)")$/\1/p' tests/CMakeLists.txt)
  [[ $mode == emd ]] && tests=("$bundle/bin/test_emd" "$bundle/bin/test_cuda_parity" "$bundle/bin/test_mixed_precision"
                               "$bundle/bin/test_apps" "$bundle/bin/test_golden")
  [[ $mode == kernels ]] && tests=("$bundle/bin/test_cuda_parity" "$bundle/bin/test_elementwise" "$bundle/bin/test_reduce")
  for t in "${tests[@]}"; do
    if [[ ! -x $t ]]; then  # a test binary that failed to build in --prepare: not run
      echo "$(basename "$t") - not run: not in the bundle" >>"$scratch/tests/exit_codes.txt"
      continue
    fi
    name=$(basename "$t")
    left=$((deadline - SECONDS))
    if ((left < 10)); then
      echo "$name - not run: out of time" >>"$scratch/tests/exit_codes.txt"
      continue
    fi
    echo "---- $name"
    # --run: each binary's GPU cases, as tests/CMakeLists.txt lists them for the `gpu` label
    # (the CPU ones run in CI; all of test_train's would not fit its 90 s); --emd: all of
    # its binaries' cases but test_golden's CPU ones.
    filter=()
    [[ $mode == full && -n $gpu_filter ]] && filter=(--gtest_filter="$gpu_filter")
    [[ $mode == emd && $name == test_golden ]] && filter=(--gtest_filter='*OnTheGpu*')
    LD_LIBRARY_PATH=$libpath timeout -k 5 "$(limit $((left < 90 ? left : 90)))" "$t" --gtest_brief=1 \
      --gtest_output="json:$scratch/tests/$name.json" "${filter[@]}"
    rc=$?
    echo "$name $rc$( ((rc == 124)) && echo ' timed out')" >>"$scratch/tests/exit_codes.txt"
  done


  if [[ $mode != kernels ]]; then
  step "EMD: CPU and GPU solvers (bench_emd)"
  # bench_emd exits 1 when a GPU answer is more than 1e-9 from the CPU's (or without a
  # device), and dies with a signal's code on an error: failures to report (a time limit's
  # 124 is not: the report reads what was written).
  emd_agreement() {
    local rc=$1 what=$2
    ((rc != 0 && rc != 124)) && echo "bench_emd-$what $rc (1: GPU answers differ from the CPU's; see the log)" \
      >>"$scratch/tests/exit_codes.txt"
    return 0
  }
  LD_LIBRARY_PATH=$libpath timeout -k 5 "$(limit 90)" "$bundle/bin/bench_emd" --device both --sizes 1000x200,6089x200,5089x555 \
    --block-scales 0.5,1,4 --pricing block,rows --row-candidates 0,2048 --batch 64 --cpu-sample 8 --json "$OUT/bench_emd.json"
  emd_agreement $? three-sizes-and-batch
  # Warp 0's plan of each pivot against thread 0's (the same pivots), at the default block.
  LD_LIBRARY_PATH=$libpath timeout -k 5 "$(limit 45)" "$bundle/bin/bench_emd" --device cuda --sizes 6089x200,5089x555 --batch 0 \
    --block-scales 4 --gpu-plans warp,thread --json "$OUT/bench_emd_plans.json"
  # 20000 x 2000 (22,000 nodes, beyond shared memory: the tree in global memory): the CPU
  # solver (2.6 s on the 2-core VM since 2026-11-29) for the time to beat and the answer to
  # match, pricing by rows (passes on the GPU, pivots on the host), then the kernel (11.3 s on
  # an H200 on 2026-11-27); the limit cuts a slow run short (the report reads what was written).
  LD_LIBRARY_PATH=$libpath timeout -k 5 "$(limit 60)" "$bundle/bin/bench_emd" --device both --sizes 20000x2000 --batch 0 \
    --block-scales 4 --pricing rows,block --row-candidates 0,2048 --json "$OUT/bench_emd_big.json"
  emd_agreement $? 20000x2000
  # The issue's single-problem targets against POT on this machine's CPU, end to end
  # (fgvc-similarity --device cuda, the kernel and pricing by rows), where POT is installed.
  step "EMD: fgvc-similarity on the GPU against POT (bench/emd_vs_pot.py)"
  if python3 -c 'import ot, numpy' 2>/dev/null; then
    for pricing in block rows; do
      PYTHONUNBUFFERED=1 timeout -k 5 "$(limit 60)" python3 bench/emd_vs_pot.py --bin "$bundle/bin" --fgvc-library-path "$libpath" \
        --device cuda --pricing "$pricing" --sizes 6089x200,5089x555 --repeats 3 --no-pivot-count |
        tee "$OUT/emd_vs_pot_$pricing.txt"
    done
  else
    echo "skipped: no POT (python3 -c 'import ot') on this machine"
  fi
  fi  # not kernels

  if [[ $mode != emd ]]; then
  step "benchmarks (CUDA cases, median of 5)"
  # An iteration is 20 launches and reports the time of one (bench/bench_common.h), so
  # min_time 0.005 means about 0.1 s of real time per repetition (0.1 cut bench_gemm at 5 of
  # its 30 cases within 75 s on 2026-11-26).
  local bench cap
  local benches=(bench_gemm:75 bench_elementwise:60 bench_pool:20)  # bench_pool: its JSON only, no table yet
  [[ $mode == kernels ]] && benches=(bench_elementwise:60)
  for bench in "${benches[@]}"; do
    cap=${bench#*:} bench=${bench%:*}
    LD_LIBRARY_PATH=$libpath timeout -k 5 "$(limit "$cap")" "$bundle/bin/$bench" --benchmark_filter='^cuda/' \
      --benchmark_min_time=0.005 --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
      --benchmark_out="$OUT/$bench.json" --benchmark_out_format=json
  done

  step "PyTorch on the same cases"
  if ((torch_ok)); then
    PYTHONUNBUFFERED=1 timeout -k 5 "$(limit 75)" python3 scripts/bench_torch.py --out "$OUT/bench_torch.json"
  else
    echo "skipped: python3 cannot import torch with CUDA"
  fi

  fi  # full

  step "training step vs PyTorch (fp32, then bf16 autocast)"
  if ((torch_ok)); then
    local amp amps=(off bf16)
    for amp in "${amps[@]}"; do
      PYTHONUNBUFFERED=1 timeout -k 5 "$(limit 120)" python3 bench/model_vs_torch.py --bin "$bundle/bin" --fgvc-library-path "$libpath" \
        --device cuda --amp "$amp" --repeats 10 --json "$OUT/train_step_$amp.json"
    done
    # fgvc with measured cuDNN algorithms too (PyTorch above always measures them).
    if [[ $mode == full ]]; then
      PYTHONUNBUFFERED=1 timeout -k 5 "$(limit 75)" python3 bench/model_vs_torch.py --bin "$bundle/bin" --fgvc-library-path "$libpath" \
        --device cuda --amp off --cudnn-benchmark --repeats 10 --json "$OUT/train_step_off_measured.json"
    fi
  else
    echo "skipped: python3 cannot import torch with CUDA"
  fi

  if [[ $mode == full ]]; then
    step "per-layer times of a resnet50 training step (batch 64, synchronised per layer), to $OUT/resnet50_layers.txt"
    LD_LIBRARY_PATH=$libpath timeout -k 5 "$(limit 60)" "$bundle/bin/fgvc-model-info" --device cuda --model resnet50 --input-size 224 \
      --time --batch-size 64 --optimizer rmsprop --repeats 3 >"$OUT/resnet50_layers.txt" 2>&1
    tail -3 "$OUT/resnet50_layers.txt"
  fi

  # The sanitizers last: the slowest and, so far, the least telling (memcheck has been clean on
  # every run), so the time limit cuts them rather than a timing.
  local sanitizer check tool rest filter
  sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
  # tool:test:filter. The allocator's out-of-memory test fails a cudaMalloc on purpose:
  # memcheck would count it. racecheck (shared-memory hazards) and synccheck (barriers) on
  # the GPU EMD solver, whose kernel shares its tree between 1024 threads and whose warp 0
  # plans each pivot between __syncwarp()s: on the batch test alone (12 problems, costs in
  # place and copied), since racecheck slows a kernel by 100x or more.
  local emd_small="EmdCuda.BatchOfTargetsAgainstOneSource"
  # racecheck ran past 90 s on the batch test and on the small fixtures at 1024 threads
  # (2026-11-27): it takes the small fixtures at 64 threads a block.
  local emd_tiny="EmdCuda.FewerThreadsPerBlockReachTheSameOptimum"
  local checks=("memcheck:test_cuda_parity:-CudaAllocator.OutOfMemory*" "memcheck:test_emd:EmdCuda.*"
                "racecheck:test_emd:$emd_tiny" "synccheck:test_emd:$emd_small")
  [[ $mode == emd ]] && checks=("memcheck:test_cuda_parity:CudaParity.SixteenBitKernels" "memcheck:test_emd:EmdCuda.*"
                                "racecheck:test_emd:$emd_tiny" "synccheck:test_emd:$emd_small")
  [[ $mode == kernels ]] && checks=("memcheck:test_cuda_parity:CudaParity.ElementwiseFastPathsAndFallbacks:CudaParity.Reductions:CudaParity.SixteenBitKernels"
                                    "racecheck:test_emd:$emd_tiny")
  for check in "${checks[@]}"; do
    tool=${check%%:*} rest=${check#*:}
    t=${rest%%:*} filter=${rest#*:}
    step "compute-sanitizer $tool on $t ($filter)"
    if [[ -n $sanitizer && -x $bundle/bin/$t ]]; then
      LD_LIBRARY_PATH=$libpath timeout -k 5 "$(limit 90)" "$sanitizer" --tool "$tool" --error-exitcode 99 \
        "$bundle/bin/$t" --gtest_brief=1 --gtest_filter="$filter" --gtest_output="json:$scratch/tests/$tool-$t.json"
      rc=$?
      echo "$tool-$t $rc$( ((rc == 99)) && echo " $tool errors")$( ((rc == 124)) && echo ' timed out')" \
        >>"$scratch/tests/exit_codes.txt"
    else
      echo "skipped: no compute-sanitizer or no $t"
    fi
  done
  tar -czf "$OUT/tests.tar.gz" -C "$scratch" tests

  step "results"
  local report=(--device cuda --tests "$scratch/tests/exit_codes.txt")
  [[ -s $OUT/bench_gemm.json ]] && report+=(--gemm "$OUT/bench_gemm.json")
  [[ -s $OUT/bench_elementwise.json ]] && report+=(--elementwise "$OUT/bench_elementwise.json")
  [[ -s $OUT/bench_torch.json ]] && report+=(--torch "$OUT/bench_torch.json")
  for f in "$OUT"/bench_emd*.json; do [[ -s $f ]] && report+=(--emd "$f"); done
  for f in "$OUT"/train_step_*.json; do [[ -s $f ]] && report+=(--train-step "$f"); done
  {
    echo "# GPU check, $(date -u +%F)"
    echo
    echo "- card: $gpu"
    echo "- cuDNN (our library path): $cudnn; PyTorch: ${torch_version:-not usable}"
    echo "- build: $(sed ':a;N;$!ba;s/\n/; /g' "$bundle/MANIFEST.txt")"
    echo "- command: scripts/gpu-check.sh --$([[ $mode == full ]] && echo run || echo "$mode") (${SECONDS}s)"
    echo
    python3 scripts/bench_report.py "${report[@]}" ||
      { echo "(bench_report.py failed: the tests' exit codes)"; cat "$scratch/tests/exit_codes.txt"; }
    for f in "$OUT"/emd_vs_pot_*.txt; do
      [[ -s $f ]] || continue
      echo; echo "### fgvc-similarity on the GPU against POT ($(basename "$f" .txt))"; echo; echo '```'; cat "$f"; echo '```'
    done
  } >"$OUT/results.md"
  # What failed or did not run, for the exit status (every line that is not "NAME 0").
  awk '$2 != "0"' "$scratch/tests/exit_codes.txt" >"$OUT/failed.txt" 2>/dev/null
  rm -rf "$scratch"
  echo
  cat "$OUT/results.md"
}

case "${1:-}" in
  --prepare) prepare ;;
  --run | --emd | --kernels)
    mode=full
    [[ $1 == --emd ]] && mode=emd
    [[ $1 == --kernels ]] && mode=kernels
    if [[ -z ${OUT:-} ]]; then  # a run outside the device tool: keep the results out of git
      OUT=./gpu-out
      mkdir -p "$OUT" && echo '*' >"$OUT/.gitignore"
    fi
    mkdir -p "$OUT"
    rm -f "$OUT/failed.txt"  # an earlier run's must not decide this one's status
    run 2>&1 | tee "$OUT/gpu-check.log"
    rc=${PIPESTATUS[0]}
    # Non-zero when the run stopped early (no bundle), or a test binary failed, timed out or
    # did not run, or bench_emd failed (the tables above are complete either way).
    if ((rc != 0)) || [[ -s $OUT/failed.txt ]]; then
      echo "gpu-check: not all passed (run: exit $rc)" >&2
      [[ -s $OUT/failed.txt ]] && cat "$OUT/failed.txt" >&2
      exit 1
    fi
    ;;
  *) echo "usage: $0 --prepare | --run | --emd | --kernels" >&2; exit 2 ;;
esac
