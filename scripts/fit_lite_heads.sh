#!/usr/bin/env bash
# Fits the Food-101 heads that `dishcam models pull lite` ships (install/assets/lite/heads/), on the
# real data in ../shared/data. These are the exact commands that produced the committed files.
#
# Validation split: every photo or title whose id has is_holdout(id, 0.2) (FNV-1a of the id; see
# runtime/src/dataset.rs) is held out from fitting and used for temperature scaling and the
# numbers in head.json; the rest trains. Fusion pairs photos with titles of their class from the
# titles the text head did not train on (a proxy: there are no real UPMC image/title pairs here).
#
# Stages, because the fusion heads are fitted on top of the installed image and text heads:
#   ./scripts/fit_lite_heads.sh single   # image head + text head -> install/assets/lite/heads/
#   (rebuild, `dishcam models pull lite --force`)
#   ./scripts/fit_lite_heads.sh fusion   # early + late fusion heads -> install/assets/lite/heads/
#   ./scripts/fit_lite_heads.sh no-dish  # the no-dish check's thresholds -> install/assets/lite/
# (`no-dish` reads the photos as they come, so it does not depend on the heads.)
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DISHCAM_DATA:-../shared/data}
OUT=install/assets/lite/heads
BIN=${DISHCAM_BIN:-./target/debug/dishcam}
mkdir -p "$OUT"

case "${1:-}" in
single)
  # Every photo prepared the way the 64 px set was made (centred square, bicubic to 64 px, JPEG
  # q75 4:2:0: `--degrade 64`, JPEG quality 75 by default), the set's own files included (a
  # no-op resize, a second JPEG pass), so the 10 classes that also have full-size photos cannot
  # be told apart by how their photos were made. head.json records the preparation and every
  # command serves photos through it (`dishcam eval probe` checks the two sources match).
  "$BIN" teach --pack lite \
    --images "$D/food101-64px/train" --images "$D/food101-10class/train" \
    --classes "$D/food101/meta/classes.txt" --degrade 64 --holdout 0.2 \
    --max-iters 100 --exemplars 10 --name food101 --out "$OUT" --json
  "$BIN" teach --pack lite \
    --text-csv "$D/upmc-food101/titles_dev.csv" \
    --classes "$D/food101/meta/classes.txt" --holdout 0.2 \
    --max-iters 100 --exemplars 10 --name food101-text --out "$OUT" --json
  ;;
fusion)
  "$BIN" teach --pack lite \
    --images "$D/food101-64px/train" --images "$D/food101-10class/train" \
    --text-csv "$D/upmc-food101/titles_dev.csv" --degrade 64 --holdout 0.2 \
    --image-head food101 --text-head food101-text \
    --max-iters 100 --name food101-fusion --out "$OUT" --json
  ;;
no-dish)
  # Thresholds at 97 % food recall on the training split of both photo sets (full-size photos
  # and, separately, thumbnails under 128 px); `eval no-dish --split holdout` then measures it.
  "$BIN" eval no-dish --pack lite \
    --food "$D/food101-64px/train" --food "$D/food101-10class/train" --split train \
    --calibrate 0.97 --write install/assets/lite/no_dish.json
  ;;
*)
  echo "usage: $0 single|fusion|no-dish" >&2
  exit 2
  ;;
esac
