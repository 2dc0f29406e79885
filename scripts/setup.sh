#!/usr/bin/env bash
# Installs what building and testing dishcam needs on a fresh Debian/Ubuntu machine with a Rust
# toolchain. Safe to run again: it only installs what is missing.
set -euo pipefail

#   ./scripts/setup.sh          everything the build, the tests and CI need
#   ./scripts/setup.sh build    only what building and `models pull` need (quickstart)
what="${1:-all}"

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
if [ "$what" = all ]; then
# The browser test of `dishcam serve` (tests/serve_browser.rs) drives headless Chromium.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# The camera features: `camera-v4l` runs bindgen over the V4L2 headers (libclang);
# `camera-gst` links GStreamer (found with pkg-config), and its tests decode with the base and
# good plugins (videotestsrc, videoconvert, jpegenc/jpegdec, avimux/avidemux).
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
for pkg in libclang-dev libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
  else
    sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
  fi
fi

[ "$what" = all ] || exit 0
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" || true
done
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
