#!/usr/bin/env bash
# Runs every test: installs the `lite` pack (idempotent) so that parity and CLI tests can use it,
# then the whole workspace's tests. Tests that read ../shared/data use it when present and print
# a loud SKIPPED line when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -- models pull lite
cargo nextest run --workspace --no-fail-fast "$@"
