#!/usr/bin/env bash
# Runs every test: installs what the tests need (scripts/setup.sh) and the `lite` pack (both
# idempotent) so that parity and CLI tests can use it,
# then the whole workspace's tests, then the trainer's (ruff + pytest in its own Python
# environment; its export tests drive the `dishcam` binary built here). Tests that read
# ../shared/data use it when present and print a loud SKIPPED line when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the tests need (chromium and chromedriver for the browser test, the camera libraries,
# cargo-nextest): installed when missing, silent when everything is there.
./scripts/setup.sh
# Build exactly what `cargo nextest run --workspace` builds (a plain `cargo run` resolves
# features for the binary alone and would compile tract a second time).
cargo build -q --workspace --all-targets
# Also fetches the onnxruntime and OpenVINO libraries (pinned wheels), so the backend suites and
# the parity tests run on both instead of printing `SKIPPED (openvino)`.
./target/debug/dishcam models pull lite
# Real photos without a dish (the scikit-image wheel's samples, pinned) for tests/no_dish.rs.
./scripts/fetch_nonfood.sh >/dev/null
status=0
cargo nextest run --workspace --no-fail-fast "$@" || status=$?
DISHCAM_BIN="$PWD/target/debug/dishcam" ./trainer/test.sh || status=$?
# The aarch64 NEON int8 scan against the portable loop, cross-compiled and run under qemu.
./scripts/check-neon.sh || status=$?
exit $status
