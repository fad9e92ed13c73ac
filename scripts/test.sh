#!/usr/bin/env bash
# Set everything up and run the whole test suite (end-to-end tests included; GPU tests skip without CUDA).
#   bash scripts/test.sh [pytest args...]
# The suite runs on TEST_WORKERS pytest-xdist workers (default 2): a tiny end-to-end run leaves a core idle for much
# of its start-up (the driver's imports, Ray's start), which the other worker fills. Each test module stays on one
# worker (--dist loadscope), so a module's shared runs are built once. TEST_WORKERS=0 runs in this one process
# (for -s or a debugger).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=offline WANDB_SILENT=true
exec .venv/bin/python -m pytest -q -rs --durations=40 -n "${TEST_WORKERS:-2}" --dist loadscope "$@"
