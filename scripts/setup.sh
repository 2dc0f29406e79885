#!/usr/bin/env bash
# Installs what building and testing dishcam needs on a fresh Debian/Ubuntu machine with a Rust
# toolchain. Safe to run again: it only installs what is missing.
set -euo pipefail

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
# The browser test of `dishcam serve` (tests/serve_browser.rs) drives headless Chromium.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
  else
    sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
  fi
fi

for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" || true
done
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
