#!/usr/bin/env bash
# Set everything up and run the whole test suite (end-to-end tests included; GPU tests skip without CUDA).
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_MODE=offline WANDB_SILENT=true
exec .venv/bin/python -m pytest -q -rs --durations=15 "$@"
