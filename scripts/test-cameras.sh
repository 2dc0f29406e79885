#!/usr/bin/env bash
# The camera sources' tests with both camera features on: the V4L2 and GStreamer unit tests and
# capture/tests/camera_gst.rs (real GStreamer pipelines: videotestsrc, an MJPEG AVI written and
# read back). Needs what scripts/setup.sh installs. Not in CI: the feature build rebuilds much of
# the dependency tree (~10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test -p dishcam-capture --features camera-v4l,camera-gst --lib --test camera_gst --test sources
