#!/usr/bin/env bash
# Checks the aarch64 NEON int8 recipe scan without an ARM machine: cross-compiles
# recipes/src/index/int8_scan.rs with its check (recipes/neon/check_scan.rs) for
# aarch64-unknown-linux-gnu and runs it under qemu-user, where the NEON path must equal the
# portable loop exactly. The workspace toolchain has no aarch64 standard library (rustup cannot
# fetch one here), so this uses Debian's rustc with its arm64 standard library (Rust 1.63; the
# file is kept within it) and the aarch64 cross linker. Installs them with apt-get the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
rustc_deb=/usr/bin/rustc
need=()
[ -x "$rustc_deb" ] || need+=(rustc)
[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] || need+=(libstd-rust-dev:arm64)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (Debian packages)"
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$rustc_deb" --edition 2021 -O --target aarch64-unknown-linux-gnu \
  -C linker=aarch64-linux-gnu-gcc recipes/neon/check_scan.rs -o "$out/check_scan"
# The binary must hold the NEON instructions (not a portable fallback the compiler kept).
if command -v aarch64-linux-gnu-objdump >/dev/null; then
  n=$(aarch64-linux-gnu-objdump -d "$out/check_scan" | grep -cE 'smull2?\s|sadalp\s' || true)
  echo "NEON widening multiplies / pairwise accumulates in the binary: $n"
  [ "$n" -ge 3 ] || { echo "no smull/sadalp found: the NEON path was not compiled" >&2; exit 1; }
fi
qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/check_scan"
