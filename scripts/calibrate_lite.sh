#!/usr/bin/env bash
# Computes the lite pack's INT8 calibration table (models/assets/lite/calibration.json), from
# which `dishcam models pull lite` builds the int8 variants on any machine, with no photos.
# These are the exact commands that produced the committed file.
#
# Data: the full-size Food-101 photos in ../shared/data/food101-10class/train. A hash of
# "<class>/<file>" splits them: 20 % are held out for the fp32-vs-int8 agreement check (all 726
# of them; until 2026-11-22 only the first 200 in hash order), the first 500 of the rest (in hash
# order, so classes mix) calibrate.
# The text check uses 500 UPMC Food-101 titles (titles_dev.csv).
#
# Layers left in fp32: `--keep-fp32 auto` ranks every quantisable layer by the embedding cosine
# it wins alone in fp32, on the first 100 calibration photos (never validation photos), and keeps
# the fewest most sensitive ones that lift that cosine to 0.999 (at most 4). The table records
# them. `--compare-keep` also checks 0-4 of them on the validation photos, for the report only:
# the choice does not look at validation.
#
#   ./scripts/calibrate_lite.sh            # writes the table and prints the report
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DISHCAM_DATA:-../shared/data}
BIN=${DISHCAM_BIN:-./target/debug/dishcam}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$BIN" calibrate --pack lite --backend onnxruntime \
  --images "$D/food101-10class/train" --samples 500 --validate 1000 \
  --method entropy --compare percentile,max,mse \
  --keep-fp32 auto --keep-fp32-cosine 0.999 --keep-fp32-max 4 --compare-keep 0,1,2,3,4 \
  --text-csv "$D/upmc-food101/titles_dev.csv" --out "$OUT"
cp "$OUT"/calibration/*/image_encoder.calibration.json models/assets/lite/calibration.json
cp "$OUT"/calibration/*/report.md models/assets/lite/calibration-report.md
echo "wrote models/assets/lite/calibration.json"
