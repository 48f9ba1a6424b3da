#!/usr/bin/env bash
# One command from a fresh checkout to a training run of the default config:
#   bash tools/quickstart.sh [CONFIG] [train.py args...]
# Sets up .venv (tools/setup_env.sh), puts CIFAR-10 in place
# (tools/prepare_cifar10.sh; CIFAR10_ROOT points at an existing copy) and
# trains. The default config trains 700 epochs; stop it with Ctrl-C and
# continue later with `--resume`, or shorten it with
# `--cfg-options train_cfg.max_epochs=N`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEFAULT_CONFIG="configs/skd_bnn/skd-bnn_resnet20_1xb128_cifar10.py"
CONFIG=$DEFAULT_CONFIG
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then CONFIG=$1; shift; fi
bash "$ROOT/tools/setup_env.sh"
bash "$ROOT/tools/prepare_cifar10.sh"
export CIFAR10_ROOT=${CIFAR10_ROOT:-"$ROOT/data/cifar10"}
if [ -f "$CIFAR10_ROOT/NON_OFFICIAL_COPY" ]; then
  export CIFAR10_VERIFY_MD5=${CIFAR10_VERIFY_MD5:-False}
fi
cd "$ROOT"
exec "$ROOT/.venv/bin/python" tools/train.py "$CONFIG" "$@"
