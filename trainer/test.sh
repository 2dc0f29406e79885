#!/usr/bin/env bash
# The trainer's CI entry point: environment, lint, tests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/setup.sh"
env_dir="${DISHCAM_TRAIN_ENV:-$HOME/.cache/dishcam-train}"
cd "$here"
# One ruff configuration (pyproject.toml here) for every Python file in the repository: the
# trainer, the scripts (corpus, soak, INT8 rounding), the experiments, and the PyTorch reference
# script of the fixtures.
py_dirs=("$here" "$here/../scripts" "$here/../experiments" "$here/../tests/reference")
echo "== ruff check and format --check (trainer, scripts, experiments, tests/reference)"
"$env_dir/bin/python" -m ruff check --config "$here/pyproject.toml" "${py_dirs[@]}"
"$env_dir/bin/python" -m ruff format --check --config "$here/pyproject.toml" "${py_dirs[@]}"
echo "== pytest trainer"
"$env_dir/bin/python" -m pytest -q "$here/tests" "$@"
