#!/usr/bin/env bash
# One-time setup for mustdrop on Debian 12: installs every Debian package the project and its
# tests need (idempotent: apt skips what is present), then configures and builds a Release build.
#   scripts/setup.sh            install + build into ./build
#   scripts/setup.sh --deps     install packages only
#   scripts/setup.sh --build    build only (packages already present)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${MUSTDROP_BUILD_DIR:-$here/build}
do_deps=1
do_build=1
case "${1:-}" in
  --deps) do_build=0 ;;
  --build) do_deps=0 ;;
  "") ;;
  *) echo "usage: $0 [--deps|--build]" >&2; exit 2 ;;
esac

packages=(
  # toolchain
  g++ cmake ninja-build pkg-config git python3
  # an independent reference for the model tests (skipped where absent)
  python3-torch
  # model runtime; libopenblas0-openmp matters: without it LibTorch runs on reference BLAS (~30x slower).
  # Not libopenblas0-pthread: its threads fight LibTorch's OpenMP threads.
  libtorch-dev libopenblas0-openmp libsentencepiece-dev sentencepiece
  # video
  libavformat-dev libavcodec-dev libavutil-dev libswscale-dev libavfilter-dev ffmpeg
  # pipeline, config, CLI, logging, JSON
  libtbb-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libcpp-httplib-dev
  # tests: gtest, python3 (a local HTTP server), the RTSP test server (gst-rtsp-server + the plugins its pipelines use), real clips
  libgtest-dev libgmock-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
  opencv-doc
)

if [[ $do_deps == 1 ]]; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if [[ $(id -u) != 0 ]]; then
      echo "setup: missing packages (${missing[*]}); run this script as root to install them" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${packages[@]}"
  fi
fi

if [[ $do_build == 1 ]]; then
  cmake -S "$here" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMUSTDROP_BUILD_TESTS=ON
  cmake --build "$build_dir" -j "$(nproc)"
fi
