#!/usr/bin/env bash
# Adding a dish from 10 photos must be fast and must not hurt the old dishes. This measures it on
# the real data: fit a head on 100 Food-101 classes (one class, $NEW, left out), add $NEW from 10
# of its training photos with `dishcam teach --add-to`, and compare old-class top-1 on the held-out
# photos (is_holdout(id, 0.2)) before and after; new-class top-1 on $NEW's held-out photos.
#
# Usage: experiments/add_class_experiment.sh [NEW_CLASS]   (default bibimbap)
# Writes to a temporary DISHCAM_HOME (sharing the embedding cache), never to your overlay.
set -euo pipefail
cd "$(dirname "$0")/.."
NEW=${1:-bibimbap}
D=$(realpath "${DISHCAM_DATA:-../shared/data}")
BIN=${DISHCAM_BIN:-./target/debug/dishcam}
REAL_HOME=${DISHCAM_HOME:-$HOME/.local/share/dishcam}
PACK="$REAL_HOME/packs/lite"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/home" "$W/old64" "$W/old10" "$W/new/$NEW" "$W/newval/$NEW" "$REAL_HOME/cache"
ln -s "$REAL_HOME/cache" "$W/home/cache"
export DISHCAM_HOME="$W/home"

for c in "$D"/food101-64px/train/*/; do
  c=${c%/}; [ "$(basename "$c")" = "$NEW" ] || ln -s "$c" "$W/old64/"
done
for c in "$D"/food101-10class/train/*/; do
  c=${c%/}; [ "$(basename "$c")" = "$NEW" ] || ln -s "$c" "$W/old10/"
done
grep -vx "$NEW" "$D/food101/meta/classes.txt" > "$W/classes100.txt"

# The split rule of dishcam (runtime/src/dataset.rs): FNV-1a 64 of the id, mod 10000 < 2000.
python3 - "$D/food101-64px/train/$NEW" "$W/new/$NEW" "$W/newval/$NEW" <<'EOF'
import os, sys
src, train, val = sys.argv[1:]
def holdout(i):
    h = 0xcbf29ce484222325
    for b in i.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h % 10000 < 2000
names = sorted(os.listdir(src))
tr = [n for n in names if not holdout(os.path.splitext(n)[0])][:10]
for n in tr:
    os.symlink(os.path.join(src, n), os.path.join(train, n))
for n in names:
    if holdout(os.path.splitext(n)[0]):
        os.symlink(os.path.join(src, n), os.path.join(val, n))
EOF

run() { "$BIN" "$@" --pack "$PACK"; }
echo "== fit the 100-class head"
run teach --images "$W/old64" --images "$W/old10" --classes "$W/classes100.txt" --degrade 64 \
  --holdout 0.2 --max-iters 100 --name food100 --json > "$W/teach100.json"
echo "== old classes before"
run eval classify --data "$W/old64" --head food100 --split holdout --degrade 64 --json > "$W/before.json"
echo "== add $NEW from 10 photos"
/usr/bin/time -f "%e s wall" "$BIN" teach --pack "$PACK" --add-to food100 --images "$W/new" \
  --degrade 64 --max-iters 100 --json > "$W/add.json"
echo "== old classes after"
run eval classify --data "$W/old64" --head food100 --split holdout --degrade 64 --json > "$W/after.json"
echo "== $NEW held-out photos"
run eval classify --data "$W/newval" --head food100 --split all --degrade 64 --json > "$W/new.json"

python3 - "$W" "$NEW" <<'EOF'
import json, sys
w, new = sys.argv[1:]
j = lambda n: json.load(open(f"{w}/{n}.json"))
before, after, add, newc = j("before"), j("after"), j("add"), j("new")
h = add["heads"][0]
print(json.dumps({
    "new_class": new,
    "old_classes_holdout_photos": before["examples"],
    "old_top1_before": before["top1"],
    "old_top1_after": after["top1"],
    "old_top1_drop_points": round((before["top1"] - after["top1"]) * 100, 2),
    "new_class_holdout_photos": newc["examples"],
    "new_class_top1": newc["top1"],
    "add_embed_seconds": h["embed_seconds"],
    "add_refit_seconds": h["refit_seconds"],
    "add_total_seconds": add["seconds"],
}, indent=2))
EOF
