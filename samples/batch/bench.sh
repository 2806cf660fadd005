#!/usr/bin/env bash
# Batch throughput on the generated dataset, measured side by side in one run:
#   - answers per second with 1 and 2 workers (none + mustdrop);
#   - the time the per-video feature cache saves when 3 pipelines share their vision stages
#     (none, fastv and random have none: one encoding serves all three).
# Usage: samples/batch/bench.sh [-- extra mustdrop batch arguments, e.g. --preset llava-1.5-7b --llm-layers 2 --vision-layers 2]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${MUSTDROP_BUILD_DIR:-$root/build}
cd "$root"
out=build/samples/batch-bench
[[ ${1:-} == -- ]] && shift
extra=("$@")
[[ -d $out/dataset ]] || samples/batch/make_dataset.sh "$out/dataset" > /dev/null
[[ -f $out/tiny-model/config.json ]] || "$build/make_tiny_model" "$out/tiny-model" > /dev/null
common=(--set dataset.dir=$out/dataset --set dataset.video_dir=$out/dataset/videos --set model.dir=$out/tiny-model)

run() {  # NAME ARGS... -> seconds and answers of a fresh run
  local name=$1; shift
  rm -rf "$out/$name"
  local t0 t1
  t0=$(date +%s.%N)
  "$build/mustdrop" --log-level warn batch configs/jobs/sample.yaml "${common[@]}" --set output_dir=$out/$name \
    "${extra[@]}" "$@" > /dev/null 2> "$out/$name.log"
  t1=$(date +%s.%N)
  local n
  n=$(grep -c '"status":"ok"' "$out/$name/predictions.jsonl")
  echo "$name $(python3 -c "print($t1 - $t0)") $n"
}

{
  run w1 --set workers=1
  run w2 --set workers=2
  three=(--set 'pipelines=[pipelines/none.yaml, pipelines/fastv.yaml, pipelines/random.yaml]')
  run cache_on "${three[@]}" --set feature_cache=true
  run cache_off "${three[@]}" --set feature_cache=false
} | tee "$out/times.txt"
python3 - "$out/times.txt" <<'PY'
import sys
t = {name: (float(sec), int(n)) for name, sec, n in (line.split() for line in open(sys.argv[1]))}
print("\n| run | wall s | answers | answers/s |\n|---|---:|---:|---:|")
for name, (sec, n) in t.items():
    print(f"| {name} | {sec:.1f} | {n} | {n / sec:.2f} |")
w1, w2 = (t[k][1] / t[k][0] for k in ("w1", "w2"))
on, off = t["cache_on"][0], t["cache_off"][0]
print(f"\n2 workers / 1 worker: {w2 / w1:.2f}x answers/s; feature cache with 3 pipelines sharing vision stages "
      f"saves {1 - on / off:.1%} of the wall time ({on:.1f} s vs {off:.1f} s)")
PY
