#!/usr/bin/env bash
# Set everything up and run the main job: the pipeline that shows RL working on a 2-core CPU in ~10 minutes
# (build the tiny model -> SFT on 2-digit addition -> GRPO from the SFT model, local Ray started by the driver
# -> curves and a summary). Re-running reuses what is already built.
#   bash scripts/quickstart.sh [GRPO overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash scripts/pipeline.sh "$@"
