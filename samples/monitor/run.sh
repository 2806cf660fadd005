#!/usr/bin/env bash
# monitor: one camera (a generated clip served by a local RTSP server) watched by `mustdrop monitor`:
# questions over the HTTP API (plain and streamed), /metrics, pause and resume, a scheduled
# question, then SIGINT and the events file. Without build/tests/rtsp_test_server (built with the
# tests when gst-rtsp-server is installed) the clip is played as a camera instead (realtime, loop).
# Usage: samples/monitor/run.sh   (writes under build/samples/monitor; run from anywhere; about 20 s)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${MUSTDROP_BUILD_DIR:-$root/build}
for tool in "$build/mustdrop" "$build/make_tiny_model"; do
  [[ -x $tool ]] || { echo "monitor: $tool is missing; build first (scripts/setup.sh)" >&2; exit 1; }
done
for tool in curl python3; do
  command -v "$tool" > /dev/null || { echo "monitor: $tool is needed" >&2; exit 1; }
done
cd "$root"  # samples/monitor/monitor.yaml names its paths relative to the repository
out=build/samples/monitor
events=$out/events.jsonl
step() { printf '\n== %s\n' "$*"; }
fail() {
  echo "monitor: FAILED: $*" >&2
  if [[ -s $out/monitor.log ]]; then echo "-- the last lines of $out/monitor.log:" >&2; tail -n 15 "$out/monitor.log" >&2; fi
  exit 1
}

# Background processes: ended on any exit (the monitor gets SIGKILL only if it is still running then).
server_pid='' monitor_pid=''
cleanup() {
  if [[ -n $monitor_pid ]]; then kill -KILL "$monitor_pid" 2> /dev/null || true; fi
  if [[ -n $server_pid ]]; then kill -TERM "$server_pid" 2> /dev/null || true; fi
  wait 2> /dev/null || true
}
trap cleanup EXIT

# Runs "$@" every 0.2 s until it succeeds; fails after $1 seconds or when the monitor has died.
wait_until() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" > /dev/null 2>&1; do
    if [[ -n $monitor_pid ]] && ! kill -0 "$monitor_pid" 2> /dev/null; then fail "the monitor exited while waiting for $what"; fi
    ((SECONDS < deadline)) || fail "no $what within $seconds s"
    sleep 0.2
  done
}
# Prints the port of the events file's {"type":"http"} line (fails while there is none).
http_port() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    e = json.loads(l)
    if e["type"] == "http": print(e["port"]); sys.exit(0)
