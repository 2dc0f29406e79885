#!/usr/bin/env bash
# Fetches the real photos without a dish that the no-dish tests use: the sample photos inside the
# scikit-image wheel pinned in scripts/pins/scikit-image.txt (by version and sha256), extracted to
# ${DISHCAM_NONFOOD:-~/.cache/dishcam-test/skimage-data}. Idempotent; prints the folder.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${DISHCAM_NONFOOD:-$HOME/.cache/dishcam-test/skimage-data}
if [ -f "$out/.complete" ]; then
  echo "$out"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --require-hashes --only-binary=:all: \
  --python-version 3.11 --platform manylinux_2_17_x86_64 \
  -r scripts/pins/scikit-image.txt -d "$tmp" >&2
rm -rf "$out.partial"
mkdir -p "$out.partial"
python3 - "$tmp" "$out.partial" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("scikit_image-*.whl"))
out = pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        p = pathlib.PurePosixPath(name)
        # Photos only: skimage/data/<name>.png|jpg (not the test folder, arrays or cascades).
        if p.parent.as_posix() == "skimage/data" and p.suffix in (".png", ".jpg"):
            (out / p.name).write_bytes(z.read(name))
PY
touch "$out.partial/.complete"
rm -rf "$out"
mv "$out.partial" "$out"
echo "$out"
