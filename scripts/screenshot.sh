#!/usr/bin/env bash
# Screenshots of the `dishcam serve` page after uploading a Food-101 photo, taken by headless
# Chromium over WebDriver (the browser test tests/serve_browser.rs):
#   target/artifacts/serve-upload.png        1280x800
#   target/artifacts/serve-upload-phone.png  390 px wide (a phone), the whole page
# Needs the lite pack, Debian's chromium + chromium-driver (scripts/setup.sh installs them) and
# the shared Food-101 photos at ../shared/data (or $DISHCAM_SHARED_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --workspace --all-targets
./target/debug/dishcam models pull lite >/dev/null
cargo nextest run --workspace --test serve_browser --no-capture
ls -l target/artifacts/serve-upload*.png
