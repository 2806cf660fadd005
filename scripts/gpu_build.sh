#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, once the working tree and .gpu (made by
# scripts/gpu_prepare.sh on the CPU side) are there:
#   scripts/gpu_build.sh BUILD_DIR [extra cmake arguments...]
# Configures the model-only tree (MUSTDROP_VIDEO=OFF) with its tests and, where nvcc exists, the
# CUDA kernels; the Debian packages come from .gpu/deps, LibTorch from CMAKE_PREFIX_PATH or the
# torch package of Python. Then builds it with every core (MUSTDROP_BUILD_JOBS overrides).
# Environment: PYTHON (default python3) is asked for torch.utils.cmake_prefix_path;
# MUSTDROP_CUDA_ARCHITECTURES (default 90, H100/H200) names the GPUs the kernels are built for.
set -euo pipefail

if (($# < 1)); then
  echo "usage: $0 BUILD_DIR [extra cmake arguments...]" >&2
  exit 2
fi
build_dir=$1
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

deps=$here/.gpu/deps/usr
if [[ ! -d $deps ]]; then
  echo "gpu_build: $deps is missing: run scripts/gpu_prepare.sh on the CPU side and carry .gpu" >&2
  exit 1
fi
# The multiarch directory is whatever Debian named it; find it by a library we carry.
carried=("$deps"/lib/*/libyaml-cpp.so.*)
libdir=$(dirname "${carried[0]}")
if [[ ! -d $libdir ]]; then
  echo "gpu_build: no libyaml-cpp under $deps/lib: .gpu/deps is incomplete; rerun scripts/gpu_prepare.sh" >&2
  exit 1
fi

# Carried CMake packages first; torch's own prefix when Python can name it. A failure here is no
# error: LibTorch may be on CMAKE_PREFIX_PATH already (environment or extra arguments).
prefix_path="$deps;$libdir/cmake"
python=${PYTHON:-python3}
if torch_prefix=$("$python" -c 'import torch, sys; sys.stdout.write(torch.utils.cmake_prefix_path)' 2>/dev/null); then
  echo "gpu_build: LibTorch from $python's torch: $torch_prefix"
  prefix_path="$prefix_path;$torch_prefix"
else
  echo "gpu_build: $python cannot import torch; LibTorch must be found through CMAKE_PREFIX_PATH or the system"
fi

# nvcc on PATH wins, as it does for the FindCUDAToolkit that a CUDA LibTorch runs; both must see
# the same toolkit or Torch's CMake stops on a version mismatch.
nvcc=$(command -v nvcc || true)
if [[ -z $nvcc && -x /usr/local/cuda/bin/nvcc ]]; then
  nvcc=/usr/local/cuda/bin/nvcc
fi
cuda_args=()
if [[ -n $nvcc ]]; then
  nvcc_dir=$(dirname "$nvcc")
  export PATH="$nvcc_dir:$PATH"
  export CUDACXX=$nvcc
  # Named explicitly: CMake's own default is nvcc's oldest target (75 for CUDA 13), not the GPU's.
  cuda_archs=${MUSTDROP_CUDA_ARCHITECTURES:-90}
  cuda_args=(-DMUSTDROP_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc" "-DCMAKE_CUDA_ARCHITECTURES=$cuda_archs")
  echo "gpu_build: CUDA kernels with $nvcc for sm_$cuda_archs"
else
  cuda_args=(-DMUSTDROP_CUDA=OFF)
  echo "gpu_build: no nvcc (PATH, /usr/local/cuda/bin): MUSTDROP_CUDA=OFF, the CUDA kernels are left out"
fi

# sentencepiece is found through pkg-config; the carried pkgconf stands in where there is none.
export PKG_CONFIG_PATH="$libdir/pkgconfig:$deps/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
pkg_args=()
if ! command -v pkg-config >/dev/null; then
  pkg_args=("-DPKG_CONFIG_EXECUTABLE=$deps/bin/pkgconf")
fi

# CMAKE_BUILD_RPATH puts the carried libraries on every binary's run path, so nothing needs
# LD_LIBRARY_PATH; MUSTDROP_TEST_PATH gives the tests spm_train and friends.
cmake -S "$here" -B "$build_dir" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DMUSTDROP_VIDEO=OFF \
  -DMUSTDROP_BUILD_TESTS=ON \
  "${cuda_args[@]}" \
  "-DCMAKE_PREFIX_PATH=$prefix_path" \
  "-DCMAKE_BUILD_RPATH=$libdir" \
  "-DMUSTDROP_TEST_PATH=$deps/bin" \
  "${pkg_args[@]}" \
  "$@"
cmake --build "$build_dir" -j"${MUSTDROP_BUILD_JOBS:-$(nproc)}"

echo "gpu_build: built $build_dir; run the tests with: ctest --test-dir $build_dir -j$(nproc) --output-on-failure"
