#!/usr/bin/env bash
# Soak test: runs `dishcam watch synthetic://?fps=30` and `dishcam serve synthetic://?fps=15`
# side by side for a given time, drives serve with a bounded request loop on loopback (one
# round of classify upload, state, metrics, frame.jpg, recipe search and a 2 s SSE read every
# 2 s), and samples both processes' resident memory (VmRSS) and open file descriptors every
# 10 s. At the end it checks that RSS stayed within 5 % of its value after warm-up and that no
# fds were gained, and writes a CSV and an SVG plot.
#
#   ./scripts/soak.sh [SECONDS] [OUT_DIR]      # default 3600 s into docs/soak
#
# Uses a release build (DISHCAM_BIN to point at another binary). The int8 lite pack, one
# intra-op thread each, so the soak runs beside other work on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-3600}
out=${2:-docs/soak}
warmup=${SOAK_WARMUP:-300}
every=10
if [ "$duration" -le "$warmup" ]; then
  warmup=$((duration / 4))
fi
# The commit the run is of, taken now: the tree may move on during an hour's run.
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
bin=${DISHCAM_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release
  bin=./target/release/dishcam
fi
data=${DISHCAM_SHARED_DATA:-../shared/data}
photo=$(find "$data/food101-10class/train" -name '*.jpg' 2>/dev/null | sort | head -1 || true)
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
if [ -z "$photo" ]; then
  # No Food-101 photos here: upload a frame of the synthetic pattern instead.
  "$bin" watch 'synthetic://?fps=30&size=320x240' --max-frames 1 --save-frames "$tmp/frames" -q >/dev/null
  photo=$(find "$tmp/frames" -type f | head -1)
fi
"$bin" models pull lite >/dev/null
"$bin" recipes index build >/dev/null 2>&1 || echo "note: no recipe index; recipe search answers empty"
mkdir -p "$out"

"$bin" watch 'synthetic://?fps=30&size=640x480' --json --stats-every 10 --precision int8 \
  --threads 1 -q >"$tmp/watch.jsonl" 2>"$tmp/watch.err" &
watch_pid=$!
pids+=("$watch_pid")
"$bin" serve 'synthetic://?fps=15&size=640x480' --bind 127.0.0.1:0 --precision int8 --threads 1 \
  -q >"$tmp/serve.out" 2>"$tmp/serve.err" &
serve_pid=$!
pids+=("$serve_pid")
for _ in $(seq 100); do
  grep -q '^listening on ' "$tmp/serve.out" 2>/dev/null && break
  sleep 0.2
done
url=$(sed -n 's/^listening on //p' "$tmp/serve.out" | head -1)
if [ -z "$url" ]; then
  echo "serve did not start:" >&2
  cat "$tmp/serve.err" >&2
  exit 1
fi

requests() {
  local n=0 failed=0
  while :; do
    for req in \
      "-F image=@$photo $url/api/classify" \
      "$url/api/state" "$url/metrics" "$url/api/frame.jpg" \
      "$url/api/recipes?q=pie&exclude=nuts"; do
      # shellcheck disable=SC2086 # the request words split on purpose
      curl -sf -o /dev/null --max-time 10 $req || failed=$((failed + 1))
      n=$((n + 1))
    done
    curl -s -o /dev/null --max-time 2 "$url/api/events" || true
    n=$((n + 1))
    echo "$n $failed" >"$tmp/requests"
    sleep 2
  done
}
requests &
pids+=("$!")

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
csv="$out/soak.csv"
echo "seconds,watch_rss_kib,watch_fds,serve_rss_kib,serve_fds" >"$csv.tmp"
start=$(date +%s)
while :; do
  now=$(($(date +%s) - start))
  for p in "$watch_pid" "$serve_pid"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "process $p exited during the soak:" >&2
      tail -5 "$tmp/watch.err" "$tmp/serve.err" >&2
      exit 1
    fi
  done
  echo "$now,$(rss "$watch_pid"),$(fds "$watch_pid"),$(rss "$serve_pid"),$(fds "$serve_pid")" >>"$csv.tmp"
  [ "$now" -ge "$duration" ] && break
  sleep "$every"
done
mv "$csv.tmp" "$csv"
read -r nreq nfail <"$tmp/requests" || { nreq=0; nfail=0; }
frames=$(grep -c '"type":"stats"' "$tmp/watch.jsonl" || true)
last_stats=$(grep '"type":"stats"' "$tmp/watch.jsonl" | tail -1 || true)
python3 scripts/soak_plot.py "$csv" "$out/soak.svg" --warmup "$warmup" \
  --note "watch synthetic 30 fps + serve synthetic 15 fps, $nreq requests ($nfail failed); $rev" \
  | tee "$out/soak.md" || status=$?
echo "watch stats lines: $frames; last: $last_stats" >>"$out/soak.md"
echo "wrote $csv, $out/soak.svg and $out/soak.md"
exit "${status:-0}"
