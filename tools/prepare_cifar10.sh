#!/usr/bin/env bash
# Put CIFAR-10 where the configs look for it (data/cifar10, or $CIFAR10_ROOT).
#   bash tools/prepare_cifar10.sh
# - If the official pickles are already there, nothing is done.
# - Else, if the bundled JPEG copy is available ($CIFAR10_BUNDLE_DIR, default
#   ../shared/data/cifar10 next to the checkout or next to the local
#   repository it was cloned from), it is unpacked there with
#   its make_cifar10.py, and a NON_OFFICIAL_COPY marker is written: its files
#   cannot match the official MD5 sums, so it must be read with
#   verify_md5=False (tools/quickstart.sh sets CIFAR10_VERIFY_MD5=False).
# - Else nothing is done here and the dataset downloads the official archive
#   on first use, as mmpretrain does.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST=${CIFAR10_ROOT:-"$ROOT/data/cifar10"}
BUNDLE=${CIFAR10_BUNDLE_DIR:-"$ROOT/../shared/data/cifar10"}
if [ -z "${CIFAR10_BUNDLE_DIR:-}" ] && [ ! -f "$BUNDLE/make_cifar10.py" ]; then
  # a clone of a local repository: look next to that repository too
  ORIGIN=$(git -C "$ROOT" remote get-url origin 2>/dev/null || true)
  ORIGIN=${ORIGIN#file://}
  if [ -n "$ORIGIN" ] && [ -f "$ORIGIN/../shared/data/cifar10/make_cifar10.py" ]; then
    BUNDLE="$ORIGIN/../shared/data/cifar10"
  fi
fi
PY=${PYTHON:-"$ROOT/.venv/bin/python"}
[ -x "$PY" ] || PY=python3
if [ -f "$DEST/cifar-10-batches-py/test_batch" ]; then
  echo "[data] CIFAR-10 found in $DEST"
elif [ -f "$BUNDLE/make_cifar10.py" ]; then
  echo "[data] unpacking the bundled CIFAR-10 copy into $DEST"
  "$PY" "$BUNDLE/make_cifar10.py" "$DEST"
  echo "decoded from JPEG quality 75; use verify_md5=False" > "$DEST/NON_OFFICIAL_COPY"
else
  echo "[data] no CIFAR-10 in $DEST and no bundle in $BUNDLE: the official" \
       "archive will be downloaded into $DEST on first use"
fi
