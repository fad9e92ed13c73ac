#!/usr/bin/env bash
# Submit a recipe to a running Ray cluster with `ray job submit`, exactly as python -m rlhf.main would run it here.
#   RAY_ADDRESS=http://<head>:8265 scripts/submit.sh <recipe> [hydra overrides...]
# The code is uploaded as the job's working directory (without .venv, .git, models, data, outputs). The job then
# runs from this directory when the head node can see it (the same machine, or shared storage), so relative paths
# such as model.path=models/... and data files work as here; otherwise it runs in the uploaded copy, and models,
# data and trainer.output_dir must be absolute paths on storage every node sees (validation says so, naming the key).
# The cluster's nodes need this project's environment (scripts/setup.sh) and `python` on their PATH.
# wandb: WANDB_API_KEY is never forwarded (it would be stored in the job's metadata); run `wandb login` on the head
# node, whose credentials the run uses. WANDB_MODE, WANDB_ENTITY, WANDB_PROJECT and WANDB_BASE_URL are forwarded.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: scripts/submit.sh <recipe> [overrides...]   (recipes: $(ls recipes/*.yaml | xargs -n1 basename | sed 's/.yaml//' | tr '\n' ' '))" >&2
  exit 2
fi
RECIPE=$1; shift
[ -f "recipes/$RECIPE.yaml" ] || { echo "submit.sh: no recipe recipes/$RECIPE.yaml" >&2; exit 2; }
RAY=${RAY:-$(command -v ray || echo .venv/bin/ray)}
ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
# Ray >= 2.5x clusters use token auth when a token exists; the job client only sends it in token mode.
if [ -z "${RAY_AUTH_MODE:-}" ] && { [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -f "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; }; then
  export RAY_AUTH_MODE=token
fi
if [ -n "${WANDB_API_KEY:-}" ]; then
  echo "submit.sh: WANDB_API_KEY is not forwarded to the cluster (it would be stored in the job's metadata); run 'wandb login' on the head node" >&2
fi
SUBMIT_DIR=$(pwd -P)
ENV_JSON=$(SUBMIT_DIR="$SUBMIT_DIR" python3 - <<'PY'
import json, os
env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "RLHF_SUBMIT_DIR": os.environ["SUBMIT_DIR"]}
env.update({k: os.environ[k] for k in ("WANDB_MODE", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_BASE_URL") if os.environ.get(k)})
print(json.dumps({"working_dir": ".", "excludes": [".venv", ".git", "models", "data", "outputs", "wandb", "**/__pycache__"], "env_vars": env}))
PY
)
# Run from the submitting directory where the head node sees it; else from the uploaded copy.
ENTRY='if [ -d "$RLHF_SUBMIT_DIR/recipes" ]; then cd "$RLHF_SUBMIT_DIR"; fi; exec python -m rlhf.main "$@"'
# A head node that has just started answers the job API before its job agent is up ("No available agent to submit
# job"); nothing was submitted then, so wait RLHF_SUBMIT_RETRY_S (10) seconds and submit again, 6 times at most.
# Any other failure is final.
ERR=$(mktemp)
trap 'rm -f "$ERR"' EXIT
for attempt in 1 2 3 4 5 6 7; do
  set +e  # stdout as is, stderr shown and kept in $ERR
  { "$RAY" job submit --address "$ADDRESS" --runtime-env-json "$ENV_JSON" -- \
      bash -c "$ENTRY" rlhf-job --config-name "$RECIPE" "$@" 2>&1 1>&3 3>&- | tee "$ERR" >&2 3>&-; } 3>&1
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -eq 0 ] || ! grep -q "No available agent to submit job" "$ERR" || [ "$attempt" -eq 7 ]; then
    exit "$status"
  fi
  echo "submit.sh: the cluster's job agent is not up yet; submitting again in ${RLHF_SUBMIT_RETRY_S:-10} s (attempt $attempt of 7)" >&2
  sleep "${RLHF_SUBMIT_RETRY_S:-10}"
done
