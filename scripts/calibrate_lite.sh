#!/usr/bin/env bash
# Computes the lite pack's INT8 calibration table (install/assets/lite/calibration.json), from
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
# Learned rounding (since 2026-11-23): scripts/adaround_lite.py then learns, layer by layer, which
# weights of that INT8 model round the other way from nearest, on the first 256 of the same
# calibration photos, and a second calibration (same photos and method, so the same amax; the
# same layers kept, named) writes the final table with that rounding in it, and the report.
# The first run's report (with the --compare-keep rows) is kept as calibration-report-nearest.md.
#
#   ./scripts/calibrate_lite.sh            # writes the table and prints the report
#   ./scripts/calibrate_lite.sh report     # only the report, from the committed table
#
# `report` reruns the second calibration alone, with the committed table's rounding (about 2
# minutes instead of 20): it checks that the table it writes is byte-identical to the committed
# one, and replaces calibration-report.md (for a report whose code changed, or new speeds).
#
# Needs the trainer's Python environment (trainer/setup.sh: torch, onnx, onnxruntime) for the
# rounding, and the installed lite pack (its fp32 encoder and Food-101 head).
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DISHCAM_DATA:-../shared/data}
BIN=${DISHCAM_BIN:-./target/debug/dishcam}
PY=${DISHCAM_TRAIN_PYTHON:-$HOME/.cache/dishcam-train/bin/python}
PACK=${DISHCAM_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/dishcam}/packs/lite
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
common=(--pack lite --backend onnxruntime
  --images "$D/food101-10class/train" --samples 500 --validate 1000
  --method entropy --compare percentile,max,mse
  --text-csv "$D/upmc-food101/titles_dev.csv")
TABLE=install/assets/lite/calibration.json
# The layers a calibration table keeps in fp32, comma-separated.
kept_layers() {
  "$PY" -c 'import json, sys; print(",".join(json.load(open(sys.argv[1]))["keep_fp32"]))' "$1"
}
# The final calibration: the same photos and method, the given layers kept, $OUT/rounding.json.
learned_calibration() {
  "$BIN" calibrate "${common[@]}" --keep-fp32 "$1" --rounding "$OUT/rounding.json" \
    --out "$OUT/learned"
}
if [ "${1:-}" = report ]; then
  "$PY" - "$TABLE" "$OUT/rounding.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
json.dump({"model_sha256": t["model_sha256"], "weights": t["weight_rounding"]}, open(sys.argv[2], "w"))
PY
  learned_calibration "$(kept_layers "$TABLE")"
  if ! cmp -s "$OUT"/learned/calibration/*/image_encoder.calibration.json "$TABLE"; then
    echo "the table this run wrote differs from $TABLE: run the whole script" >&2
    exit 1
  fi
  cp "$OUT"/learned/calibration/*/report.md install/assets/lite/calibration-report.md
  echo "wrote install/assets/lite/calibration-report.md (the table is unchanged)"
  exit 0
fi
"$BIN" calibrate "${common[@]}" \
  --keep-fp32 auto --keep-fp32-cosine 0.999 --keep-fp32-max 4 --compare-keep 0,1,2,3,4 \
  --out "$OUT/nearest"
first=$(echo "$OUT"/nearest/calibration/*)
cp "$first"/report.md install/assets/lite/calibration-report-nearest.md
"$PY" scripts/adaround_lite.py --pack "$PACK" --data "$D/food101-10class/train" \
  --int8 "$first"/image_encoder.int8.onnx --samples 256 --iters 1000 --out "$OUT/rounding.json"
learned_calibration "$(kept_layers "$first"/image_encoder.calibration.json)"
cp "$OUT"/learned/calibration/*/image_encoder.calibration.json "$TABLE"
cp "$OUT"/learned/calibration/*/report.md install/assets/lite/calibration-report.md
echo "wrote install/assets/lite/calibration.json"
