# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/demo.sh: installs the Debian packages the build
# needs when they are missing (with apt-get when root; otherwise prints the line to run).
# A script may set fgvc_extra_packages=(...) first for what it needs beyond the build.
# Besides the libraries: ninja-build and ccache (the build: Ninja, a compiler cache for the
# 2-core machines) and OpenBLAS's OpenMP flavour, so that BLAS and fgvc's kernels share one
# OpenMP thread pool.
fgvc_packages=(cmake g++ ninja-build ccache libopenblas-dev libopenblas-openmp-dev libgtest-dev
  libbenchmark-dev nlohmann-json3-dev libcli11-dev libjpeg62-turbo-dev libstb-dev libopenmpi-dev openmpi-bin ${fgvc_extra_packages[@]+"${fgvc_extra_packages[@]}"})
fgvc_missing=()
for p in "${fgvc_packages[@]}"; do
  # Installed, not merely known (a package removed but not purged still has a status).
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || fgvc_missing+=("$p")
done
if (( ${#fgvc_missing[@]} )); then
  if [[ $(id -u) == 0 ]]; then
    echo "fgvc: installing ${fgvc_missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${fgvc_missing[@]}" >/dev/null
  else
    echo "fgvc: missing packages; run: sudo apt-get install -y ${fgvc_missing[*]}" >&2
    exit 1
  fi
fi
