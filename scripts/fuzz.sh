#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer, debug assertions and overflow checks,
# AddressSanitizer unless SANITIZER says otherwise), one after the other at the lowest CPU
# priority, each until it has made RUNS executions or run for SECONDS, whichever comes first.
#
#   ./scripts/fuzz.sh                    # every target, 1,000,000 runs or 30 minutes each
#   ./scripts/fuzz.sh jsonld recipenlg   # some targets
#   SECONDS_PER_TARGET=300 ./scripts/fuzz.sh
#   SANITIZER=none ./scripts/fuzz.sh     # no ASan: a much shorter build and 2-3x the executions;
#                                        # panics, aborts, OOMs and timeouts are still caught, memory
#                                        # errors in dependencies' unsafe code are not
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). Working corpora
# grow in fuzz/corpus/<target>/ (not committed; seeded from tests/corpus/fuzz/<target>/, add
# local real inputs there too), crashes land in fuzz/artifacts/<target>/. Minimise a crash with
# `cargo +nightly fuzz tmin TARGET fuzz/artifacts/TARGET/crash-...`, fix it, and commit the
# minimised input to tests/corpus/fuzz/<target>/: `cargo test --test fuzz_regressions` (and, for
# `multipart`, the serve unit test `multipart_fuzz_corpus_gives_client_errors`) replays those
# on stable in CI. Logs go to fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
RUNS=${RUNS:-1000000}
SECONDS_PER_TARGET=${SECONDS_PER_TARGET:-1800}
SANITIZER=${SANITIZER:-address}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(image_preprocess pack_manifest recipe1m recipenlg jsonld jsonl multipart)
fi
# -timeout is wall-clock time: at nice 19 beside other work a unit that takes 0.8 s alone (a
# 16-megapixel JPEG, under the 64 MP limit) was once reported as a 10 s timeout. 30 s still catches
# hangs.
nice -n 19 cargo +nightly fuzz build --sanitizer "$SANITIZER"
mkdir -p logs
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    for f in ../tests/corpus/fuzz/"$t"/*; do
        [ -e "corpus/$t/${f##*/}" ] || cp "$f" "corpus/$t/"
    done
    echo "== $t: up to $RUNS runs or ${SECONDS_PER_TARGET}s"
    if ! nice -n 19 cargo +nightly fuzz run --sanitizer "$SANITIZER" "$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -runs="$RUNS" -rss_limit_mb=2048 -timeout=30 \
        -print_final_stats=1 2>&1 | tee "logs/$t.log" |
        { grep -E '^(#[0-9]+.*DONE|Done|stat::|==[0-9]+==ERROR|thread .* panicked)' || true; }; then
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "findings in: ${failed[*]} (see fuzz/artifacts/ and fuzz/logs/)" >&2
    exit 1
fi
