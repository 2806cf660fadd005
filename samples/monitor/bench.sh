#!/usr/bin/env bash
# The monitor measured side by side in one run, on a camera-like clip (a still street, a moving car)
# fed as fast as the machine allows:
#   - ingestion: frames per second into the memory, and CPU seconds per hour of video at 1 frame/s,
#     with mustdrop and with none (no dropping);
#   - the same while a question is answered every few seconds (ingestion never waits for answers);
#   - memory and RSS over the run (from the metrics events);
#   - time to first token of a question on a warm session against a cold one (`mustdrop bench session`).
# Usage: samples/monitor/bench.sh [-- model arguments]
#   default model: --preset llava-1.5-7b --llm-layers 2 --vision-layers 4 (7B shapes, random weights)
#   FRAMES=24 (frames per run), ASK_EVERY=4 (seconds between questions in the answering runs)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${MUSTDROP_BUILD_DIR:-$root/build}
cd "$root"
out=build/samples/monitor-bench
mkdir -p "$out"
[[ ${1:-} == -- ]] && shift
model=("$@")
((${#model[@]})) || model=(--preset llava-1.5-7b --llm-layers 2 --vision-layers 4)
frames=${FRAMES:-24}
ask_every=${ASK_EVERY:-4}
[[ -f $out/street.mp4 ]] || tools/make_sample_video "$out/street.mp4" --seconds 8 > /dev/null

run() {  # NAME PIPELINE ASK(0|1) -> a line of numbers (see the python below)
  local name=$1 pipeline=$2 ask=$3
  local cfg=$out/$name.yaml events=$out/$name.jsonl
  {
    echo "pipeline: pipelines/$pipeline.yaml"
    echo "generation: {max_new_tokens: 8}"
    echo "memory: {max_tokens: 3000}"
    echo "threads: {answers: 1}"
    echo "sources:"
    echo "  - {id: street, url: $out/street.mp4, realtime: false, loop: true, sampler: {kind: fps, fps: 1, frames: $frames}}"
    if [[ $ask == 1 ]]; then
      echo "questions:"
      echo "  - {id: q, text: \"What is the car doing?\", every_sec: $ask_every}"
    fi
    echo "http: {enabled: false}"
    echo "events: {path: $events}"
    echo "metrics_interval_sec: 5"
  } > "$cfg"
  rm -f "$events"
  /usr/bin/time -f "%e %U %S %M" -o "$out/$name.time" \
    "$build/mustdrop" monitor "$cfg" "${model[@]}" --no-interactive --warmup-frames 4 > /dev/null 2> "$out/$name.log"
  python3 - "$name" "$events" "$out/$name.time" "$frames" <<'PY'
import json, sys
from datetime import datetime
name, path, timing, frames = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ev = [json.loads(l) for l in open(path)]
ts = lambda e: datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
live = next(e for e in ev if e["type"] == "state" and e["to"] == "live")
stop = next(e for e in ev if e["type"] == "stop")
wall, user, sys_, maxrss_kb = map(float, open(timing).read().split())
src = stop["sources"]["street"]
ingest_sec = ts(stop) - ts(live)
answers = [e for e in ev if e["type"] == "answer"]
ttft = sorted(a["ttft_ms"] for a in answers)
mem = [(round(ts(e) - ts(live)), e["status"]["memory"]["bytes"] // 1024, e["rss_bytes"] // 2**20) for e in ev if e["type"] == "metrics"]
print(json.dumps({"run": name, "frames": src["frames"]["encoded"], "ingest_sec": round(ingest_sec, 1),
                  "fps": round(src["frames"]["encoded"] / ingest_sec, 3),
                  "cpu_sec": round(user + sys_, 1),
                  "cpu_sec_per_video_hour": round((user + sys_) / frames * 3600),
                  "answers": len(answers), "ttft_ms_median": ttft[len(ttft) // 2] if ttft else None,
                  "memory_tokens_end": src["memory"]["n_tokens"], "memory_peak_kib": src["memory"]["peak_bytes"] // 1024,
                  "rss_warm_mib": stop["rss_after_warmup_bytes"] // 2**20, "rss_end_mib": stop["rss_bytes"] // 2**20,
                  "memory_over_time_s_kib_mib": mem}))
PY
}

echo "model: ${model[*]}; $frames frames per run at 1 frame/s of a looped 8 s street clip"
for p in mustdrop none; do
  run "$p" "$p" 0
  run "$p-asking" "$p" 1
done | tee "$out/results.jsonl"
python3 - "$out/results.jsonl" <<'PY'
import json, sys
r = {x["run"]: x for x in map(json.loads, open(sys.argv[1]))}
print("\n| run | frames/s | CPU s per video hour | answers | median TTFT ms | memory tokens (end) | peak memory KiB | RSS warm -> end MiB |")
print("|---|---|---|---|---|---|---|---|")
for k, x in r.items():
    print(f"| {k} | {x['fps']} | {x['cpu_sec_per_video_hour']} | {x['answers']} | {x['ttft_ms_median']} | "
          f"{x['memory_tokens_end']} | {x['memory_peak_kib']} | {x['rss_warm_mib']} -> {x['rss_end_mib']} |")
m, n = r["mustdrop"], r["none"]
print(f"\nmustdrop / none: {m['fps'] / n['fps']:.2f}x the frames per second, "
      f"{m['cpu_sec_per_video_hour'] / n['cpu_sec_per_video_hour']:.3f} of the CPU time per video hour")
for p in ("mustdrop", "none"):
    print(f"{p}: frames/s while answering / without: {r[p + '-asking']['fps'] / r[p]['fps']:.2f}")
PY

echo
echo "warm vs cold time to first token (mustdrop bench session):"
"$build/mustdrop" --log-level warn bench session --video "$out/street.mp4" "${model[@]}" \
  --pipelines pipelines/mustdrop.yaml,pipelines/none.yaml --frames 6 --stream-frames 12 --budget-tokens 1500 \
  --max-new-tokens 4 --json "$out/session.json"
