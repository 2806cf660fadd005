#!/usr/bin/env bash
# batch: a small video-QA dataset (Video-LLaVA layout, one missing and one corrupt video) answered
# with MustDrop and without dropping, then the same job split in two shards and merged.
# Usage: samples/batch/run.sh   (writes under build/samples/batch; run from anywhere)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${MUSTDROP_BUILD_DIR:-$root/build}
for tool in "$build/mustdrop" "$build/make_tiny_model"; do
  [[ -x $tool ]] || { echo "batch: $tool is missing; build first (scripts/setup.sh)" >&2; exit 1; }
done
cd "$root"  # configs/jobs/sample.yaml names its paths relative to the repository
out=build/samples/batch
step() { printf '\n== %s\n' "$*"; }

step "1. a tiny random model in the Hugging Face layout -> $out/tiny-model"
"$build/make_tiny_model" "$out/tiny-model" --overwrite

step "2. the dataset: 15 questions over 8 videos (video 'gone' has no file, 'broken' is not a video) -> $out/dataset"
rm -rf "$out/dataset" "$out/out"
samples/batch/make_dataset.sh "$out/dataset"

step "3. the job (configs/jobs/sample.yaml): none and mustdrop on the same 4 frames per video"
"$build/mustdrop" batch configs/jobs/sample.yaml

step "4. three prediction records (one per line in $out/out/predictions.jsonl)"
python3 - "$out/out/predictions.jsonl" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
for r in records[:2] + [r for r in records if r["status"] != "ok"][:1]:
    keep = {k: r.get(k) for k in ("question_id", "pipeline", "status", "question", "answer", "prediction", "error")}
    keep["vision_tokens_to_llm"] = (r.get("vision_tokens") or {}).get("to_llm")
    print(json.dumps({k: v for k, v in keep.items() if v is not None}))
ok = {(r["pipeline"], r["question_id"]) for r in records}
assert len(ok) == len(records) == 30, "each question once per pipeline"
PY

step "5. the same job in two shards (as a cluster would run it), then merged and checked"
"$build/mustdrop" --log-level warn batch configs/jobs/sample.yaml --set output_dir=$out/sharded --shard 0/2 > /dev/null
"$build/mustdrop" --log-level warn batch configs/jobs/sample.yaml --set output_dir=$out/sharded --shard 1/2 > /dev/null
"$build/mustdrop" batch merge "$out/sharded" --out "$out/sharded/merged" > /dev/null
python3 - "$out/out/predictions.jsonl" "$out/sharded/merged/predictions.jsonl" <<'PY'
import json, sys
one, merged = ({(r["pipeline"], r["question_id"]): r.get("prediction") for r in map(json.loads, open(p))} for p in sys.argv[1:3])
assert one == merged, "the merged shards differ from the single run"
print(f"merged shards: {len(merged)} records, the same predictions as the single run")
PY
