#!/usr/bin/env bash
# file-qa: two questions about a generated clip, answered with MustDrop and without token dropping;
# the two reports' token and FLOPs counts side by side. Usage: samples/file-qa/run.sh [OUT_DIR]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${MUSTDROP_BUILD_DIR:-$root/build}
out=${1:-$build/samples/file-qa}
for tool in "$build/mustdrop" "$build/make_tiny_model"; do
  [[ -x $tool ]] || { echo "file-qa: $tool is missing; build first (scripts/setup.sh)" >&2; exit 1; }
done
mkdir -p "$out"
step() { printf '\n== %s\n' "$*"; }

step "1. a tiny random model in the Hugging Face layout -> $out/tiny-model"
"$build/make_tiny_model" "$out/tiny-model" --overwrite

step "2. a 4 s street scene, 320x180 at 25 fps -> $out/street.mp4"
"$root/tools/make_sample_video" "$out/street.mp4" --seconds 4 --size 320x180

questions=(-q "What is the red car doing?" -q "Is the street busy?")
for pipeline in mustdrop none; do
  step "3/4. two questions, pipeline $pipeline (answers stream below; the words are random)"
  "$build/mustdrop" run "$out/street.mp4" --model "$out/tiny-model" "${questions[@]}" \
    --pipeline "$root/pipelines/$pipeline.yaml" --max-new-tokens 12 --json "$out/$pipeline.json"
done

step "5. the two reports side by side"
python3 - "$out/mustdrop.json" "$out/none.json" <<'PY'
import json, sys
md, none = (json.load(open(p)) for p in sys.argv[1:3])
rows = [
    ("frames sampled", "n_frames_sampled", "{:d}"),
    ("vision tokens out of the tower", "n_vision_tokens_in", "{:d}"),
    ("vision tokens into the LLM", "n_vision_tokens_to_llm", "{:d}"),
    ("vision tokens per LLM layer (mean)", "n_vision_tokens_layer_avg", "{:.1f}"),
    ("vision KV entries after decoding", "n_vision_kv_after_decode", "{:d}"),
    ("FLOPs (vision + prefill + decode)", "flops_total", "{:.3g}"),
    ("FLOPs of the same prompt undropped", "flops_unpruned", "{:.3g}"),
]
print(f"| {'':36} | {'mustdrop':>10} | {'none':>10} |")
print(f"|{'-' * 38}|{'-' * 12}|{'-' * 12}|")
for label, key, fmt in rows:
    print(f"| {label:36} | {fmt.format(md[key]):>10} | {fmt.format(none[key]):>10} |")
for i, (a, b) in enumerate(zip(md["answers"], none["answers"])):
    print(f"| {'TTFT ms, question ' + str(i + 1):36} | {a['ttft_ms']:>10.0f} | {b['ttft_ms']:>10.0f} |")
print(f"\nMustDrop sent {md['n_vision_tokens_to_llm'] / none['n_vision_tokens_to_llm']:.1%} of the vision tokens "
      f"and used {md['flops_total'] / none['flops_total']:.1%} of the FLOPs of no dropping.")
if not (md["n_vision_tokens_to_llm"] < none["n_vision_tokens_to_llm"] and md["flops_total"] < none["flops_total"]):
    sys.exit("file-qa: MustDrop did not reduce the tokens and FLOPs")
if len(md["answers"]) != 2 or len(none["answers"]) != 2:
    sys.exit("file-qa: expected two answers per pipeline")
PY

step "6. what MustDrop kept, drawn over each sampled frame -> $out/inspect/index.html"
"$build/mustdrop" inspect "$out/street.mp4" --model "$out/tiny-model" --pipeline "$root/pipelines/mustdrop.yaml" \
  -q "What is the red car doing?" --max-new-tokens 12 --out "$out/inspect"
[[ -s $out/inspect/index.html && -s $out/inspect/overlay_0000.png ]] || { echo "file-qa: inspect wrote no overlays" >&2; exit 1; }
