#!/usr/bin/env bash
# Latency of `dishcam classify` with and without the no-dish check and the photo preparation
# (issue 23): 20 held-out photos from each of the 64 px set, the full-size set and the
# scikit-image samples (not food), each classified 20 times on one thread; per photo the median
# of the whole path (decode to answer), then the median and p90 over photos.
#   --head food101                   the default: check on the photo as it comes, then, for
#                                    food, the prepared photo (a second encoder run)
#   --head food101 --no-dish-check   preparation only: one encoder run
#   --head imagenet --no-dish-check  neither: one encoder run on the photo as it comes
#                                    (what every photo cost before issue 23)
# Usage: experiments/classify_latency.sh [DATA] [SKIMAGE_DATA]   (run from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-../shared/data}
SK=${2:-$HOME/.cache/dishcam-test/skimage-data}
BIN=${DISHCAM_BIN:-./target/debug/dishcam}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
python3 - "$D" "$SK" "$T" <<'PY'
import os, random, sys
data, sk, out = sys.argv[1:4]

def fnv(s):  # runtime/src/dataset.rs: stable_hash
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h

def link(files, name):
    os.makedirs(f"{out}/{name}")
    for i, f in enumerate(files[:20]):
        os.symlink(os.path.abspath(f), f"{out}/{name}/{i:02d}_{os.path.basename(f)}")

for name, sub in [("food64", "food101-64px/train"), ("full", "food101-10class/train")]:
    root = f"{data}/{sub}"
    held = [f"{root}/{c}/{f}" for c in sorted(os.listdir(root)) for f in sorted(os.listdir(f"{root}/{c}"))]
    held = [f for f in held if fnv(os.path.splitext(os.path.basename(f))[0]) % 10000 < 2000]
    random.Random(0).shuffle(held)
    link(held, name)
link(sorted(f"{sk}/{f}" for f in os.listdir(sk) if f.endswith((".png", ".jpg"))), "nonfood")
PY
for set in food64 full nonfood; do
  for cfg in "--head food101" "--head food101 --no-dish-check" "--head imagenet --no-dish-check"; do
    # shellcheck disable=SC2086
    "$BIN" classify "$T/$set"/* --repeat 20 --json --threads 1 $cfg 2>/dev/null | python3 -c "
import json, statistics, sys
t = sorted(json.loads(l)['latency_ms']['stages']['total']['median_ms'] for l in sys.stdin)
p90 = t[min(len(t) - 1, round(0.9 * (len(t) - 1)))]
print(f'{\"$set\":8} {\"$cfg\":32} {len(t)} photos  median {statistics.median(t):6.2f} ms  p90 {p90:6.2f} ms')"
  done
done
