#!/usr/bin/env bash
# Submit a recipe to a running Ray cluster with `ray job submit` (working dir uploaded, env vars in the runtime env).
#   RAY_ADDRESS=http://<head>:8265 scripts/submit.sh <recipe> [hydra overrides...]
# The cluster's nodes need this project's environment (scripts/setup.sh) and `python` on their PATH.
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
# Forward the wandb settings of the submitting shell (no key: the tracker logs offline).
ENV_VARS='"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"'
for var in WANDB_API_KEY WANDB_MODE WANDB_ENTITY; do
  if [ -n "${!var:-}" ]; then ENV_VARS="$ENV_VARS, \"$var\": \"${!var}\""; fi
done
RUNTIME_ENV="{\"working_dir\": \".\", \"excludes\": [\".venv\", \".git\", \"models\", \"data\", \"outputs\", \"wandb\", \"**/__pycache__\"], \"env_vars\": {$ENV_VARS}}"
exec "$RAY" job submit --address "$ADDRESS" --runtime-env-json "$RUNTIME_ENV" -- \
  python -m rlhf.main --config-name "$RECIPE" "$@"
