#!/usr/bin/env bash
# Set up .venv (tools/setup_env.sh) and run the whole test suite.
#   bash tools/run_tests.sh [pytest args...]
# Tests that need real images unpack small subsets of the bundled CIFAR-10
# copy ($CIFAR10_BUNDLE_DIR, default ../shared/data/cifar10); with
# SKD_BNN_REQUIRE_DATA=1 they fail instead of skipping when it is absent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest tests -q "$@"
