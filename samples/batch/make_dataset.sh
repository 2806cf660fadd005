#!/usr/bin/env bash
# Builds a small video-QA dataset in the Video-LLaVA evaluation layout (test_q.json, test_a.json,
# videos/v_<name>.<ext>), ActivityNet-QA style ids and types, from generated clips and Debian's
# opencv-doc clips. Two faults on purpose: video "gone" has no file, video "broken" is not a video.
#   samples/batch/make_dataset.sh OUT_DIR
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:?usage: make_dataset.sh OUT_DIR}
mkdir -p "$out/videos"
v=$out/videos
data=/usr/share/doc/opencv-doc/examples/data

"$root/tools/make_sample_video" "$v/v_street_low.mp4" --seconds 3 --size 320x180 --motion low
"$root/tools/make_sample_video" "$v/v_street_busy.mkv" --seconds 3 --size 320x180 --motion high
"$root/tools/make_sample_video" "$v/v_street_still.avi" --seconds 2 --size 320x180 --motion static --codec mpeg4
ffmpeg -loglevel error -y -f lavfi -i testsrc2=s=256x144:r=15:d=2 -c:v libx264 -pix_fmt yuv420p "$v/v_pattern.mov"
for clip in tree Megamind; do
  [[ -f $data/$clip.avi ]] || { echo "make_dataset: $data/$clip.avi missing (apt-get install opencv-doc)" >&2; exit 1; }
  cp "$data/$clip.avi" "$v/v_$(tr 'A-Z' 'a-z' <<<"$clip").avi"
done
head -c 20000 /dev/urandom > "$v/v_broken.mp4"   # not a video

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
# (video, question, answer, type); types as in ActivityNet-QA: 0 motion, 1 spatial, 2 temporal,
# 3 yes/no, 4 color, 5 object, 6 location, 7 number, 8 other.
qa = [
    ("street_low", "is the car moving", "yes", 3),
    ("street_low", "what color is the sky", "blue", 4),
    ("street_low", "how many cars are there", "one", 7),
    ("street_busy", "are there many moving objects", "yes", 3),
    ("street_busy", "what is the weather like", "sunny", 8),
    ("street_still", "does anything move", "no", 3),
    ("street_still", "what is on the left", "building", 1),
    ("pattern", "what is shown", "test pattern", 5),
    ("pattern", "is this a natural scene", "no", 3),
    ("tree", "what is swaying in the wind", "tree", 5),
    ("tree", "where was this filmed", "outdoors", 6),
    ("megamind", "what color is the character", "blue", 4),
    ("megamind", "what happens after the character turns", "he talks", 2),
    ("gone", "what is the man doing", "running", 0),
    ("broken", "what is in the video", "nothing", 8),
]
questions = [{"video_name": v, "question": q, "question_id": f"v_{v}_{i}"} for i, (v, q, a, t) in enumerate(qa)]
answers = [{"answer": a, "type": t, "question_id": f"v_{v}_{i}"} for i, (v, q, a, t) in enumerate(qa)]
answers.reverse()  # joined by question_id, never by position
json.dump(questions, open(f"{out}/test_q.json", "w"), indent=1)
json.dump(answers, open(f"{out}/test_a.json", "w"), indent=1)
print(f"make_dataset: {len(questions)} questions over {len({v for v, *_ in qa})} videos -> {out}")
PY
