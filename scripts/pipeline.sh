#!/usr/bin/env bash
# The main job: build a tiny model -> SFT it on 2-digit addition -> GRPO from the SFT checkpoint -> curves + summary.
#   bash scripts/pipeline.sh                              # about 7-10 minutes on 2 CPU cores
#   EXP=check SFT_STEPS=600 GRPO_STEPS=100 bash scripts/pipeline.sh   # a smaller setting (~4 minutes)
# It exits non-zero if held-out accuracy after GRPO does not beat the SFT model's.
#   EXP=my_run SFT_STEPS=300 GRPO_STEPS=200 bash scripts/pipeline.sh [extra GRPO overrides, e.g. actor.optim.lr=1e-4]
# Everything lands in $OUT/$EXP/: model/ (the initial tiny model), data/, sft/ and grpo/ run directories (each with
# metrics.jsonl, curves.png, final_model/), summary.txt. Re-running reuses what is built: the model and data if
# their parameters match, SFT if sft/final_model exists, GRPO if grpo/final_model exists; the plots are redrawn.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EXP=${EXP:-arith_pipeline}
OUT=${OUT:-outputs/pipeline}
# The task: a+b with DIGITS-digit operands (the numbers in docs/sft.md are for 2).
DIGITS=${DIGITS:-2}
NUM_TRAIN=${NUM_TRAIN:-4000}
NUM_VAL=${NUM_VAL:-200}
# SFT is stopped early on purpose, part-way through learning the task (greedy accuracy ~20%), so RL has room.
SFT_STEPS=${SFT_STEPS:-900}
SFT_LR=${SFT_LR:-1e-3}
GRPO_STEPS=${GRPO_STEPS:-300}
GRPO_LR=${GRPO_LR:-3e-4}
TEST_FREQ=${TEST_FREQ:-25}
# Model shape: the default tiny spec (0.5M parameters; head_dim 32, the smallest vLLM-CPU supports).
HIDDEN=${HIDDEN:-128}
LAYERS=${LAYERS:-2}

RUN=$OUT/$EXP
MODEL=$RUN/model
DATA=$RUN/data
mkdir -p "$RUN"
export WANDB_SILENT=true

echo "== 1. tiny model ($HIDDEN hidden x $LAYERS layers) at $MODEL"
"$PY" -c "
import logging, sys
from rlhf.models.tiny import TinyModelSpec, build_tiny_model
logging.basicConfig(level=logging.INFO)
h, n = int(sys.argv[2]), int(sys.argv[3])
build_tiny_model(sys.argv[1], TinyModelSpec(hidden_size=h, num_layers=n, num_heads=h // 32, num_kv_heads=max(1, h // 64),
                                            intermediate_size=4 * h))
" "$MODEL" "$HIDDEN" "$LAYERS"

DATA_ARGS=(data.builtin_dir="$DATA" data.builtin_min_digits="$DIGITS" data.builtin_max_digits="$DIGITS"
           data.builtin_num_train="$NUM_TRAIN" data.builtin_num_val="$NUM_VAL")
COMMON=(trainer.output_dir="$OUT" trainer.project_name="$EXP" trainer.logger=[console,jsonl])

if [[ -f $RUN/sft/final_model/config.json ]]; then
  echo "== 2. SFT: reusing $RUN/sft/final_model"
else
  echo "== 2. SFT for $SFT_STEPS steps -> $RUN/sft/final_model"
  "$PY" -m rlhf.sft_main --config-name sft_arith_tiny model.path="$MODEL" model.build_tiny=false "${DATA_ARGS[@]}" \
    "${COMMON[@]}" trainer.experiment_name=sft sft.total_steps="$SFT_STEPS" optim.lr="$SFT_LR" \
    trainer.test_freq="$TEST_FREQ"
fi

if [[ -f $RUN/grpo/final_model/config.json ]]; then
  echo "== 3. GRPO: reusing $RUN/grpo/final_model"
else
  echo "== 3. GRPO for $GRPO_STEPS steps from the SFT model -> $RUN/grpo"
  "$PY" -m rlhf.main --config-name grpo_arith_tiny model.path="$RUN/sft/final_model" model.build_tiny=false \
    "${DATA_ARGS[@]}" "${COMMON[@]}" trainer.experiment_name=grpo trainer.total_steps="$GRPO_STEPS" \
    trainer.test_freq="$TEST_FREQ" actor.optim.lr="$GRPO_LR" actor.optim.warmup_steps=10 rollout.n=8 \
    data.train_batch_size=32 actor.ppo_mini_batch_size=32 actor.micro_batch_size_per_device=16 data.val_batch_size=100 "$@"
fi

echo "== 4. curves and summary"
for stage in sft grpo; do
  "$PY" scripts/plot_run.py "$RUN/$stage"
done
"$PY" -c "
import sys
from rlhf.plotting import pipeline_summary
print(pipeline_summary(sys.argv[1] + '/sft', sys.argv[1] + '/grpo'))
" "$RUN" | tee "$RUN/summary.txt"
echo "curves: $RUN/sft/curves.png $RUN/grpo/curves.png"
# The pipeline's own check (the documented end-to-end test of issue 5): RL must beat SFT on the held-out split.
"$PY" -c "
import sys
from rlhf.plotting import last_value
before = last_value(sys.argv[1] + '/sft', 'val-core/*/acc/mean@1')
after = last_value(sys.argv[1] + '/grpo', 'val-core/*/acc/mean@1')
worse = [k for k in before if k in after and after[k] <= before[k]]
if not before or worse:
    sys.exit(f'check failed: held-out accuracy after GRPO does not beat SFT for {worse or \"(no validation data)\"}')
print('check passed: GRPO beats SFT on the held-out split')
" "$RUN"
