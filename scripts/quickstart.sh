#!/usr/bin/env bash
# Set everything up and run the main job: GRPO on the tiny default recipe, through a local Ray it starts itself.
#   bash scripts/quickstart.sh [hydra overrides...]     e.g. trainer.total_steps=5
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m rlhf.main --config-name grpo_arith_tiny "$@"
