#!/usr/bin/env bash
# The device check (docs/gpu.md). On a machine with a GPU, CMake, a C++ compiler, nvcc and
# PyTorch, but no Debian packages and no internet:
#   1. builds the model-side targets against that PyTorch's LibTorch (scripts/gpu_build.sh);
#   2. runs the tests that need a GPU (attention paths, GPU-vs-host logits, every pipeline on the
#      GPU against the host) and the model, prune and session tests on the host of that build;
#   3. runs the comparison table (none, mustdrop_64, mustdrop, fastv_64, tome_64, sparsevlm_64)
#      on LLaVA-1.5-7B shapes at full depth, random weights in bf16, over 8 frames prepared on a
#      CPU machine.
# Everything it writes goes to OUT_DIR: build.log, tests.log, parity.txt, table.md, table.json,
# summary.txt. It needs .gpu/ (made by scripts/gpu_prepare.sh on the CPU side, carried along).
#
#   scripts/gpu_check.sh OUT_DIR
#
# GPU_CHECK_DEVICE (default cuda) and GPU_CHECK_LLM_LAYERS / GPU_CHECK_VISION_LAYERS (default:
# the preset's full depth) exist so the script itself can be tried on a CPU machine at a small
# depth; the numbers of such a try say nothing about a GPU.
set -euo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)  # before the cd below: a relative OUT_DIR is the caller's
cd "$(dirname "$0")/.."
# The tests make their tiny model with spm_train (carried: such a machine has no sentencepiece).
export PATH="$PWD/.gpu/deps/usr/bin:$PATH"
device=${GPU_CHECK_DEVICE:-cuda}
build=${GPU_CHECK_BUILD_DIR:-build-gpu}
frames=.gpu/frames-8.safetensors
t0=$SECONDS
stamp() { echo "[gpu_check $((SECONDS - t0)) s] $*" | tee -a "$out/summary.txt"; }

if [[ ! -f $frames ]]; then
  echo "gpu_check: $frames is missing: run scripts/gpu_prepare.sh on the CPU side and carry .gpu" >&2
  exit 2
fi
: >"$out/summary.txt"
stamp "start on $(hostname); device $device"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee -a "$out/summary.txt" || true

# 1. Build. A failed build ends the check: everything after needs it.
if ! scripts/gpu_build.sh "$build" >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log"
  stamp "build FAILED (build.log)"
  exit 1
fi
stamp "built"

# 2. Tests. The GPU ones first (they print the parity numbers), then the rest of the model-side
# suite; a failure is recorded and the table still runs.
status=0
gpu_filter='AttentionOnGpu.*:ModelOnGpu.*:*AttentionPaths.*:Attention.*'
{
  "$build/tests/unit/model/model_tests" --gtest_filter="$gpu_filter" || status=1
  "$build/tests/unit/session/session_tests" --gtest_filter='SessionOnGpu.*' || status=1
} >"$out/tests.log" 2>&1
grep -h '^\[gpu parity\]' "$out/tests.log" >"$out/parity.txt" || true
grep -hE '^\[  (PASSED|FAILED) +\] [0-9]|^\[  SKIPPED \] [0-9]' "$out/tests.log" | tee -a "$out/summary.txt" || true
stamp "gpu tests $([[ $status == 0 ]] && echo passed || echo FAILED)"
if ctest --test-dir "$build" -j "$(nproc)" --timeout 300 -E 'OnGpu' >>"$out/tests.log" 2>&1; then
  stamp "model-side ctest passed"
else
  status=1
  stamp "model-side ctest FAILED (tests.log)"
fi
grep -E 'tests passed|tests failed' "$out/tests.log" | tail -1 | tee -a "$out/summary.txt" || true

# 3. The table.
layers=()
[[ -n ${GPU_CHECK_LLM_LAYERS:-} ]] && layers+=(--llm-layers "$GPU_CHECK_LLM_LAYERS")
[[ -n ${GPU_CHECK_VISION_LAYERS:-} ]] && layers+=(--vision-layers "$GPU_CHECK_VISION_LAYERS")
dtype=bf16
[[ $device == cpu ]] && dtype=auto
if "$build/bench_table" --preset llava-1.5-7b "${layers[@]}" --device "$device" --dtype "$dtype" \
  --frames "$frames" --question "What is the red car doing?" \
  --pipelines pipelines/none.yaml,pipelines/mustdrop_64.yaml,pipelines/mustdrop.yaml,pipelines/fastv_64.yaml,pipelines/tome_64.yaml,pipelines/sparsevlm_64.yaml \
  --repeats "${GPU_CHECK_REPEATS:-3}" --max-new-tokens 16 --json "$out/table.json" --markdown "$out/table.md" \
  >"$out/table.log" 2>&1; then
  cat "$out/table.md"
  stamp "table done"
else
  status=1
  tail -20 "$out/table.log"
  stamp "table FAILED (table.log)"
fi
cat "$out/parity.txt" 2>/dev/null || true
stamp "end, status $status"
exit $status
