#!/usr/bin/env bash
# The agent demo (issue 10): a tiny model learns to use a tool. 3-digit multiplication is beyond a 0.5M-parameter
# character-level model, but with the calculator it only has to write the call and copy the result:
#   1. build the tiny model  2. SFT warm-up on tool-use traces (observations masked)  3. GRPO with the agent loop
#   4. curves + summary; exits non-zero unless held-out accuracy rises by at least MIN_LIFT points from the SFT model
# Held-out accuracy is the policy's as it samples (temperature 1, VAL_SAMPLES answers per problem: mean@k, what RL
# optimizes); greedy accuracy (mean@1) is reported beside it. SFT makes the greedy answer right well before it makes
# sampling reliable: GRPO's work here is to sharpen the tool call and the copied result.
#   bash scripts/agent_demo.sh                      # 8-13 minutes on 2 CPU cores (docs/benchmarks.md)
#   EXP=my_run SFT_STEPS=40 GRPO_STEPS=30 bash scripts/agent_demo.sh [extra GRPO overrides, e.g. actor.optim.lr=2e-4]
# Everything lands in $OUT/$EXP/: model/, data/, sft/ and grpo/ run directories (metrics.jsonl, curves.png,
# final_model/), summary.txt. Re-running reuses the model and data if their parameters match, SFT if
# sft/final_model exists, GRPO if grpo/final_model exists.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EXP=${EXP:-calc_agent}
OUT=${OUT:-outputs/agent_demo}
DIGITS=${DIGITS:-3}
NUM_TRAIN=${NUM_TRAIN:-2000}
NUM_VAL=${NUM_VAL:-200}
# SFT is a warm-up: the model learns the call and to copy, but its sampled answers are often wrong, so RL has room.
SFT_STEPS=${SFT_STEPS:-250}
SFT_LR=${SFT_LR:-1e-3}
GRPO_STEPS=${GRPO_STEPS:-80}
GRPO_LR=${GRPO_LR:-2e-4}
# Four optimizer steps per pass over the batch (16 prompts x 8 samples in mini-batches of 4 prompts), two passes
# (PPO epochs) per RL step, the learning rate warmed up over the first 20 optimizer steps (without the warm-up Adam's
# first steps knock the sampled accuracy down), then decayed along a cosine to GRPO_MIN_LR_RATIO x GRPO_LR at the
# last step: at a constant lr, runs of 100 steps collapsed late (docs/benchmarks.md). The second pass nearly doubles
# the lift per RL step for ~0.5 s more per step.
GRPO_MINI_BATCH=${GRPO_MINI_BATCH:-4}
GRPO_EPOCHS=${GRPO_EPOCHS:-2}
GRPO_WARMUP=${GRPO_WARMUP:-20}
GRPO_LR_SCHEDULE=${GRPO_LR_SCHEDULE:-cosine}
GRPO_MIN_LR_RATIO=${GRPO_MIN_LR_RATIO:-0.1}
TEST_FREQ=${TEST_FREQ:-20}
VAL_SAMPLES=${VAL_SAMPLES:-4}
MIN_LIFT=${MIN_LIFT:-25}
HIDDEN=${HIDDEN:-128}
LAYERS=${LAYERS:-2}

RUN=$OUT/$EXP
MODEL=$RUN/model
mkdir -p "$RUN"
export WANDB_SILENT=true
START=$(date +%s)

echo "== 1. tiny model ($HIDDEN hidden x $LAYERS layers) at $MODEL"
"$PY" -c "
import logging, sys
from rlhf.models.tiny import TinyModelSpec, build_tiny_model
logging.basicConfig(level=logging.INFO)
h, n = int(sys.argv[2]), int(sys.argv[3])
build_tiny_model(sys.argv[1], TinyModelSpec(hidden_size=h, num_layers=n, num_heads=h // 32, num_kv_heads=max(1, h // 64),
                                            intermediate_size=4 * h))
" "$MODEL" "$HIDDEN" "$LAYERS"

DATA_ARGS=(data.builtin_dir="$RUN/data" data.builtin_min_digits="$DIGITS" data.builtin_max_digits="$DIGITS"
           data.builtin_num_train="$NUM_TRAIN" data.builtin_num_val="$NUM_VAL")
COMMON=(trainer.output_dir="$OUT" trainer.project_name="$EXP" trainer.logger=[console,jsonl])

if [[ -f $RUN/sft/final_model/config.json ]]; then
  echo "== 2. SFT: reusing $RUN/sft/final_model"
else
  echo "== 2. SFT on tool-use traces for $SFT_STEPS steps -> $RUN/sft/final_model"
  "$PY" -m rlhf.sft_main --config-name sft_calc_tiny model.path="$MODEL" model.build_tiny=false "${DATA_ARGS[@]}" \
    "${COMMON[@]}" trainer.experiment_name=sft sft.total_steps="$SFT_STEPS" optim.lr="$SFT_LR"
fi

if [[ -f $RUN/grpo/final_model/config.json ]]; then
  echo "== 3. GRPO: reusing $RUN/grpo/final_model"
else
  echo "== 3. GRPO with the calculator for $GRPO_STEPS steps from the SFT model -> $RUN/grpo"
  "$PY" -m rlhf.main --config-name agent_calc_tiny model.path="$RUN/sft/final_model" model.build_tiny=false \
    "${DATA_ARGS[@]}" "${COMMON[@]}" trainer.experiment_name=grpo trainer.total_steps="$GRPO_STEPS" \
    trainer.test_freq="$TEST_FREQ" trainer.val_num_samples="$VAL_SAMPLES" actor.optim.lr="$GRPO_LR" \
    actor.ppo_mini_batch_size="$GRPO_MINI_BATCH" actor.ppo_epochs="$GRPO_EPOCHS" actor.optim.warmup_steps="$GRPO_WARMUP" \
    actor.optim.lr_schedule="$GRPO_LR_SCHEDULE" actor.optim.min_lr_ratio="$GRPO_MIN_LR_RATIO" "$@"
fi

echo "== 4. curves and summary"
"$PY" scripts/plot_run.py "$RUN/grpo" | tee "$RUN/summary.txt"
echo "total wall time: $(( $(date +%s) - START )) s (load average now: $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$RUN/summary.txt"
echo "curves: $RUN/grpo/curves.png"
# The demo's check: GRPO's step-0 validation is the SFT model playing the same episodes (with the tool).
"$PY" -c "
import sys
from rlhf.plotting import read_metrics, series
run, k, min_lift = sys.argv[1] + '/grpo', sys.argv[2], float(sys.argv[3])
rows = read_metrics(run)
curves = {}
for name, key in (('sampled, mean@' + k, 'val-core/calc/acc/mean@' + k), ('greedy, mean@1', 'val-core/calc/acc/mean@1')):
    curve = series(rows, key).get(key)
    if curve is None or curve.steps[0] != 0:
        sys.exit(f'check failed: no {key} of the SFT model at step 0 in {run}')
    curves[name] = curve
    print(f'held-out accuracy ({name}, with the calculator): SFT model {curve.values[0]:.3f} -> GRPO '
          f'{curve.values[-1]:.3f} ({100 * (curve.values[-1] - curve.values[0]):+.1f} points)')
sampled = curves['sampled, mean@' + k]
if 100 * (sampled.values[-1] - sampled.values[0]) < min_lift:
    sys.exit(f'check failed: the sampled accuracy rose by less than {min_lift:g} points')
print('check passed')
" "$RUN" "$VAL_SAMPLES" "$MIN_LIFT" | tee -a "$RUN/summary.txt"