sys.exit(1)' "$events"; }
# GET/POST with a deadline; the body goes to stdout, and a status other than $1 fails the sample.
http() {
  local want=$1 method=$2 path=$3 data=${4:-} code
  local args=(-sS --max-time 60 -X "$method" -o "$out/reply" -w '%{http_code}')
  [[ -n $data ]] && args+=(-H 'Content-Type: application/json' -d "$data")
  code=$(curl "${args[@]}" "$api$path") || fail "$method $path: curl failed"
  [[ $code == "$want" ]] || fail "$method $path: HTTP $code (wanted $want): $(cat "$out/reply")"
  cat "$out/reply"
}
# Reads GET /v1/sources/street and evaluates a Python expression over it (`s`); true when it holds.
source_is() { curl -sS --max-time 5 "$api/v1/sources/street" | python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($1) else 1)"; }
source_field() { curl -sS --max-time 5 "$api/v1/sources/street" | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"; }
events_have() { python3 -c "import json,sys; sys.exit(0 if any(($1) for e in map(json.loads, open(sys.argv[1]))) else 1)" "$events"; }

step "1. a tiny random model in the Hugging Face layout -> $out/tiny-model"
"$build/make_tiny_model" "$out/tiny-model" --overwrite

step "2. a 60 s street scene (a static background, one moving car), 320x180 at 25 fps -> $out/street.mp4"
"$root/tools/make_sample_video" "$out/street.mp4" --seconds 60 --size 320x180

server=$build/tests/rtsp_test_server
url_set=()
if [[ -x $server ]]; then
  step "3. the camera: $server serving the clip in real time over RTSP"
  "$server" --port 0 --file "$root/$out/street.mp4" --seconds 150 > "$out/rtsp.out" 2> "$out/rtsp.log" &
  server_pid=$!
  grep_port() { grep -m1 -oE '^PORT [0-9]+' "$out/rtsp.out" | cut -d' ' -f2; }
  wait_until 15 "PORT line from the RTSP server" grep -q '^PORT ' "$out/rtsp.out"
  url=rtsp://127.0.0.1:$(grep_port)/stream
  url_set=(--set "sources.0.url=$url")
else
  step "3. the camera: $server is missing (it is built with the tests, on gst-rtsp-server); the clip is played as a camera instead (realtime, loop)"
  url=$out/street.mp4
  url_set=(--set "sources.0.url=$url" --set sources.0.loop=true)
fi
echo "camera: $url"

step "4. mustdrop monitor samples/monitor/monitor.yaml in the background (log: $out/monitor.log)"
rm -f "$events" "$events".[0-9]*
"$build/mustdrop" monitor samples/monitor/monitor.yaml --model "$out/tiny-model" "${url_set[@]}" --no-interactive \
  > "$out/monitor.out" 2> "$out/monitor.log" &
monitor_pid=$!
wait_until 60 '{"type":"http"} line in the events file' http_port
api=http://127.0.0.1:$(http_port)
echo "HTTP API: $api/v1"
wait_until 60 "frames encoded from the camera" source_is 's["state"] == "live" and s["frames"]["encoded"] >= 3'
http 200 GET /v1/sources/street | python3 -c 'import json,sys; s=json.load(sys.stdin)
print(json.dumps({k: s[k] for k in ("id", "state", "frames")}))
print("memory:", json.dumps({k: s["memory"][k] for k in ("n_frames", "n_tokens", "token_capacity", "span_utc")}))'

step "5. a question over the HTTP API (POST /v1/chat/completions; the words are random)"
question='{"model": "street", "messages": [{"role": "user", "content": "What is the red car doing?"}], "max_tokens": 12'
http 200 POST /v1/chat/completions "$question}" > "$out/answer.json"
python3 - "$out/answer.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
choice = r["choices"][0]
print("answer:", json.dumps(choice["message"]["content"]), "| finish_reason:", choice["finish_reason"], "| usage:", json.dumps(r["usage"]))
m = r["mustdrop"]
print("mustdrop:", json.dumps({k: m[k] for k in ("source", "memory_span_utc", "n_frames", "vision_tokens")}))
for g in m["grounding"]:
    print(f"  grounding: {g['share']:.2f} of the attention on {g['from_utc']} .. {g['to_utc']} ({g['n_tokens']} tokens)")
assert r["model"] == "street" and m["grounding"], "no grounding in the reply"
PY

step "6. the same, streamed as server-sent events (curl -N; the first chunks and the last)"
curl -sS -N --max-time 60 -H 'Content-Type: application/json' -o "$out/stream.txt" \
  -d "$question, \"stream\": true, \"stream_options\": {\"include_usage\": true}}" "$api/v1/chat/completions" ||
  fail "the streamed question failed"
grep '^data: ' "$out/stream.txt" | head -n 3 | cut -c1-150
echo "..."
grep '^data: ' "$out/stream.txt" | tail -n 2 | cut -c1-150
python3 - "$out/stream.txt" <<'PY'
import json, sys
data = [l[6:] for l in open(sys.argv[1]).read().split("\n") if l.startswith("data: ")]
assert data and data[-1] == "[DONE]", "the stream did not end with [DONE]"
chunks = [json.loads(d) for d in data[:-1]]
text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
last = chunks[-1]
assert last["choices"][0]["finish_reason"] in ("stop", "length") and "mustdrop" in last, last
print(f"{len(chunks)} chunks; text: {json.dumps(text)}; usage: {json.dumps(last.get('usage'))}")
PY
echo "an unknown source is a 404:"
http 404 POST /v1/chat/completions '{"model": "garage", "messages": [{"role": "user", "content": "hi"}]}'
echo

step "7. GET /metrics (a few of the lines)"
http 200 GET /metrics > "$out/metrics.txt"
grep -E '^mustdrop_(frames_(decoded|sampled|encoded)_total|source_state\{.*"live"\}|memory_(tokens|budget_tokens)|frame_novelty|questions_answered_total|ttft_seconds_count|rss_bytes)' \
  "$out/metrics.txt" || fail "/metrics has none of the expected lines"

step "8. pause (the camera is disconnected, its memory stays), then resume"
http 200 POST /v1/sources/street/pause | python3 -c 'import json,sys; s=json.load(sys.stdin); print("pause: changed", s["changed"])'
wait_until 20 "paused state" source_is 's["state"] == "paused"'
paused_at=$(source_field 's["frames"]["encoded"]') || fail "GET /v1/sources/street failed"
echo "paused: $(source_field 's["memory"]["n_tokens"]') tokens in memory, $paused_at frames encoded"
sleep 1
http 200 POST /v1/sources/street/resume | python3 -c 'import json,sys; s=json.load(sys.stdin); print("resume: changed", s["changed"])'
wait_until 30 "frames after resuming" source_is "s['state'] == 'live' and s['frames']['encoded'] > $paused_at"
echo "live again: $(source_field 's["frames"]["encoded"]') frames encoded"

step "9. the scheduled question (every 5 s): its answers go to stdout and to the events file"
wait_until 30 "scheduled answer" events_have 'e["type"] == "answer" and e["origin"] == "schedule"'
head -n 2 "$out/monitor.out"

step "10. SIGINT: the monitor stops accepting, lets answers finish (--grace), writes a stop event and exits 0"
kill -INT "$monitor_pid"
deadline=$((SECONDS + 60))
while kill -0 "$monitor_pid" 2> /dev/null; do
  ((SECONDS < deadline)) || fail "the monitor did not exit within 60 s of SIGINT"
  sleep 0.2
done
rc=0
wait "$monitor_pid" || rc=$?
monitor_pid=''
((rc == 0)) || fail "the monitor exited with $rc after SIGINT"
echo "exit status 0"

step "11. a few events from $events"
python3 - "$events" <<'PY'
import json, sys
events = [json.loads(line) for line in open(sys.argv[1])]
def show(e, keys):
    print(json.dumps({k: e[k] for k in keys if k in e}))
types = [e["type"] for e in events]
print(f"{len(events)} events:", ", ".join(f"{t} x{types.count(t)}" for t in dict.fromkeys(types)))
for e in events:
    if e["type"] in ("start", "http", "state", "paused", "resumed", "scene_change", "outage_start", "outage_end", "question_missed"):
        show(e, ("ts", "type", "source", "from", "to", "question_id", "reason", "port", "pipeline", "share", "stream_sec", "changed"))
if "scene_change" not in types:
    print("(no scene_change: the car moves through a still street, far below the threshold of 0.5)")
answers = [e for e in events if e["type"] == "answer"]
a = next(e for e in answers if e["origin"] == "schedule")
show(a, ("type", "source", "question_id", "origin", "question", "answer", "ttft_ms"))
print("  memory:", json.dumps({k: a["memory"][k] for k in ("span_utc", "spans_outage") if k in a["memory"]}),
      "tokens:", json.dumps(a["tokens"]))
for g in a["grounding"]:
    print(f"  grounding: {g['share']:.2f} of the attention on {g['from_utc']} .. {g['to_utc']} ({g['n_tokens']} tokens)")
stop = events[-1]
assert stop["type"] == "stop" and stop["reason"] == "signal", "the last event is not a stop after the signal"
s = stop["sources"]["street"]
show(stop, ("type", "reason", "rss_bytes", "events_failed"))
print("  street:", json.dumps({"state": s["state"], "frames": s["frames"], "answers": s["answers"],
                              "peak_tokens": s["memory"]["peak_tokens"], "token_capacity": s["memory"]["token_capacity"]}))
origins = sorted({e["origin"] for e in answers})
assert {"http", "schedule"} <= set(origins), origins
assert all(e["grounding"] for e in answers), "an answer without grounding"
print(f"{len(answers)} answers ({', '.join(origins)}), every one with its grounding")
PY
