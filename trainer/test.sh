#!/usr/bin/env bash
# The trainer's CI entry point: environment, lint, tests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/setup.sh"
env_dir="${DISHCAM_TRAIN_ENV:-$HOME/.cache/dishcam-train}"
cd "$here"
echo "== ruff check trainer"
"$env_dir/bin/python" -m ruff check "$here"
echo "== pytest trainer"
"$env_dir/bin/python" -m pytest -q "$here/tests" "$@"
