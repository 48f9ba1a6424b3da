#!/usr/bin/env bash
# Create (or update) an isolated environment in .venv with everything the
# plugin, its tools and its tests need.
#   bash tools/setup_env.sh
# Variables: VENV (default .venv), PYTHON (default python3),
#   TORCH_SPEC (default "torch==2.14.1 torchvision==0.29.1"),
#   MMCV_EXTRA (default "lite": installs mmcv-lite; set it empty on a machine
#   that already has a full mmcv, since both provide the `mmcv` module).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV=${VENV:-"$ROOT/.venv"}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
MMCV_EXTRA=${MMCV_EXTRA-lite}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
pip_quiet() { $PIP install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
echo "[setup] build tools (setuptools<81 keeps pkg_resources for mmengine)"
pip_quiet --upgrade pip "setuptools<81" wheel
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] $TORCH_SPEC"
  pip_quiet $TORCH_SPEC
fi
extras="tests"
[ -n "$MMCV_EXTRA" ] && extras="$MMCV_EXTRA,tests"
echo "[setup] skd_bnn_mm[$extras] (editable) and its OpenMMLab dependencies"
pip_quiet -e "$ROOT[$extras]"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
import mmcv, mmengine, mmpretrain, torch
have = {d.metadata['Name'].lower() for d in md.distributions()}
if {'mmcv', 'mmcv-lite'} <= have:
    raise SystemExit('Both mmcv and mmcv-lite are installed; they provide the '
                     'same module. Uninstall one (pip uninstall mmcv-lite).')
import skd_bnn_mm
print(f'[setup] ready: torch {torch.__version__}, mmengine {mmengine.__version__}, '
      f'mmcv {mmcv.__version__}, mmpretrain {mmpretrain.__version__}, '
      f'skd_bnn_mm {skd_bnn_mm.__version__}')
PY
