"""The benchmark's workloads: one table both frameworks read, so they run the same model, data and work per step.

Pure Python (no torch, no project imports): `trl_grpo.py` imports it from TRL's virtualenv, `ours.py` and
`workload.py` from ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / ".bench"  # gitignored: models, data, TRL's virtualenv, run outputs
DATA_DIR = BENCH_DIR / "data"
MODELS_DIR = BENCH_DIR / "models"
RESULTS_DIR = BENCH_DIR / "results"
DATA_SOURCE = "bench_arith"  # ours routes it to benchmarks/reward.py through reward.function
DATA_SEED = 0
NUM_ROWS = 4096  # prompts in the training file: more than K rounds x S steps x 16 prompts ever draw
MAX_OPERAND = 999  # prompts "A+B=" with A, B uniform in [0, MAX_OPERAND]
MAX_PROMPT_LENGTH = 16  # "999+999=" is 8 characters = 8 tokens

# The 25.25M-parameter Qwen2 of issue 13: hidden 512, 8 layers, 8 heads / 4 KV heads, vocab padded to 128, tied.
QWEN2_25M = {
    "hidden_size": 512,
    "num_layers": 8,
    "num_heads": 8,
    "num_kv_heads": 4,
    "intermediate_size": 1536,
    "max_position_embeddings": 1024,  # room for the 512-token variant
    "vocab_size": 128,
}


@dataclass(frozen=True)
class Workload:
    """What one RL step does, identically in both frameworks.

    Every step: `num_prompts` prompts x `n` samples at temperature 1 (no top-p/top-k), up to `max_response_length`
    tokens, rule reward, GRPO advantages (group mean and std), PPO-clip loss (0.2) aggregated over tokens, no KL
    and no reference model, and one AdamW optimizer step (lr, betas 0.9/0.999, no weight decay, grad clip 1.0).
    """

    name: str
    model_name: str  # folder under .bench/models
    model_spec: dict = field(default_factory=dict)  # rlhf.models.tiny.TinyModelSpec fields ({} = its defaults)
    num_prompts: int = 16
    n: int = 8
    max_response_length: int = 128
    micro_batch: int = 16  # sequences per forward/backward (ours: per rank; TRL: per process)
    lr: float = 1e-5

    @property
    def model_dir(self) -> Path:
        return MODELS_DIR / self.model_name

    @property
    def num_samples(self) -> int:
        return self.num_prompts * self.n


WORKLOADS = {
    "25m": Workload(name="25m", model_name="qwen2-25m", model_spec=QWEN2_25M),
    # Micro-batch 8: at 16 x 528 tokens each of our two ranks held ~4.9 GB in the update (a 24 GiB machine OOMed).
    "long512": Workload(
        name="long512", model_name="qwen2-25m", model_spec=QWEN2_25M, max_response_length=512, micro_batch=8
    ),
    # The shipped tiny recipe's model and shape (grpo_arith_tiny: 8 prompts x 4, 8 tokens, micro-batch 4, lr 1e-4),
    # with the benchmark's one optimizer step per RL step (the recipe takes two mini-batches).
    "tiny": Workload(
        name="tiny", model_name="tiny-qwen2", num_prompts=8, n=4, max_response_length=8, micro_batch=4, lr=1e-4
    ),
}


def get_workload(name: str) -> Workload:
    """The workload called `name`.

    Raises:
        ValueError: unknown name (lists the known ones).
    """
    if name not in WORKLOADS:
        raise ValueError(f"--workload {name!r} is unknown; choose from {sorted(WORKLOADS)}")
    return WORKLOADS[name]
